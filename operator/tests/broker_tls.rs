//! The operator against a broker over TLS (a private RabbitMQ node whose AMQPS listener
//! requires a client certificate, certificates made by openssl for the test), with the fake API
//! server over HTTP: `spec.broker.tls` names the Secrets of the CA and the client certificate;
//! the operator's own connections (topology, management API over https, autoscaler) use them,
//! the worker Deployment mounts them where the worker configuration says, and a wrong CA is
//! reported in the status in one line, without the password.

mod support;

use std::{sync::Arc, time::Duration};

use k8s_openapi::ByteString;
use logstream_broker::ManagementClient;
use logstream_operator::{
    controller::{self, Context, Scope},
    metrics::Metrics,
    settings::Settings,
};
use logstream_testkit::{
    private_node::{PrivateNode, TlsListeners},
    tls::TestCerts,
};
use serde_json::{Value, json};
use support::{eventually, fake_api::FakeApi, logs};

const USER: &str = "tls-user";
const PASSWORD: &str = "tls-s3cret-pass";

fn secret(name: &str, pairs: &[(&str, &[u8])]) -> Value {
    let data: serde_json::Map<String, Value> = pairs
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_owned(),
                serde_json::to_value(ByteString(v.to_vec())).unwrap(),
            )
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "team-t"},
        "data": data
    })
}

fn pipeline(name: &str, ca_secret: &str, i: usize) -> Value {
    json!({
        "apiVersion": "logstream.io/v1alpha1",
        "kind": "LogPipeline",
        "metadata": {
            "name": name,
            "namespace": "team-t",
            "uid": format!("00000000-0000-4000-8000-{i:012}"),
            "generation": 1,
            "resourceVersion": "1",
            "finalizers": ["logstream.io/broker-cleanup"]
        },
        "spec": {
            "broker": {
                "secretRef": {"name": "rabbitmq"},
                "tls": {"caSecretRef": {"name": ca_secret}, "clientCertSecretRef": {"name": "rabbitmq-client"}}
            },
            "outputs": [{"name": "out", "sink": {"stdout": {}}}]
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_reaches_a_tls_broker_with_the_secrets_of_spec_broker_tls() {
    logs::capture();
    let certs = TestCerts::new();
    let node = PrivateNode::start(Some(TlsListeners {
        certs: &certs,
        require_client_cert: true,
    }));
    node.add_user(USER, PASSWORD).await;
    let uri = node.amqps_uri_as(USER, PASSWORD);

    let fake = FakeApi::start(
        vec![
            pipeline("secure", "rabbitmq-ca", 1),
            pipeline("wrongca", "other-ca", 2),
        ],
        vec![
            secret(
                "rabbitmq",
                &[
                    ("uri", uri.as_bytes()),
                    ("managementUri", node.https_management_uri().as_bytes()),
                ],
            ),
            secret("rabbitmq-ca", &[("ca.crt", &certs.read("ca.crt"))]),
            secret("other-ca", &[("ca.crt", &certs.read("other-ca.crt"))]),
            secret(
                "rabbitmq-client",
                &[
                    ("tls.crt", &certs.read("client.crt")),
                    ("tls.key", &certs.read("client.key")),
                ],
            ),
        ],
    )
    .await;
    let ctx = Arc::new(Context::new(
        fake.client(),
        Settings {
            recheck_interval: Duration::from_secs(2),
            ..Settings::default()
        },
        Arc::new(Metrics::default()),
        Some("test-operator".into()),
    ));
    let (stop, stopping) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(controller::run(ctx.clone(), Scope::Cluster, 2, async {
        let _ = stopping.await;
    }));

    // The right CA and the client certificate: the topology is applied over AMQPS, the status
    // read over https.
    eventually(Duration::from_secs(60), "pipeline secure Ready", || async {
        let p = fake.pipeline("team-t", "secure")?;
        let ready = p["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then_some(())
    })
    .await;
    let queues = ManagementClient::new(node.endpoint().management().clone())
        .queues("/")
        .await
        .unwrap();
    assert!(
        queues
            .iter()
            .any(|q| q.name == "logstream.team-t.secure.out"),
        "the topology is on the TLS broker"
    );

    // The worker mounts both Secrets where its configuration reads them.
    let deployment = fake
        .child("/apis/apps/v1/namespaces/team-t/deployments/secure-out")
        .expect("the worker Deployment was applied");
    let pod = &deployment["spec"]["template"]["spec"];
    let volumes = pod["volumes"].as_array().unwrap();
    for (volume, secret) in [
        ("secret-broker-ca", "rabbitmq-ca"),
        ("secret-broker-client-cert", "rabbitmq-client"),
    ] {
        assert!(
            volumes
                .iter()
                .any(|v| v["name"] == volume && v["secret"]["secretName"] == secret),
            "{volume}: {volumes:?}"
        );
    }
    let config = fake
        .child("/api/v1/namespaces/team-t/configmaps/secure-out")
        .expect("the worker ConfigMap was applied");
    let yaml = config["data"]["worker.yaml"].as_str().unwrap();
    assert!(
        yaml.contains("secrets:\n  broker-ca:\n    dir: /var/run/secrets/logstream/broker-ca\n    secret: rabbitmq-ca\n"),
        "{yaml}"
    );

    // The wrong CA: not Ready, and the condition says why in one line without the password.
    // About 7 s alone; over 60 s once in a CI run on a busy 2-core machine.
    let message = eventually(
        Duration::from_secs(120),
        "pipeline wrongca failed",
        || async {
            let p = fake.pipeline("team-t", "wrongca")?;
            p["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "BrokerReachable" && c["status"] == "False")
                .and_then(|c| c["message"].as_str().map(str::to_owned))
        },
    )
    .await;
    eprintln!("wrong CA: {message}");
    assert!(
        message.contains("its TLS certificate is not trusted (UnknownIssuer)"),
        "{message}"
    );
    assert!(
        !message.contains(PASSWORD) && !message.contains('\n'),
        "{message}"
    );

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the controller stops on shutdown")
        .unwrap();
    assert!(!logs::text().contains(PASSWORD));
}
