//! The LogStream operator: reconciles `LogPipeline` resources into RabbitMQ topology, worker
//! Deployments and status.

pub mod broker;
pub mod scaling;
