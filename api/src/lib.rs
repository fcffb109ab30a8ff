//! LogStream's shared vocabulary: the `LogPipeline` resource, the broker topology plan, the
//! message contract and the names of every broker object.
//!
//! This crate is pure: no I/O, no async runtime. The operator, the worker and the CLI depend
//! on it; it depends on none of them.

pub mod contract;
pub mod crd;
pub mod defaults;
pub mod digest;
pub mod duration;
pub mod exit;
pub mod manifest;
pub mod naming;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod pipeline;
pub mod resolved;
pub mod topology;
pub mod validate;
pub mod worker_config;

pub use duration::Duration;
pub use pipeline::{LogPipeline, LogPipelineSpec, LogPipelineStatus};
pub use topology::{TopologyPlan, plan};
pub use validate::{FieldError, ValidationErrors, validate};
