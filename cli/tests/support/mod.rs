//! Test harness for the `logstream` binary against the real RabbitMQ on loopback.
//!
//! `AMQP_ADDR` (default `amqp://guest:guest@127.0.0.1:5672/%2f`) and optional `MANAGEMENT_ADDR`
//! name the broker. Every test gets its own vhost with a pipeline's topology applied by
//! `BrokerAdmin::apply`, deleted when the test ends, pass or fail; tests run on a multi-thread
//! runtime so the vhost can be deleted while its connections close.

#![allow(dead_code)]

use std::{process::Stdio, time::Duration};

use lapin::{
    BasicProperties,
    options::BasicPublishOptions,
    types::{AMQPValue, FieldTable, LongString},
};
use logstream_api::{TopologyPlan, contract};
// Not every test binary uses every helper.
#[allow(unused_imports)]
pub use logstream_testkit::{
    Taken, TestVhost, amqp_addr, endpoint, eventually, management_addr, unique,
};
use tokio::io::AsyncWriteExt;

/// Namespace of every test pipeline.
pub const NAMESPACE: &str = "test";
/// Name of every test pipeline.
pub const PIPELINE: &str = "app";

/// A vhost of its own for one test, holding pipeline `test/app`; deleted on drop.
pub struct PipelineVhost {
    pub vhost: TestVhost,
    pub plan: TopologyPlan,
}

impl PipelineVhost {
    /// A vhost with pipeline `test/app` of `spec_yaml` (the lines under `spec:`, without
    /// `broker`) applied.
    pub async fn with_pipeline(label: &str, spec_yaml: &str) -> Self {
        let vhost = TestVhost::new(&format!("cli-{label}")).await;
        let yaml = format!(
            "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {{name: {PIPELINE}, namespace: {NAMESPACE}}}\nspec:\n  broker: {{secretRef: {{name: r}}}}\n{spec_yaml}"
        );
        let (_, plan, admin) = vhost.apply_manifest(NAMESPACE, &yaml).await;
        admin.close().await;
        Self { vhost, plan }
    }

    /// A vhost with one output `out` bound to everything (`#`).
    pub async fn new(label: &str) -> Self {
        Self::with_pipeline(label, "  outputs:\n    - {name: out, sink: {stdout: {}}}\n").await
    }

    pub fn main_queue(&self) -> String {
        self.plan.names.main_queue("out")
    }

    pub fn dlq(&self) -> String {
        self.plan.names.dead_letter_queue("out")
    }

    pub fn exchange(&self) -> String {
        self.plan.exchange().name.clone()
    }

    /// Runs `logstream <args>` against this vhost and pipeline namespace.
    pub async fn logstream(&self, args: &[&str]) -> Run {
        self.logstream_with_stdin(args, None).await
    }

    /// Runs `logstream <args>` with `stdin` piped in (or closed when `None`).
    pub async fn logstream_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut full = vec!["--vhost", &self.vhost.name, "-n", NAMESPACE];
        full.extend_from_slice(args);
        run_logstream(&full, stdin).await
    }
}

impl std::ops::Deref for PipelineVhost {
    type Target = TestVhost;

    fn deref(&self) -> &TestVhost {
        &self.vhost
    }
}

/// What a run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The binary, with the test broker's URIs unless `args` name others.
pub fn command(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_logstream"));
    cmd.env_remove("LOGSTREAM_AMQP_URI")
        .env_remove("LOGSTREAM_MANAGEMENT_URI")
        .env("LOGSTREAM_AMQP_URI", amqp_addr());
    if let Ok(management) = std::env::var("MANAGEMENT_ADDR") {
        cmd.env("LOGSTREAM_MANAGEMENT_URI", management);
    }
    cmd.args(args).kill_on_drop(true);
    cmd
}

/// Runs the binary to its end.
pub async fn run_logstream(args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = command(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn logstream");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).await.unwrap();
        drop(pipe);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("logstream finished within 120 s")
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A synthetic dead letter as the worker writes it.
#[derive(Clone)]
pub struct DeadLetterSpec<'a> {
    pub id: String,
    pub body: String,
    pub error: &'a str,
    pub class: &'a str,
    pub attempts: i64,
    pub origin: Option<&'a str>,
}

impl DeadLetterSpec<'_> {
    pub fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        let text = |s: &str| AMQPValue::LongString(LongString::from(s));
        headers.insert(
            contract::HEADER_ATTEMPT.into(),
            AMQPValue::LongLongInt(self.attempts),
        );
        headers.insert(contract::HEADER_ERROR.into(), text(self.error));
        headers.insert(contract::HEADER_ERROR_CLASS.into(), text(self.class));
        headers.insert(
            contract::HEADER_FIRST_FAILED_AT.into(),
            text("2026-05-01T12:00:00.000Z"),
        );
        if let Some(origin) = self.origin {
            headers.insert(contract::HEADER_ORIGIN_ROUTING_KEY.into(), text(origin));
        }
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(self.id.as_str().into())
            .with_timestamp(1_777_636_800)
            .with_priority(2)
            .with_headers(headers)
    }
}

/// Puts dead letters into `queue` directly (default exchange), confirmed, in order.
pub async fn put_dead_letters(vhost: &TestVhost, queue: &str, letters: &[DeadLetterSpec<'_>]) {
    let (connection, channel) = vhost.confirm_channel().await;
    for letter in letters {
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                letter.body.as_bytes(),
                letter.properties(),
            )
            .await
            .unwrap();
        drop(confirm);
    }
    let returned = channel.wait_for_confirms().await.unwrap();
    assert!(returned.is_empty(), "dead letters were returned");
    let _ = connection.close(200, "bye".into()).await;
}

/// The body of a message as text.
pub fn body(m: &Taken) -> String {
    m.text()
}

/// A header of a message as text.
pub fn header(m: &Taken, key: &str) -> Option<AMQPValue> {
    m.value(key)
}

/// `logstream dev -f manifest` on `vhost`, its dashboard on a free loopback port, its workers
/// (the real [`worker_binary`]) working in `dir`.
pub fn dev_command(
    vhost: &TestVhost,
    manifest: &str,
    dir: &std::path::Path,
) -> tokio::process::Command {
    let worker = worker_binary();
    command(&[
        "dev",
        "-f",
        manifest,
        "--vhost",
        &vhost.name,
        "--listen",
        "127.0.0.1:0",
        "--work-dir",
        dir.to_str().unwrap(),
        "--worker-binary",
        worker.to_str().unwrap(),
    ])
}

/// The `logstream-worker` binary next to `logstream`, built when missing (running only this
/// crate's tests does not build the worker crate's binary).
pub fn worker_binary() -> std::path::PathBuf {
    let worker = std::path::PathBuf::from(env!("CARGO_BIN_EXE_logstream"))
        .with_file_name("logstream-worker");
    if !worker.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "-q",
                "-p",
                "logstream-worker",
                "--bin",
                "logstream-worker",
            ])
            .status()
            .expect("run cargo build for logstream-worker");
        assert!(status.success(), "cargo build -p logstream-worker failed");
    }
    worker
}

/// `examples/quickstart.yaml` with its scaling changed by `edit`, written into `dir`.
pub fn quickstart_with(
    dir: &std::path::Path,
    edit: impl FnOnce(&mut serde_yaml::Value),
) -> std::path::PathBuf {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/quickstart.yaml"
    ))
    .unwrap();
    let mut manifest: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    edit(&mut manifest["spec"]["outputs"][0]["scaling"]);
    let path = dir.join("quickstart.yaml");
    std::fs::write(&path, serde_yaml::to_string(&manifest).unwrap()).unwrap();
    path
}
