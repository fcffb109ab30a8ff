//! Broker TLS end to end, on a private RabbitMQ node whose AMQPS listener requires a client
//! certificate (certificates made by openssl for the test): `logstream dev` takes the broker,
//! its CA and the client certificate from the manifest's `kind: Secret` documents and its
//! workers (the real `logstream-worker`) consume over TLS; `logstream produce` and `status`
//! take them from `--ca-file`, `--cert-file` and `--key-file`; a wrong CA is one line that
//! names the broker, and no output shows the password.

mod support;

use std::{process::Stdio, time::Duration};

use logstream_testkit::{
    private_node::{PrivateNode, TlsListeners},
    tls::TestCerts,
    unique,
};
use support::{command, eventually, worker_binary};
use tokio::io::{AsyncBufReadExt, BufReader};

const USER: &str = "tls-user";
const PASSWORD: &str = "tls-s3cret-pass";
const LOGS: usize = 200;

/// A `kind: Secret` document with `stringData`.
fn secret(name: &str, pairs: &[(&str, &str)]) -> String {
    let data: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).into()))
        .collect();
    serde_json::to_string(&serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": data,
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_workers_produce_and_status_reach_a_tls_broker_that_requires_a_client_certificate() {
    let certs = TestCerts::new();
    let node = PrivateNode::start(Some(TlsListeners {
        certs: &certs,
        require_client_cert: true,
    }));
    node.add_user(USER, PASSWORD).await;
    let amqps = node.amqps_uri_as(USER, PASSWORD);
    let https = node.https_management_uri();

    let dir = std::env::temp_dir().join(unique("logstream-cli-tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let sink = dir.join("written.jsonl");
    let manifest = dir.join("pipeline.yaml");
    std::fs::write(
        &manifest,
        [
            secret("rabbitmq", &[("uri", &amqps), ("managementUri", &https)]),
            secret("rabbitmq-ca", &[("ca.crt", &certs.text("ca.crt"))]),
            secret(
                "rabbitmq-client",
                &[
                    ("tls.crt", &certs.text("client.crt")),
                    ("tls.key", &certs.text("client.key")),
                ],
            ),
            format!(
                "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {{name: tls}}\nspec:\n  broker:\n    secretRef: {{name: rabbitmq}}\n    tls: {{caSecretRef: {{name: rabbitmq-ca}}, clientCertSecretRef: {{name: rabbitmq-client}}}}\n  outputs:\n    - name: out\n      sink: {{file: {{path: {}}}}}\n      scaling: {{minReplicas: 1, maxReplicas: 1, pollInterval: 1s}}\n",
                sink.display()
            ),
        ]
        .join("\n---\n"),
    )
    .unwrap();
    let manifest = manifest.to_str().unwrap();
    let worker = worker_binary();

    // The flags for produce and status: the broker and its TLS, without the manifest's Secret.
    let ca = certs.path("ca.crt");
    let client_cert = certs.path("client.crt");
    let client_key = certs.path("client.key");
    let flags = |ca: &std::path::Path| {
        vec![
            "--amqp".to_owned(),
            amqps.clone(),
            "--management".to_owned(),
            https.clone(),
            "--ca-file".to_owned(),
            ca.display().to_string(),
            "--cert-file".to_owned(),
            client_cert.display().to_string(),
            "--key-file".to_owned(),
            client_key.display().to_string(),
        ]
    };

    let mut dev = command(&[
        "dev",
        "-f",
        manifest,
        "--listen",
        "127.0.0.1:0",
        "--work-dir",
        dir.join("work").to_str().unwrap(),
        "--worker-binary",
        worker.to_str().unwrap(),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start logstream dev");
    let mut out = BufReader::new(dev.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = out.next_line().await.unwrap() {
            seen.push(line.clone());
            if line.contains("autoscaling 1 output") {
                return;
            }
        }
        panic!("logstream dev ended: {seen:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("logstream dev did not start: {seen:?}"));
    assert!(
        seen.iter()
            .any(|l| l.contains("broker amqps://tls-user:***@127.0.0.1:")),
        "{seen:?}"
    );

    let mut produce = flags(&ca);
    produce.extend(["produce", "-f", manifest, "--count", &LOGS.to_string()].map(str::to_owned));
    let produce: Vec<&str> = produce.iter().map(String::as_str).collect();
    let run = support::run_logstream(&produce, None).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains(&format!("confirmed {LOGS}")), "{run:?}");

    // The worker dev started consumes over TLS with the manifest's CA and client certificate.
    eventually(Duration::from_secs(60), "every log written", || async {
        let written = std::fs::read_to_string(&sink).unwrap_or_default();
        (written.lines().count() >= LOGS).then_some(())
    })
    .await;

    let mut status = flags(&ca);
    status.extend(["status", "-f", manifest].map(str::to_owned));
    let status: Vec<&str> = status.iter().map(String::as_str).collect();
    let run = support::run_logstream(&status, None).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("default/tls  out"), "{run:?}");

    // A wrong CA: one line naming the broker, exit code 2, no password.
    let mut wrong = flags(&certs.path("other-ca.crt"));
    wrong.extend(["produce", "-f", manifest, "-m", "hello"].map(str::to_owned));
    let wrong: Vec<&str> = wrong.iter().map(String::as_str).collect();
    let run = support::run_logstream(&wrong, None).await;
    eprintln!("wrong CA: {}", run.stderr.trim());
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(
        run.stderr.starts_with(&format!(
            "error: broker amqps://{USER}:***@127.0.0.1:{}/%2F: its TLS certificate is not trusted (UnknownIssuer)",
            node.amqps_port.unwrap()
        )),
        "{run:?}"
    );

    let pid = nix::unistd::Pid::from_raw(i32::try_from(dev.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut rest = Vec::new();
    while let Ok(Some(line)) = out.next_line().await {
        rest.push(line);
    }
    let status = tokio::time::timeout(Duration::from_secs(40), dev.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}: {rest:?}");

    // No output of any binary shows the password: dev's, the workers' logs, produce's.
    let mut outputs = seen.join("\n") + &rest.join("\n");
    for entry in std::fs::read_dir(dir.join("work")).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "log") {
            outputs.push_str(&std::fs::read_to_string(entry.path()).unwrap());
        }
    }
    assert!(!outputs.contains(PASSWORD), "{outputs}");
    let _ = std::fs::remove_dir_all(&dir);
}
