//! The whole operator at work: the controller's watches, scheduling and periodic rechecks
//! (in-process), and the `logstream-operator` binary (CRD check, leader Lease, HTTP port,
//! SIGTERM), against a fake API server over HTTP and the real RabbitMQ.

mod support;

use std::{
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::ByteString;
use logstream_api::exit;
use logstream_autoscaler::serve::MetricsText;
use logstream_operator::{
    controller::{self, Context, Scope},
    metrics::Metrics,
    settings::Settings,
};
use logstream_testkit::free_port;
use serde_json::{Value, json};
use support::{TestUser, TestVhost, encode, endpoint, eventually, fake_api::FakeApi, logs};

fn uri(vhost: &TestVhost, user: &TestUser) -> String {
    let a = endpoint().amqp();
    format!(
        "amqp://{}:{}@{}:{}/{}",
        encode(&user.name),
        encode(&user.password),
        a.authority.host,
        a.authority.port,
        encode(&vhost.name)
    )
}

fn secret(namespace: &str, uri: &str) -> Value {
    let bytes = |s: &str| serde_json::to_value(ByteString(s.as_bytes().to_vec())).unwrap();
    let mut data = json!({"uri": bytes(uri)});
    // A broker under test whose management API is not at <AMQP host>:15672 (the RabbitMQ 4
    // run) is named in the Secret, as a user would name it.
    if logstream_testkit::management_addr().is_some() {
        data["managementUri"] = bytes(endpoint().management().base.as_str());
    }
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "rabbitmq", "namespace": namespace},
        "data": data
    })
}

fn pipeline(namespace: &str, name: &str, i: usize) -> Value {
    json!({
        "apiVersion": "logstream.io/v1alpha1",
        "kind": "LogPipeline",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": format!("00000000-0000-4000-8000-{i:012}"),
            "generation": 1,
            "resourceVersion": "1",
            "finalizers": ["logstream.io/broker-cleanup"]
        },
        "spec": {
            "broker": {"secretRef": {"name": "rabbitmq"}},
            "outputs": [{"name": "out", "sink": {"stdout": {}}}]
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_reconciles_every_pipeline_and_repairs_drift_on_its_own() {
    logs::capture();
    let vhost = TestVhost::new("run").await;
    let user = TestUser::new(&vhost).await;
    let names = ["alpha", "beta", "gamma"];
    let fake = FakeApi::start(
        names
            .iter()
            .enumerate()
            .map(|(i, n)| pipeline("team-a", n, i))
            .collect(),
        vec![secret("team-a", &uri(&vhost, &user))],
    )
    .await;
    let ctx = Arc::new(Context::new(
        fake.client(),
        Settings {
            recheck_interval: Duration::from_secs(1),
            ..Settings::default()
        },
        Arc::new(Metrics::default()),
        Some("test-operator".into()),
    ));
    let (stop, stopping) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(controller::run(ctx.clone(), Scope::Cluster, 2, async {
        let _ = stopping.await;
    }));

    eventually(Duration::from_secs(30), "every pipeline Ready", || async {
        (fake.ready_pipelines() == names.len()).then_some(())
    })
    .await;
    let status = fake.pipeline("team-a", "beta").unwrap()["status"].clone();
    assert_eq!(status["replicas"], "1/1", "{status}");
    assert_eq!(status["outputs"][0]["queue"], "logstream.team-a.beta.out");
    let deployment = fake
        .child("/apis/apps/v1/namespaces/team-a/deployments/beta-out")
        .expect("the worker Deployment was applied");
    assert!(
        deployment["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"].is_object()
    );
    // Queue figures appear once the management API has sampled the new queues.
    eventually(Duration::from_secs(20), "the depth metric", || async {
        ctx.metrics
            .render()
            .contains(
                "logstream_output_depth{namespace=\"team-a\",pipeline=\"beta\",output=\"out\"} 0",
            )
            .then_some(())
    })
    .await;

    // A queue deleted by hand comes back at the next periodic recheck, with no API change.
    let connection = vhost.connect().await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_delete(
            "logstream.team-a.beta.out".into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    let requests = fake.requests();
    eventually(Duration::from_secs(20), "the queue back", || async {
        let queues = vhost.management.queues(&vhost.name).await.ok()?;
        queues
            .iter()
            .any(|q| q.name == "logstream.team-a.beta.out")
            .then_some(())
    })
    .await;
    assert!(fake.requests() > requests);

    assert_eq!(
        support::unlisted_calls(&fake),
        Vec::<String>::new(),
        "calls outside rbac::PERMISSIONS"
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the controller stops on shutdown")
        .unwrap();
    assert!(!logs::text().contains(&user.password));
}

/// Runs the operator binary against `fake`, listening on `listen`, until it exits on its own.
async fn run_until_it_exits(fake: &FakeApi, listen: &str) -> std::process::Output {
    let dir = tempdir();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_logstream-operator"))
        .env("KUBECONFIG", fake.kubeconfig(&dir))
        .env("NO_COLOR", "1")
        .arg(format!("--listen={listen}"))
        .output();
    tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("fails fast")
        .unwrap()
}

#[tokio::test]
async fn the_binary_fails_fast_with_an_install_hint_when_the_crd_is_missing() {
    let fake = FakeApi::without_crd().await;
    let output = run_until_it_exits(&fake, "127.0.0.1:0").await;
    support::assert_failed(
        &output,
        exit::FAILURE,
        "CRD logpipelines.logstream.io is not installed: kubectl apply -f crds/logstream.io_logpipelines.yaml, or helm install logstream charts/logstream",
    );
}

#[tokio::test]
async fn the_binary_exits_2_with_one_error_line_when_its_port_is_in_use() {
    let fake = FakeApi::start(vec![], vec![]).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = run_until_it_exits(&fake, &address).await;
    support::assert_failed(
        &output,
        exit::FAILURE,
        &format!("failed to listen on {address}: "),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_leads_through_the_lease_serves_metrics_and_releases_on_sigterm() {
    let vhost = TestVhost::new("bin").await;
    let user = TestUser::new(&vhost).await;
    let fake = FakeApi::start(
        vec![pipeline("team-b", "solo", 7)],
        vec![secret("team-b", &uri(&vhost, &user))],
    )
    .await;
    let dir = tempdir();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_logstream-operator"))
        .env("KUBECONFIG", fake.kubeconfig(&dir))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .args([
            &format!("--listen=127.0.0.1:{port}"),
            "--lease-namespace=ops",
            "--identity=operator-test-0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();

    eventually(Duration::from_secs(30), "the pipeline Ready", || async {
        (fake.ready_pipelines() == 1).then_some(())
    })
    .await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("logstream_operator_leader 1"), "{metrics}");
    assert!(
        metrics.contains("logstream_reconciles_total{result=\"ok\",reason=\"\"}"),
        "{metrics}"
    );
    let ready = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);

    support::terminate(pid);
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "exit {:?}: {text}", output.status);
    assert!(text.contains("leading"), "{text}");
    assert!(!text.contains(&user.password), "the logs show the password");
    assert_eq!(
        support::unlisted_calls(&fake),
        Vec::<String>::new(),
        "calls outside rbac::PERMISSIONS"
    );
    let lease = fake_lease(&fake).await;
    assert!(
        lease["spec"].get("holderIdentity").is_none(),
        "released on shutdown: {lease}"
    );
}

async fn fake_lease(fake: &FakeApi) -> Value {
    let api: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(fake.client(), "ops");
    serde_json::to_value(api.get("logstream-operator").await.unwrap()).unwrap()
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(support::unique("logstream-operator-test"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
