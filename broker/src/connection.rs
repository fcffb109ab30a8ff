//! One AMQP connection to one vhost: opened with a timeout and errors that tell a wrong
//! password from a missing vhost from an unreachable broker, channels on demand, and passive
//! checks that name what is missing. The operator's administration, the autoscalers, the
//! worker and the CLI all connect through here.
//!
//! A broker of several hosts (a cluster's nodes) is tried host by host, in the order given,
//! each with its own timeout; the first that opens wins, and an error names every host tried.
//! In order rather than shuffled: which node a client lands on is then predictable and
//! testable, and spreading clients over nodes is a Service's job (the documented default on
//! Kubernetes) — RabbitMQ serves every queue from every node.

use std::{fmt, time::Duration};

use lapin::{
    AsyncTcpStream, Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions},
    tcp::RustlsConnector,
    types::FieldTable,
    uri::AMQPUri,
};
use tokio::sync::Mutex;

use crate::{
    address::HostPort,
    endpoint::BrokerEndpoint,
    error::{self, BrokerError},
};

/// Longest wait for one host to open the AMQP connection (TCP, TLS and the AMQP handshake),
/// unless the URI's `connection_timeout` says otherwise; a broker of several hosts gives each
/// this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest AMQP frame of an administrative connection: the protocol's minimum. Declarations
/// are small, and lapin keeps 32 frames of buffer per direction: with the broker's default
/// of 128 KiB that is 8 MiB per connection, with 4 KiB it is 256 KiB. A URI's own
/// `frame_max` wins.
pub const ADMIN_FRAME_MAX: u32 = 4096;

/// What a connection is for, which sets its frame size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Declarations and passive checks: small frames, small buffers.
    Admin,
    /// Publishing and consuming logs: the broker's frame size.
    Messages,
}

/// Messages and consumers of a queue, read by a passive declare (in real time, unlike the
/// management API's sampled statistics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Messages ready for delivery.
    pub ready: u64,
    /// Consumers.
    pub consumers: u64,
}

/// An open connection to the vhost of its endpoint.
pub struct BrokerConnection {
    endpoint: BrokerEndpoint,
    /// The host that answered.
    host: HostPort,
    connection: Connection,
    /// The channel passive checks use; a failed check closes it, and the next one opens
    /// another.
    inspect: Mutex<Option<Channel>>,
    /// The channel of declarations, until [`renew_declaration_channel`].
    ///
    /// [`renew_declaration_channel`]: Self::renew_declaration_channel
    declare: Mutex<Option<Channel>>,
}

impl fmt::Debug for BrokerConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerConnection({})", self.endpoint)
    }
}

impl BrokerConnection {
    /// Connects to the vhost of `endpoint`, named `name` in the management UI: each host in
    /// turn until one opens. A refused login or vhost ends the attempt at once (every node of
    /// a cluster would say the same).
    pub async fn open(
        endpoint: &BrokerEndpoint,
        name: &str,
        purpose: Purpose,
    ) -> Result<Self, BrokerError> {
        let timeout = endpoint.connect_timeout(CONNECT_TIMEOUT);
        let tls = if endpoint.is_tls() && !endpoint.tls().is_empty() {
            let connector = endpoint
                .tls()
                .amqp_connector()
                .map_err(|e| error::tls_setup_error(endpoint, &e))?;
            Some(connector)
        } else {
            None
        };
        let mut failures = Vec::new();
        for (host, mut uri) in endpoint.hosts().iter().zip(endpoint.amqp_uris()) {
            if purpose == Purpose::Admin {
                uri.query.frame_max.get_or_insert(ADMIN_FRAME_MAX);
            }
            let properties = ConnectionProperties::default().with_connection_name(name.into());
            let failure = match tokio::time::timeout(timeout, connect(uri, properties, &tls)).await
            {
                Ok(Ok(connection)) => {
                    return Ok(Self {
                        endpoint: endpoint.clone(),
                        host: host.clone(),
                        connection,
                        inspect: Mutex::new(None),
                        declare: Mutex::new(None),
                    });
                }
                Ok(Err(e)) => error::connect_error(endpoint, &e),
                Err(_) => BrokerError::Unreachable {
                    endpoint: endpoint.to_string(),
                    reason: format!("no answer within {timeout:?}"),
                },
            };
            if matches!(
                failure,
                BrokerError::AccessRefused { .. } | BrokerError::VhostNotAllowed { .. }
            ) {
                return Err(failure);
            }
            if endpoint.hosts().len() > 1 {
                tracing::debug!(%host, "{failure}; trying the next host");
            }
            failures.push((host.clone(), failure));
        }
        Err(error::hosts_failed(endpoint, failures))
    }

    /// The endpoint (redacted when displayed).
    pub fn endpoint(&self) -> &BrokerEndpoint {
        &self.endpoint
    }

    /// The vhost.
    pub fn vhost(&self) -> &str {
        self.endpoint.vhost()
    }

    /// The host this connection is open to (one of the endpoint's).
    pub fn host(&self) -> &HostPort {
        &self.host
    }

    /// True while the connection is open.
    pub fn is_connected(&self) -> bool {
        self.connection.status().connected()
    }

    /// The lapin connection, for consumers.
    pub fn lapin(&self) -> &Connection {
        &self.connection
    }

    /// Reads a failed `action` on `object` over this connection.
    pub fn error(&self, action: &'static str, object: &str, e: &lapin::Error) -> BrokerError {
        error::operation_error(&self.endpoint, self.is_connected(), action, object, e)
    }

    /// A new channel.
    pub async fn channel(&self) -> Result<Channel, BrokerError> {
        self.connection
            .create_channel()
            .await
            .map_err(|e| self.error("open a channel on vhost", self.vhost(), &e))
    }

    /// A new channel in publisher-confirm mode.
    pub async fn confirm_channel(&self) -> Result<Channel, BrokerError> {
        let channel = self.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| self.error("enable publisher confirms on vhost", self.vhost(), &e))?;
        Ok(channel)
    }

    /// The channel of passive checks: the current one, or a new one when the broker closed
    /// it (a failed check does).
    pub async fn inspection_channel(&self) -> Result<Channel, BrokerError> {
        self.kept_channel(&self.inspect).await
    }

    /// The channel of declarations: the current one, or a new one when there is none or the
    /// broker closed it (a conflicting declaration does).
    pub async fn declaration_channel(&self) -> Result<Channel, BrokerError> {
        self.kept_channel(&self.declare).await
    }

    /// The open channel kept in `slot`, or a new one kept there.
    async fn kept_channel(&self, slot: &Mutex<Option<Channel>>) -> Result<Channel, BrokerError> {
        let mut slot = slot.lock().await;
        if let Some(ch) = slot.as_ref().filter(|ch| ch.status().connected()) {
            return Ok(ch.clone());
        }
        let ch = self.channel().await?;
        *slot = Some(ch.clone());
        Ok(ch)
    }

    /// Closes the channel of declarations; the next declaration opens another. lapin records
    /// every queue, exchange and binding declared on a channel (to recover them), bindings
    /// once per declaration, so a channel kept for good grows with every apply: a thousand
    /// pipelines rechecked every 30 s added 10 MB in minutes. Each apply starts with this.
    pub async fn renew_declaration_channel(&self) {
        let old = self.declare.lock().await.take();
        if let Some(ch) = old.filter(|ch| ch.status().connected()) {
            let _ = ch.close(200, "renewed".into()).await;
        }
    }

    /// Messages and consumers of `queue`; `None` when it does not exist.
    pub async fn queue_depth(&self, queue: &str) -> Result<Option<QueueDepth>, BrokerError> {
        let name = error::short_string(queue, "queue")?;
        let ch = self.inspection_channel().await?;
        match ch
            .queue_declare(
                name,
                QueueDeclareOptions::default().passive(),
                FieldTable::default(),
            )
            .await
        {
            Ok(q) => Ok(Some(QueueDepth {
                ready: u64::from(q.message_count()),
                consumers: u64::from(q.consumer_count()),
            })),
            Err(e) if error::is_not_found(&e) => Ok(None),
            Err(e) => Err(self.error("inspect queue", queue, &e)),
        }
    }

    /// [`queue_depth`](Self::queue_depth) of a queue that must exist: a missing one is
    /// [`BrokerError::NotFound`].
    pub async fn require_queue(&self, queue: &str) -> Result<QueueDepth, BrokerError> {
        self.queue_depth(queue)
            .await?
            .ok_or_else(|| BrokerError::NotFound {
                kind: "queue",
                name: queue.to_owned(),
                vhost: self.vhost().to_owned(),
            })
    }

    /// True when `exchange` exists (the default exchange `""` always does).
    pub async fn exchange_exists(&self, exchange: &str) -> Result<bool, BrokerError> {
        if exchange.is_empty() {
            return Ok(true);
        }
        let name = error::short_string(exchange, "exchange")?;
        let ch = self.inspection_channel().await?;
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        match ch
            .exchange_declare(name, ExchangeKind::Direct, passive, FieldTable::default())
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if error::is_not_found(&e) => Ok(false),
            Err(e) => Err(self.error("inspect exchange", exchange, &e)),
        }
    }

    /// Fails with [`BrokerError::NotFound`] when `exchange` does not exist.
    pub async fn require_exchange(&self, exchange: &str) -> Result<(), BrokerError> {
        if self.exchange_exists(exchange).await? {
            Ok(())
        } else {
            Err(BrokerError::NotFound {
                kind: "exchange",
                name: exchange.to_owned(),
                vhost: self.vhost().to_owned(),
            })
        }
    }

    /// Closes the connection; the broker requeues whatever is still unacknowledged.
    pub async fn close(&self) {
        let _ = self.connection.close(200, "bye".into()).await;
    }
}

/// Opens one connection: lapin's own TLS (the system's CAs) unless `tls` gives a connector
/// with the broker's CA or a client certificate.
async fn connect(
    uri: AMQPUri,
    properties: ConnectionProperties,
    tls: &Option<RustlsConnector>,
) -> lapin::Result<Connection> {
    let Some(connector) = tls.clone() else {
        return Connection::connect_uri(uri, properties).await;
    };
    let runtime = lapin::runtime::default_runtime()?;
    Connection::connector(
        uri,
        runtime,
        async move |uri: AMQPUri, runtime| {
            let host = uri.authority.host.clone();
            let addresses = runtime.to_socket_addrs((host.clone(), uri.authority.port));
            let stream = AsyncTcpStream::connect(&runtime, addresses).await?;
            Ok(stream.into_rustls(&connector, &host).await?)
        },
        properties,
    )
    .await
}
