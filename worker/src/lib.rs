//! The LogStream worker: consumes one output's main queue, writes each log to the output's
//! sink, and settles every delivery exactly once (ACK after the write; a confirmed copy to the
//! retry ladder or the dead-letter queue, then ACK, when it failed).
//!
//! The binary (`logstream-worker --config <file>`) wires these modules together; the pure
//! decisions (envelope decoding, failure classification, attempt arithmetic, dedup, ACK
//! bookkeeping, copy headers) are plain functions on plain data, tested without a broker.

pub mod delivery;
pub mod metrics;
pub mod runtime;
pub mod server;
pub mod session;
pub mod settings;
pub mod sink;
