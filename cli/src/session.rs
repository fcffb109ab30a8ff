//! One AMQP connection of a CLI command: opened with errors that tell a wrong password from an
//! unreachable broker, channels on demand, and existence checks that name the missing object.

use lapin::{
    Channel, Connection, ErrorKind, ExchangeKind,
    options::{ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions},
    protocol::{AMQPErrorKind, AMQPSoftError},
    types::{FieldTable, ShortString},
};
use logstream_operator::broker::{BrokerEndpoint, admin};

use crate::error::CliError;

/// Connection name shown in the management UI.
pub const CONNECTION_NAME: &str = "logstream-cli";

/// An open connection to one vhost.
pub struct Session {
    endpoint: BrokerEndpoint,
    connection: Connection,
}

impl Session {
    /// Connects to the vhost of `endpoint`.
    pub async fn open(endpoint: &BrokerEndpoint) -> Result<Self, CliError> {
        let connection = admin::connect(endpoint, CONNECTION_NAME).await?;
        Ok(Self {
            endpoint: endpoint.clone(),
            connection,
        })
    }

    /// The vhost.
    pub fn vhost(&self) -> &str {
        self.endpoint.vhost()
    }

    /// A new channel.
    pub async fn channel(&self) -> Result<Channel, CliError> {
        self.connection
            .create_channel()
            .await
            .map_err(|e| CliError::amqp("open a channel on", &self.endpoint.to_string(), &e))
    }

    /// A new channel in publisher-confirm mode.
    pub async fn confirm_channel(&self) -> Result<Channel, CliError> {
        let channel = self.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| CliError::amqp("enable publisher confirms on", self.vhost(), &e))?;
        Ok(channel)
    }

    /// Messages ready in `queue` (by passive declare); a missing queue fails with `hint`.
    pub async fn queue_messages(&self, queue: &str, hint: &str) -> Result<u32, CliError> {
        // A failed passive declare closes its channel, so it gets one of its own.
        let channel = self.channel().await?;
        let name = short(queue, "queue")?;
        let result = channel
            .queue_declare(
                name,
                QueueDeclareOptions::default().passive(),
                FieldTable::default(),
            )
            .await;
        let _ = channel.close(200, "done".into()).await;
        match result {
            Ok(q) => Ok(q.message_count()),
            Err(e) if is_not_found(&e) => Err(CliError::NotFound {
                kind: "queue",
                name: queue.to_owned(),
                vhost: self.vhost().to_owned(),
                hint: hint.to_owned(),
            }),
            Err(e) => Err(CliError::amqp("inspect queue", queue, &e)),
        }
    }

    /// Fails with `hint` when `exchange` does not exist (the default exchange always does).
    pub async fn require_exchange(&self, exchange: &str, hint: &str) -> Result<(), CliError> {
        if exchange.is_empty() {
            return Ok(());
        }
        let channel = self.channel().await?;
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        let result = channel
            .exchange_declare(
                short(exchange, "exchange")?,
                ExchangeKind::Direct,
                passive,
                FieldTable::default(),
            )
            .await;
        let _ = channel.close(200, "done".into()).await;
        match result {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Err(CliError::NotFound {
                kind: "exchange",
                name: exchange.to_owned(),
                vhost: self.vhost().to_owned(),
                hint: hint.to_owned(),
            }),
            Err(e) => Err(CliError::amqp("inspect exchange", exchange, &e)),
        }
    }

    /// Closes the connection; the broker requeues whatever is still unacknowledged.
    pub async fn close(self) {
        let _ = self.connection.close(200, "bye".into()).await;
    }
}

/// `s` as an AMQP short string (exchange names, queue names and routing keys are at most
/// 255 bytes); `what` names it in the error.
pub fn short(s: &str, what: &str) -> Result<ShortString, CliError> {
    ShortString::try_new(s).map_err(|_| {
        CliError::Usage(format!(
            "{what} {:?}... is longer than 255 bytes",
            s.chars().take(40).collect::<String>()
        ))
    })
}

/// True when the broker answered NOT_FOUND.
pub fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), ErrorKind::ProtocolError(a)
        if matches!(a.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)))
}
