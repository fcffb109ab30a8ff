//! The operator's side of autoscaling (the policy and the polling loop are
//! `logstream-autoscaler`'s):
//!
//! - [`deployment`]: a worker Deployment's scale subresource as the [`ScaleTarget`] the
//!   autoscaler drives;
//! - [`supervisor`]: one autoscaler per applied LogPipeline, and the reporter that turns their
//!   records into status fields, Events and metrics.
//!
//! [`ScaleTarget`]: logstream_autoscaler::ScaleTarget

pub mod deployment;
pub mod supervisor;

pub use deployment::{AUTOSCALER_FIELD_MANAGER, DeploymentScale};
pub use supervisor::Autoscalers;
