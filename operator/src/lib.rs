//! The LogStream operator: reconciles `LogPipeline` resources into RabbitMQ topology, worker
//! Deployments and status.
//!
//! The binary (`src/bin/logstream-operator.rs`) only wires these modules together.

pub mod children;
pub mod controller;
pub mod leader;
pub mod metrics;
pub mod rbac;
pub mod scaling;
pub mod settings;
pub mod startup;
pub mod status;
