//! LogStream's end-to-end suite on kind, as a library the `logstream-e2e` binary drives.
//!
//! Everything talks to the cluster through the same command-line tools a person would use
//! (docker, kind, kubectl, helm), so a failure can be replayed by hand from the printed
//! command. Waits are polls of a condition with a deadline, never fixed sleeps.

pub mod cmd;
pub mod config;
pub mod manifests;
pub mod preflight;
pub mod scenario;
pub mod wait;
