//! Autoscaling of worker Deployments from queue depth and the age of the oldest message.
//!
//! - [`policy`]: the pure decision (formula, one-step scale-up, delayed scale-down, reasons);
//! - [`rate`]: smoothing of broker rates;
//! - [`simulate`]: a deterministic queue simulator that replays traces through LogStream's
//!   policy, a model of KEDA + HPA, and an oracle.

pub mod policy;
pub mod rate;
pub mod simulate;

pub use policy::{Decision, Observation, Rates, ScalingPolicy, Signals};
