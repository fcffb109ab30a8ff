//! Autoscaling of worker Deployments from queue depth and the age of the oldest message.
//!
//! - [`policy`]: the pure decision (formula, one-step scale-up, delayed scale-down, reasons);
//! - [`rate`]: smoothing of broker rates;
//! - [`simulate`]: a deterministic queue simulator that replays traces through LogStream's
//!   policy, a model of KEDA + HPA, and an oracle;
//! - [`target`]: what is scaled (a Deployment, or local worker processes);
//! - [`autoscaler`]: the polling loop of one pipeline that ties them together;
//! - [`deployment`]: the Deployment scale subresource as a target;
//! - [`stats`]: queue statistics shared by the autoscalers of a vhost;
//! - [`supervisor`]: the operator's autoscaler per pipeline, and the reporter of their
//!   decisions (status, Events, metrics).

pub mod autoscaler;
pub mod deployment;
pub mod policy;
pub mod rate;
pub mod simulate;
pub mod stats;
pub mod supervisor;
pub mod target;

pub use autoscaler::{OutputScaling, PipelineAutoscaler, ScaleRecord, SideFlow};
pub use deployment::{AUTOSCALER_FIELD_MANAGER, DeploymentScale};
pub use policy::{Decision, Observation, Rates, ScalingPolicy, Signals};
pub use supervisor::{Autoscalers, supervise};
pub use target::{ScaleError, ScaleTarget};
