//! The exit codes every LogStream binary uses (`logstream`, `logstream-worker`,
//! `logstream-operator` and the developer tools), and the line their `--help` ends with.
//!
//! - 0: done (or stopped when asked: SIGTERM, Ctrl-C);
//! - 1: a usage or configuration mistake: a flag, a configuration file, an environment
//!   variable or a URI that cannot work as given. Running again unchanged fails again;
//! - 2: a runtime failure: the broker, the Kubernetes API or a sink refused, could not be
//!   reached, or failed while working; running again later may succeed.
//!
//! Every failure is also one line on stderr (`error: ...`) that never contains a password.

/// Done, or stopped when asked.
pub const SUCCESS: u8 = 0;
/// A usage or configuration mistake.
pub const USAGE: u8 = 1;
/// A runtime failure.
pub const FAILURE: u8 = 2;

/// The end of every binary's `--help`.
pub const HELP: &str = "Exit codes: 0 done, 1 usage or configuration mistake, 2 runtime failure (one line on stderr, never a password).";
