//! What the tests of every LogStream crate share: the broker under test and a vhost of its own
//! per test ([`broker`]), a private node of its own ([`private_node`], e.g. with TLS
//! listeners), test certificates ([`tls`]), the three-node cluster of `make test-cluster`
//! ([`cluster`]), a headless browser ([`browser`]), a stand-in Kubernetes API server
//! ([`fake_api`]), unique names, polling with a deadline, free ports. Each crate's
//! `tests/support` module adds what only it needs (sink servers, worker processes, the fake
//! API server).
//!
//! `AMQP_ADDR` (default `amqp://guest:guest@127.0.0.1:5672/%2f`) and optional
//! `MANAGEMENT_ADDR` name the broker under test.

pub mod broker;
pub mod browser;
pub mod cluster;
pub mod fake_api;
pub mod private_node;
pub mod tls;

pub use broker::{
    Taken, TestBroker, TestUser, TestVhost, broker_has, encode, endpoint, publish, publish_with,
    rabbitmq_major, rabbitmq_version,
};

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// The AMQP URI of the broker under test.
pub fn amqp_addr() -> String {
    std::env::var("AMQP_ADDR").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The management API of the broker under test, when it is not derived from [`amqp_addr`].
pub fn management_addr() -> Option<String> {
    std::env::var("MANAGEMENT_ADDR").ok()
}

/// A name no other test (or earlier run) uses.
pub fn unique(label: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{label}-{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `work` to completion from a `Drop` (which cannot await), on a short-lived thread with
/// a runtime of its own, so the clean-up happens even when the test panicked. Tests that use
/// it run on a multi-thread runtime, so that the others still answer (e.g. the broker closing
/// connections) while this thread is joined.
pub fn finish_in_drop<F>(work: F)
where
    F: std::future::Future + Send + 'static,
{
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work);
    })
    .join();
}
