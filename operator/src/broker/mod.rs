//! Everything LogStream does to a RabbitMQ broker as its administrator: connect with the
//! Secret's credentials, apply and delete a pipeline's topology, read queue statistics.

pub mod admin;
pub mod endpoint;
pub mod error;
pub mod management;

pub use admin::{BrokerAdmin, Change, Report, RetainedQueue};
pub use endpoint::BrokerEndpoint;
pub use error::{BrokerError, TopologyConflict};
pub use management::{ManagementClient, ManagementError, QueueInfo};
