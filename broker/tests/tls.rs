//! TLS to a real RabbitMQ: a private node with an AMQPS listener and the management API over
//! https, with certificates the test makes (openssl): a CA, a server certificate for
//! 127.0.0.1, a client certificate, and a second CA that signed none of them.

use logstream_broker::{BrokerAdmin, BrokerEndpoint, BrokerError, ManagementClient, TlsMaterial};
use logstream_testkit::{
    private_node::{PrivateNode, TlsListeners},
    tls::TestCerts,
};

/// A user of its own on `node`, so that no output can pass for the password by showing the
/// user name.
const USER: &str = "tls-user";
const PASSWORD: &str = "tls-s3cret-pass";

/// The node over AMQPS and https, as `USER`, trusting `ca` and showing `client`.
fn tls_endpoint(node: &PrivateNode, certs: &TestCerts, ca: &str, client: bool) -> BrokerEndpoint {
    let mut tls = TlsMaterial::default().with_ca(certs.read(ca), ca).unwrap();
    if client {
        tls = tls
            .with_client_cert(certs.read("client.crt"), certs.read("client.key"), "client")
            .unwrap();
    }
    BrokerEndpoint::from_uri(
        &node.amqps_uri_as(USER, PASSWORD),
        Some(&node.https_management_uri()),
    )
    .unwrap()
    .with_tls(tls)
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_and_https_trust_the_given_ca_and_a_wrong_ca_is_one_clear_line() {
    let certs = TestCerts::new();
    let node = PrivateNode::start(Some(TlsListeners {
        certs: &certs,
        require_client_cert: false,
    }));
    node.add_user(USER, PASSWORD).await;

    // The right CA: AMQPS and the management API over https both work.
    let endpoint = tls_endpoint(&node, &certs, "ca.crt", false);
    let admin = BrokerAdmin::connect(&endpoint, "/").await.unwrap();
    let version = admin.management().rabbitmq_version().await.unwrap();
    admin.close().await;
    eprintln!("RabbitMQ {version} over AMQPS and https with the test CA");

    // The wrong CA: refused, in one line that names the broker and says what is wrong.
    let wrong = tls_endpoint(&node, &certs, "other-ca.crt", false);
    let err = BrokerAdmin::connect(&wrong, "/").await.unwrap_err();
    let line = err.to_string();
    eprintln!("wrong CA (AMQP): {line}");
    assert!(matches!(err, BrokerError::Tls { .. }), "{err:?}");
    assert_eq!(err.category(), "BrokerTlsFailed");
    assert!(
        line.starts_with(&format!(
            "broker amqps://{USER}:***@127.0.0.1:{}/%2F: its TLS certificate is not trusted (",
            node.amqps_port.unwrap()
        )),
        "{line}"
    );
    assert!(!line.contains(PASSWORD) && !line.contains('\n'), "{line}");

    let err = ManagementClient::new(wrong.management().clone())
        .rabbitmq_version()
        .await
        .unwrap_err();
    let line = err.to_string();
    eprintln!("wrong CA (management API): {line}");
    assert!(
        line.starts_with(&format!(
            "management API at https://127.0.0.1:{}/api/overview is unreachable: its TLS certificate is not trusted (",
            node.https_port.unwrap()
        )),
        "{line}"
    );
    assert!(!line.contains(PASSWORD) && !line.contains('\n'), "{line}");

    // Without a CA, the system's CAs do not know the test CA either.
    let system = BrokerEndpoint::from_uri(&node.amqps_uri_as(USER, PASSWORD), None).unwrap();
    let err = BrokerAdmin::connect(&system, "/").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("its TLS certificate is not trusted"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_requires_a_client_certificate_takes_the_given_one() {
    let certs = TestCerts::new();
    let node = PrivateNode::start(Some(TlsListeners {
        certs: &certs,
        require_client_cert: true,
    }));
    node.add_user(USER, PASSWORD).await;

    let without = tls_endpoint(&node, &certs, "ca.crt", false);
    let err = BrokerAdmin::connect(&without, "/").await.unwrap_err();
    let line = err.to_string();
    eprintln!("no client certificate: {line}");
    // The broker's fatal alert, or, when the kernel's reset overtakes it (the client has
    // written its AMQP header by then), the reset with the same question.
    match &err {
        BrokerError::Tls { .. } => assert!(
            line.contains("refused the TLS handshake") && line.contains("client certificate"),
            "{line}"
        ),
        BrokerError::Unreachable { .. } => assert!(
            line.contains("reset") && line.contains("require a client certificate?"),
            "{line}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(!line.contains(PASSWORD), "{line}");

    let with = tls_endpoint(&node, &certs, "ca.crt", true);
    let admin = BrokerAdmin::connect(&with, "/").await.unwrap();
    assert!(admin.management().rabbitmq_version().await.is_ok());
    admin.close().await;
}
