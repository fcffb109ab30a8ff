//! Everything LogStream says to RabbitMQ, in one place for the operator, the autoscaler, the
//! worker, the CLI and the tests:
//!
//! - [`endpoint`]: where a broker is and how to log in (AMQP and management API), redacted
//!   when shown; [`secret`] reads it from a broker Secret's data;
//! - [`tls`]: the CA and client certificate of TLS connections (AMQP and management API);
//! - [`connection`]: connect (host by host, with a timeout each), channels, passive checks;
//! - [`error`]: one error type that tells an unreachable broker, refused credentials, a missing
//!   vhost, `NOT_FOUND` and `PRECONDITION_FAILED` (naming the argument) apart;
//! - [`publish`]: publishing with confirms and the one outcome type;
//! - [`headers`]: the `x-logstream-*` and `x-death` header codec;
//! - [`management`]: the management HTTP API;
//! - [`stats`]: an output's figures, the age of its oldest message and how ages are shown;
//! - [`topology`]: applying and deleting a pipeline's topology.

mod address;
pub mod connection;
pub mod endpoint;
pub mod error;
pub mod headers;
pub mod management;
pub mod publish;
pub mod secret;
pub mod stats;
pub mod tls;
pub mod topology;

pub use address::{AMQP_PORT, AMQPS_PORT, AmqpUriError, HostPort};
pub use connection::{BrokerConnection, Purpose, QueueDepth};
pub use endpoint::{BrokerEndpoint, EndpointError, ManagementEndpoint};
pub use error::{BrokerError, TopologyConflict};
pub use management::{ManagementClient, ManagementError, QueueStats};
pub use publish::{ConfirmWindow, PublishOutcome, publish_confirmed};
pub use secret::{BrokerSecret, CredentialsError};
pub use stats::{Age, OutputQueues, OutputReading, SinkState, format_age};
pub use tls::{TlsError, TlsMaterial};
pub use topology::{BrokerAdmin, Change, Report, RetainedQueue, VhostListing};
