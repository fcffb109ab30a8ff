//! What the worker's benchmarks share: their settings from the environment, the broker under
//! test, and reading a running worker's metrics and memory.

#![allow(dead_code)]

use lapin::{Connection, ConnectionProperties};
use logstream_broker::BrokerEndpoint;
use logstream_worker::metrics::sample;

/// The environment variable `name` parsed, or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The broker of `AMQP_ADDR` / `MANAGEMENT_ADDR` (default: loopback, guest).
pub fn endpoint() -> BrokerEndpoint {
    let amqp = std::env::var("AMQP_ADDR")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let management = std::env::var("MANAGEMENT_ADDR").ok();
    BrokerEndpoint::from_uri(&amqp, management.as_deref()).expect("AMQP_ADDR parses")
}

/// A connection to `vhost` of `endpoint`.
pub async fn connect(endpoint: &BrokerEndpoint, vhost: &str) -> Connection {
    Connection::connect_uri(
        endpoint.with_vhost(vhost).amqp(),
        ConnectionProperties::default(),
    )
    .await
    .expect("connect")
}

/// Sample `name` with `labels` of the worker listening on `listen`.
pub async fn metric(
    client: &reqwest::Client,
    listen: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let text = client
        .get(format!("http://{listen}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    sample(&text, name, labels)
}
