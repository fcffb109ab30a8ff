//! The worker process before and around its broker connection: unusable settings exit 1 with
//! one `error: ...` line on stderr (LogStream's exit codes, `logstream_api::exit`), a port
//! that cannot be bound exits 2; `/healthz` answers at once; `/readyz` only once the topology
//! exists and the consumer runs.

mod support;

use std::{process::Command, time::Duration};

use logstream_api::{exit, worker_config::AMQP_URI_ENV};
use support::{
    PipelineOptions, SinkServer, TestDir, TestPipeline, TestVhost, WorkerProcess, eventually,
};

fn worker_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_logstream-worker"))
}

/// The one line a failure leaves on stderr.
fn error_line(stderr: &[u8]) -> String {
    let stderr = String::from_utf8_lossy(stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

#[test]
fn a_missing_or_invalid_config_exits_1_with_one_error_line() {
    let dir = TestDir::new("exit-1");
    let config = dir.path().join("worker.yaml");
    std::fs::write(&config, "not: [a, worker, config").unwrap();

    let out = worker_command()
        .arg("--config")
        .arg(&config)
        .env_remove(AMQP_URI_ENV)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(i32::from(exit::USAGE)));
    let stderr = error_line(&out.stderr);
    assert!(
        stderr.contains("failed to load configuration file"),
        "{stderr}"
    );

    let out = worker_command()
        .arg("--config")
        .arg(dir.path().join("absent.yaml"))
        .env(AMQP_URI_ENV, "amqp://guest:guest@127.0.0.1:5672/%2f")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(i32::from(exit::USAGE)));
    assert!(error_line(&out.stderr).contains("failed to read configuration file"));
}

#[test]
fn a_command_line_mistake_exits_1_and_help_tells_the_exit_codes() {
    let out = worker_command().output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(i32::from(exit::USAGE)),
        "--config is required"
    );
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "));

    let out = worker_command()
        .args(["--config", "w.yaml", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(i32::from(exit::USAGE)));

    for flag in ["--help", "-h"] {
        let out = worker_command().arg(flag).output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.trim_end().ends_with(exit::HELP), "{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_that_cannot_be_bound_exits_2_with_one_error_line() {
    let vhost = TestVhost::new("exit-2-listen").await;
    let pipeline = TestPipeline::declare(&vhost, &PipelineOptions::default()).await;
    let dir = TestDir::new("exit-2-listen");
    let config = dir.path().join("worker.yaml");
    std::fs::write(&config, pipeline.config.to_yaml()).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();

    let out = worker_command()
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(&address)
        .env(AMQP_URI_ENV, vhost.uri())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(i32::from(exit::FAILURE)));
    let stderr = error_line(&out.stderr);
    assert!(
        stderr.contains(&format!("failed to listen on {address}")),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_invalid_broker_uri_exits_1_without_showing_the_password() {
    let vhost = TestVhost::new("exit-1-env").await;
    let pipeline = TestPipeline::declare(&vhost, &PipelineOptions::default()).await;
    let dir = TestDir::new("exit-1-env");
    let config = dir.path().join("worker.yaml");
    std::fs::write(&config, pipeline.config.to_yaml()).unwrap();
    for (uri, expected) in [
        (None, "LOGSTREAM_AMQP_URI is not set"),
        (
            Some("http://user:s3cret@host"),
            "failed to read environment variable LOGSTREAM_AMQP_URI",
        ),
    ] {
        let mut command = worker_command();
        command.arg("--config").arg(&config);
        match uri {
            Some(uri) => command.env(AMQP_URI_ENV, uri),
            None => command.env_remove(AMQP_URI_ENV),
        };
        let out = command.output().unwrap();
        assert_eq!(out.status.code(), Some(i32::from(exit::USAGE)));
        let stderr = error_line(&out.stderr);
        assert!(
            stderr.contains(expected) && !stderr.contains("s3cret"),
            "{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_once_the_topology_exists_and_the_consumer_runs() {
    let vhost = TestVhost::new("readyz").await;
    // The configuration of a pipeline whose topology is not declared yet.
    let other = TestVhost::new("readyz-plan").await;
    let pipeline = TestPipeline::declare(&other, &PipelineOptions::default()).await;
    let sink = SinkServer::accepting().await;
    let dir = TestDir::new("readyz");
    let mut config = pipeline.config_for(&sink.url);
    config.vhost.clone_from(&vhost.vhost);
    let worker = WorkerProcess::spawn(&dir, &vhost, &config);

    eventually(Duration::from_secs(10), "/healthz", || async {
        matches!(worker.get("/healthz").await, Some((200, _))).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "the missing queue reported",
        || async { worker.log().contains("failed to find queue").then_some(()) },
    )
    .await;
    assert_eq!(worker.get("/readyz").await.map(|r| r.0), Some(503));

    TestPipeline::declare(&vhost, &PipelineOptions::default()).await;
    worker.wait_ready().await;
    let (status, metrics) = worker.get("/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("logstream_messages_total"), "{metrics}");
}
