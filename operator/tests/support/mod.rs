//! Test harness for tests against the real RabbitMQ on loopback.
//!
//! `AMQP_ADDR` (default `amqp://guest:guest@127.0.0.1:5672/%2f`) and optional `MANAGEMENT_ADDR`
//! (default: port 15672 of the AMQP host) name the broker. Every test gets its own vhost,
//! deleted when the test ends, pass or fail; tests that use one run on a multi-thread runtime.

#![allow(dead_code)]

pub mod api;
pub mod browser;
pub mod fake_api;
pub mod logs;

use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};
use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

use futures::future::BoxFuture;
use logstream_api::{LogPipeline, TopologyPlan, manifest::parse_pipeline, plan};
use logstream_operator::{
    broker::{BrokerAdmin, BrokerEndpoint, ManagementClient},
    scaling::{ScaleError, ScaleTarget},
};
// Not every test binary uses every helper.
#[allow(unused_imports)]
pub use logstream_testkit::{amqp_addr, eventually, finish_in_drop, management_addr, unique};

/// The broker under test.
pub fn endpoint() -> BrokerEndpoint {
    BrokerEndpoint::from_uri(&amqp_addr(), management_addr().as_deref()).expect("AMQP_ADDR parses")
}

/// A vhost of its own for one test; deleted on drop.
pub struct TestVhost {
    pub name: String,
    pub management: ManagementClient,
}

impl TestVhost {
    pub async fn new(label: &str) -> Self {
        let name = unique(&format!("logstream-test-{label}"));
        let management = ManagementClient::new(endpoint().management().clone());
        management
            .create_vhost(&name)
            .await
            .expect("create test vhost (is RabbitMQ running? see `make broker`)");
        management
            .grant_all(&name, endpoint().username())
            .await
            .expect("grant the test user on the test vhost");
        Self { name, management }
    }

    /// An AMQP connection to this vhost.
    pub async fn connect(&self) -> Connection {
        let uri = endpoint().with_vhost(&self.name).amqp();
        Connection::connect_uri(uri, ConnectionProperties::default())
            .await
            .expect("connect to the test vhost")
    }

    /// Parses `manifest` (a LogPipeline), plans it in `namespace` on this vhost and applies the
    /// plan; returns the pipeline, the plan and the connection that applied it.
    pub async fn apply_manifest(
        &self,
        namespace: &str,
        manifest: &str,
    ) -> (LogPipeline, TopologyPlan, BrokerAdmin) {
        let pipeline = parse_pipeline(manifest).unwrap();
        let name = pipeline.metadata.name.clone().unwrap();
        let mut p = plan(namespace, &name, &pipeline.spec).unwrap();
        p.vhost.clone_from(&self.name);
        let admin = BrokerAdmin::connect(&endpoint(), &self.name).await.unwrap();
        admin.apply(&p).await.unwrap();
        (pipeline, p, admin)
    }

    /// A channel in confirm mode.
    pub async fn confirm_channel(&self) -> (Connection, Channel) {
        let connection = self.connect().await;
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        (connection, channel)
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

/// Publishes `body` persistently and waits for the broker's confirm.
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

/// A broker user of its own, with a distinctive password (special characters included), allowed
/// on one test vhost; deleted on drop. Tests scan logs and API bodies for that password.
pub struct TestUser {
    pub name: String,
    pub password: String,
    management: ManagementClient,
}

impl TestUser {
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

/// Sends SIGTERM to process `pid` (one this test started).
pub fn terminate(pid: u32) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid fits in i32"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("send SIGTERM");
}

/// A replica count in memory, shared with the test: what an autoscaler scales when no
/// Deployment is involved.
pub struct ReplicaCounter(pub Arc<AtomicU32>);

impl ScaleTarget for ReplicaCounter {
    fn describe(&self) -> String {
        "test counter".into()
    }
    fn replicas(&self) -> BoxFuture<'_, Result<u32, ScaleError>> {
        Box::pin(async { Ok(self.0.load(Ordering::SeqCst)) })
    }
    fn scale(&self, replicas: u32) -> BoxFuture<'_, Result<(), ScaleError>> {
        self.0.store(replicas, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }
}
