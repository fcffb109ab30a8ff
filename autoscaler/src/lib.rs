//! LogStream's autoscaler, shared by the operator (which scales worker Deployments) and
//! `logstream dev` (which starts and stops local worker processes):
//!
//! - [`policy`]: the pure decision (formula, one-step scale-up, delayed scale-down, reasons),
//!   with [`rate`] smoothing the broker's rates and [`age`] tracking the age of the oldest
//!   waiting message across polls;
//! - [`target`]: what is scaled ([`ScaleTarget`]);
//! - [`pipeline`]: one pipeline's poll over its outputs, and [`supervise`] running it with
//!   reconnects; [`shared`]: the queue statistics and connections the autoscalers of a vhost
//!   share;
//! - [`metrics`], [`dashboard`] and [`serve`]: what shows the decisions (Prometheus, a web
//!   page with live updates, one HTTP port); [`shutdown`]: the stop signal.
//!
//! The queue simulator that compares the policy with KEDA + HPA is the binary
//! `logstream-scaling-sim` (`make bench-scaling`), not part of this library.

pub mod age;
pub mod dashboard;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod rate;
pub mod serve;
pub mod shared;
pub mod shutdown;
pub mod supervise;
pub mod target;

pub use age::AgeTracker;
pub use pipeline::{OutputScaling, PipelineAutoscaler, ScaleRecord};
pub use policy::{Decision, ScalingPolicy, Signals};
pub use supervise::supervise;
pub use target::{ScaleError, ScaleTarget};
