//! The LogStream worker: consumes one output's main queue, writes each log to the output's
//! sink, and settles every delivery exactly once (ACK after the write; a confirmed copy to the
//! retry ladder or the dead-letter queue, then ACK, when it failed).
//!
//! The binary (`logstream-worker --config <file>`) wires these modules together:
//!
//! - [`delivery`]: one delivery's life as plain rules (decoding, dedup, batching, attempt
//!   arithmetic, copies, ACK bookkeeping), tested without a broker;
//! - [`session`]: one broker connection that runs those rules: connect, receive, process,
//!   and the settle loop that sends every ACK and NACK;
//! - [`sink`]: where logs are written (stdout, file, HTTP) and how a failed write is classified;
//! - [`runtime`] (the reconnect loop and signals), [`server`] (`/metrics`, `/healthz`,
//!   `/readyz`), [`metrics`], [`settings`].

pub mod delivery;
pub mod metrics;
pub mod runtime;
pub mod secrets;
pub mod server;
pub mod session;
pub mod settings;
pub mod sink;
