//! The broker under test: a vhost of its own per test on the shared node ([`TestVhost`],
//! deleted when the test ends, pass or fail), or any vhost of any node ([`TestBroker`], e.g. a
//! private node a test restarts), with what tests do to it: connect, publish with confirms,
//! apply a pipeline, count, peek at and drain queues. Tests that use a vhost run on a
//! multi-thread runtime (the clean-up on drop needs one).

use std::time::Duration;

use futures::StreamExt;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    message::Delivery,
    options::{
        BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
        ConfirmSelectOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use logstream_api::{LogPipeline, TopologyPlan, manifest::parse_pipeline, plan};
use logstream_broker::{BrokerAdmin, BrokerEndpoint, ManagementClient};

use crate::{amqp_addr, finish_in_drop, management_addr, unique};

/// The broker under test (`AMQP_ADDR`, `MANAGEMENT_ADDR`).
pub fn endpoint() -> BrokerEndpoint {
    BrokerEndpoint::from_uri(&amqp_addr(), management_addr().as_deref()).expect("AMQP_ADDR parses")
}

/// The version of the broker under test: `LOGSTREAM_RABBITMQ_VERSION` when set (`make test`
/// sets it for each run, e.g. `3.10.8`, `4.0.5`), else what its management API reports.
pub async fn rabbitmq_version() -> String {
    if let Ok(version) = std::env::var("LOGSTREAM_RABBITMQ_VERSION")
        && !version.trim().is_empty()
    {
        return version.trim().to_owned();
    }
    ManagementClient::new(endpoint().management().clone())
        .rabbitmq_version()
        .await
        .expect("the management API of the broker under test tells its version")
}

/// The major version of the broker under test (3, 4).
pub async fn rabbitmq_major() -> u32 {
    let version = rabbitmq_version().await;
    version
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .unwrap_or_else(|| panic!("RabbitMQ version {version:?} does not start with a number"))
}

/// Whether a test of `feature`, which RabbitMQ `major` introduced, can run on the broker under
/// test. When it cannot, prints why (`SKIPPED <test>: needs RabbitMQ 4 or later (<feature>);
/// the broker under test is RabbitMQ 3.10.8`) and returns false: the test returns at once. Such
/// tests are named `..._on_rabbitmq4`; `.config/nextest.toml` shows their output in every
/// run, and `scripts/test-brokers.sh` counts the skips per broker.
pub async fn broker_has(major: u32, feature: &str) -> bool {
    let version = rabbitmq_version().await;
    if rabbitmq_major().await >= major {
        return true;
    }
    let test = std::thread::current()
        .name()
        .map(|name| format!(" {name}"))
        .unwrap_or_default();
    eprintln!(
        "SKIPPED{test}: needs RabbitMQ {major} or later ({feature}); the broker under test is RabbitMQ {version}"
    );
    false
}

/// One vhost of one broker.
#[derive(Clone, Debug)]
pub struct TestBroker {
    /// The broker, on [`vhost`](Self::vhost).
    pub endpoint: BrokerEndpoint,
    /// The vhost.
    pub vhost: String,
}

impl TestBroker {
    /// `vhost` of the broker at `endpoint`.
    pub fn new(endpoint: &BrokerEndpoint, vhost: &str) -> Self {
        Self {
            endpoint: endpoint.with_vhost(vhost),
            vhost: vhost.to_owned(),
        }
    }

    /// The management API of the broker.
    pub fn management(&self) -> ManagementClient {
        ManagementClient::new(self.endpoint.management().clone())
    }

    /// An AMQP connection to the vhost.
    pub async fn connect(&self) -> Connection {
        Connection::connect_uri(self.endpoint.amqp(), ConnectionProperties::default())
            .await
            .expect("connect to the test vhost")
    }

    /// A channel in confirm mode (with its connection).
    pub async fn confirm_channel(&self) -> (Connection, Channel) {
        let connection = self.connect().await;
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        (connection, channel)
    }

    /// The AMQP URI of the vhost with the password, as a worker gets it in
    /// `LOGSTREAM_AMQP_URI`.
    pub fn uri(&self) -> String {
        self.endpoint.amqp_uri_with_password()
    }

    /// An administrative connection to the vhost.
    pub async fn admin(&self) -> BrokerAdmin {
        BrokerAdmin::connect(&self.endpoint, &self.vhost)
            .await
            .expect("connect to the test vhost as administrator")
    }

    /// Plans `manifest` (a LogPipeline) in `namespace` on this vhost and applies the plan;
    /// returns the pipeline, the plan and the connection that applied it.
    pub async fn apply_manifest(
        &self,
        namespace: &str,
        manifest: &str,
    ) -> (LogPipeline, TopologyPlan, BrokerAdmin) {
        let pipeline = parse_pipeline(manifest).expect("the test manifest parses");
        let name = pipeline
            .metadata
            .name
            .clone()
            .expect("the manifest names it");
        let mut p = plan(namespace, &name, &pipeline.spec).expect("the test pipeline plans");
        p.vhost.clone_from(&self.vhost);
        let admin = self.admin().await;
        admin.apply(&p).await.expect("apply the test topology");
        (pipeline, p, admin)
    }

    /// Ready messages in `queue` (real time, by passive declare); the queue must exist.
    pub async fn ready(&self, queue: &str) -> u64 {
        let connection = self.connect().await;
        let channel = connection.create_channel().await.unwrap();
        let q = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions::default().passive(),
                FieldTable::default(),
            )
            .await
            .expect("the queue exists");
        let _ = connection.close(200, "bye".into()).await;
        u64::from(q.message_count())
    }

    /// Makes the broker send the dead letters quorum queue `queue` keeps (it dead-letters at
    /// least once and its target was missing or full) now, instead of at its next retry, up to
    /// `dead_letter_worker_publisher_confirm_timeout` (180 s by default) away: any change of
    /// the queue's policy does. This one sets a length bound in bytes no test comes near.
    pub async fn resend_dead_letters(&self, queue: &str) {
        let m = self.endpoint.management();
        let url = format!(
            "{}api/policies/{}/logstream-test-resend",
            m.base,
            encode(&self.vhost)
        );
        let pattern = format!("^{}$", queue.replace('.', "\\."));
        let response = reqwest::Client::new()
            .put(url)
            .basic_auth(&m.username, Some(&m.password))
            .json(&serde_json::json!({
                "pattern": pattern,
                "apply-to": "queues",
                "definition": {"max-length-bytes": 1_000_000_000_000_i64},
                "priority": 0,
            }))
            .send()
            .await
            .expect("the management API answers");
        assert!(
            response.status().is_success(),
            "setting a policy on {queue}: {}",
            response.status()
        );
    }

    /// Unacknowledged messages of `queue` as the management API reports them (sampled, so
    /// callers poll).
    pub async fn unacked(&self, queue: &str) -> Option<u64> {
        let queues = self.management().queues(&self.vhost).await.ok()?;
        queues
            .into_iter()
            .find(|q| q.name == queue)?
            .messages_unacknowledged
    }

    /// Looks at the message at the head of `queue` and puts it back (it keeps its place and,
    /// in a TTL queue, its expiry).
    pub async fn peek(&self, queue: &str) -> Option<Taken> {
        let connection = self.connect().await;
        let channel = connection.create_channel().await.unwrap();
        let got = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap();
        let taken = got.map(|m| (Taken::of(&m.delivery), m.delivery.delivery_tag));
        if let Some((_, tag)) = &taken {
            channel
                .basic_nack(
                    *tag,
                    BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    },
                )
                .await
                .unwrap();
        }
        let _ = connection.close(200, "bye".into()).await;
        taken.map(|(t, _)| t)
    }

    /// Takes every message out of `queue`, head first (they are gone afterwards).
    pub async fn drain(&self, queue: &str) -> Vec<Taken> {
        let connection = self.connect().await;
        let channel = connection.create_channel().await.unwrap();
        let mut taken = Vec::new();
        while let Some(m) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            taken.push(Taken::of(&m.delivery));
        }
        let _ = connection.close(200, "bye".into()).await;
        taken
    }

    /// Consumes exactly `count` messages of `queue` (no ack: fast), failing after `timeout`.
    pub async fn consume(&self, queue: &str, count: usize, timeout: Duration) -> Vec<Taken> {
        let connection = self.connect().await;
        let channel = connection.create_channel().await.unwrap();
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "test-drain".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut all = Vec::with_capacity(count);
        let deadline = tokio::time::Instant::now() + timeout;
        while all.len() < count {
            let next = tokio::time::timeout_at(deadline, consumer.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("only {} of {count} messages within {timeout:?}", all.len())
                });
            let delivery: Delivery = next.expect("consumer open").expect("delivery");
            all.push(Taken::of(&delivery));
        }
        let _ = connection.close(200, "bye".into()).await;
        all
    }
}

/// A message taken from a queue.
#[derive(Debug, Clone)]
pub struct Taken {
    /// The body.
    pub body: Vec<u8>,
    /// The properties.
    pub properties: BasicProperties,
    /// The exchange it was published to.
    pub exchange: String,
    /// The routing key it was published with.
    pub routing_key: String,
}

impl Taken {
    fn of(delivery: &Delivery) -> Self {
        Self {
            body: delivery.data.clone(),
            properties: delivery.properties.clone(),
            exchange: delivery.exchange.to_string(),
            routing_key: delivery.routing_key.to_string(),
        }
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value.
    pub fn value(&self, name: &str) -> Option<AMQPValue> {
        self.properties
            .headers()
            .as_ref()?
            .inner()
            .get(name)
            .cloned()
    }

    /// A header as text (strings as they are, numbers printed).
    pub fn header(&self, name: &str) -> Option<String> {
        Some(match self.value(name)? {
            AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            AMQPValue::ShortString(s) => s.as_str().to_owned(),
            AMQPValue::LongLongInt(n) => n.to_string(),
            AMQPValue::LongInt(n) => n.to_string(),
            AMQPValue::LongUInt(n) => n.to_string(),
            AMQPValue::ShortInt(n) => n.to_string(),
            other => format!("{other:?}"),
        })
    }

    /// The message id.
    pub fn message_id(&self) -> Option<String> {
        self.properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str().to_owned())
    }
}

/// A vhost of its own on the broker under test for one test; deleted on drop.
pub struct TestVhost {
    /// The vhost on the broker under test.
    pub broker: TestBroker,
    /// Its name.
    pub name: String,
    /// The management API of the broker.
    pub management: ManagementClient,
}

impl TestVhost {
    /// A new vhost named after `label`, the test user allowed on it.
    pub async fn new(label: &str) -> Self {
        let name = unique(&format!("logstream-test-{label}"));
        let endpoint = endpoint();
        let management = ManagementClient::new(endpoint.management().clone());
        management
            .create_vhost(&name)
            .await
            .expect("create test vhost (is RabbitMQ running? see `make broker`)");
        management
            .grant_all(&name, endpoint.username())
            .await
            .expect("grant the test user on the test vhost");
        Self {
            broker: TestBroker::new(&endpoint, &name),
            name,
            management,
        }
    }
}

impl std::ops::Deref for TestVhost {
    type Target = TestBroker;

    fn deref(&self) -> &TestBroker {
        &self.broker
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let name = self.name.clone();
        let management = self.management.clone();
        finish_in_drop(async move {
            let _ = management.delete_vhost(&name).await;
        });
    }
}

/// A broker user of its own, with a distinctive password (special characters included), allowed
/// on one test vhost; deleted on drop. Tests scan logs and API bodies for that password.
pub struct TestUser {
    /// The user name.
    pub name: String,
    /// The password.
    pub password: String,
    management: ManagementClient,
}

impl TestUser {
    /// A new user allowed on `vhost`.
    pub async fn new(vhost: &TestVhost) -> Self {
        let name = unique("logstream-user");
        let password = format!("S3cr3t-{}/p@ss#w%rd", unique("pw"));
        vhost
            .management
            .put_user(&name, &password, "management")
            .await
            .expect("create the test user");
        vhost
            .management
            .grant_all(&vhost.name, &name)
            .await
            .expect("grant the test user on the test vhost");
        Self {
            name,
            password,
            management: vhost.management.clone(),
        }
    }

    /// The broker under test with this user on `vhost`.
    pub fn endpoint(&self, vhost: &str) -> BrokerEndpoint {
        endpoint()
            .with_vhost(vhost)
            .with_credentials(&self.name, &self.password)
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let name = self.name.clone();
        let management = self.management.clone();
        finish_in_drop(async move {
            let _ = management.delete_user(&name).await;
        });
    }
}

/// Percent-encodes `s` as a URI component.
pub fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Publishes `body` persistently (mandatory) and waits for the broker's confirm.
pub async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
) -> Confirmation {
    publish_with(
        channel,
        exchange,
        routing_key,
        body,
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
}

/// Publishes with `properties` (mandatory) and waits for the broker's confirm.
pub async fn publish_with(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Confirmation {
    channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        )
        .await
        .expect("publish")
        .await
        .expect("confirm")
}
