//! A broker of several hosts against the real RabbitMQ: hosts are tried in order, a host
//! that does not answer costs one attempt, and when none answers the error names each.

use logstream_broker::{BrokerAdmin, BrokerConnection, BrokerEndpoint, ManagementClient, Purpose};
use logstream_testkit::{TestVhost, endpoint, free_port};

/// The broker under test behind a host that refuses connections (a free loopback port),
/// for AMQP and the management API alike.
fn behind_a_dead_host() -> (BrokerEndpoint, u16) {
    let live = endpoint();
    let dead = free_port();
    let uri = live.amqp_uri_with_password().replacen(
        &format!("@{}", live.hosts()[0]),
        &format!("@127.0.0.1:{dead},{}", live.hosts()[0]),
        1,
    );
    let base = live.management().base.clone();
    let management = format!(
        "{}://127.0.0.1:{dead},{}:{}{}",
        base.scheme(),
        base.host_str().unwrap(),
        base.port_or_known_default().unwrap(),
        base.path()
    );
    (
        BrokerEndpoint::from_uri(&uri, Some(&management)).unwrap(),
        dead,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_host_is_skipped_for_amqp_and_the_management_api() {
    let vhost = TestVhost::new("hosts").await;
    let (endpoint, dead) = behind_a_dead_host();
    assert_eq!(endpoint.hosts().len(), 2);
    let connection = BrokerConnection::open(
        &endpoint.with_vhost(&vhost.name),
        "logstream-test",
        Purpose::Admin,
    )
    .await
    .unwrap();
    assert_eq!(connection.host(), &endpoint.hosts()[1]);
    connection.close().await;

    let admin = BrokerAdmin::connect(&endpoint, &vhost.name).await.unwrap();
    let management = ManagementClient::new(endpoint.management().clone());
    assert!(management.rabbitmq_version().await.is_ok());
    assert!(admin.management().queues(&vhost.name).await.is_ok());
    admin.close().await;
    eprintln!("connected through the second host; 127.0.0.1:{dead} refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_no_host_answers_the_error_names_each() {
    let (a, b, m) = (free_port(), free_port(), free_port());
    let endpoint = BrokerEndpoint::from_uri(
        &format!("amqp://guest:s3cret-pw@127.0.0.1:{a},127.0.0.1:{b}/%2f?connection_timeout=2000"),
        Some(&format!("http://127.0.0.1:{m},localhost:{m}")),
    )
    .unwrap();
    let err = BrokerConnection::open(&endpoint, "logstream-test", Purpose::Admin)
        .await
        .unwrap_err();
    let line = err.to_string();
    eprintln!("{line}");
    assert_eq!(err.category(), "BrokerUnreachable");
    assert!(
        line.starts_with(&format!(
            "broker amqp://guest:***@127.0.0.1:{a},127.0.0.1:{b}/%2F is unreachable: tried 2 hosts in turn: 127.0.0.1:{a}: "
        )),
        "{line}"
    );
    assert!(line.contains(&format!("; 127.0.0.1:{b}: ")), "{line}");
    assert!(!line.contains("s3cret-pw"), "{line}");

    let err = ManagementClient::new(endpoint.management().clone())
        .rabbitmq_version()
        .await
        .unwrap_err()
        .to_string();
    eprintln!("{err}");
    assert!(
        err.contains(&format!(
            "tried 2 nodes in turn: http://127.0.0.1:{m}/: connection failed: "
        )) && err.contains(&format!("; http://localhost:{m}/: connection failed: ")),
        "{err}"
    );
}
