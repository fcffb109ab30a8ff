//! Draining after a sink outage, against draining without one, side by side in one run on the
//! same broker, pipeline and sink (an HTTP sink in this process that answers 200, or 503 during
//! the outage):
//!
//! - no outage: the queue is filled with the backlog an outage would leave (rate × outage
//!   logs), then the release `logstream-worker` drains it; timed from its `/readyz` to its
//!   `logstream_messages_total{outcome="ok"}` reaching the backlog;
//! - outage: a worker runs while the sink answers 503 for the outage's length and logs arrive at
//!   the rate; then the sink answers 200 again and the same worker drains the backlog; timed from
//!   the sink's recovery to the same count. The worker's CPU during the outage is read from
//!   `/proc/<pid>/stat`.
//!
//! The ratio of the two drain rates shows whether a worker that sat through an outage (held
//! deliveries, cancelled consumer, probes) resumes at full speed. Settings by environment:
//! `LOGSTREAM_BENCH_OUTAGE_SECONDS` (default 600), `LOGSTREAM_BENCH_RATE` (logs/s, 200),
//! `LOGSTREAM_BENCH_QUEUE_TYPE` (`classic`), `AMQP_ADDR` / `MANAGEMENT_ADDR`.

use std::{
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, extract::State, http::StatusCode, routing::post};
use lapin::{
    BasicProperties, Channel, Confirmation,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};
use logstream_api::{
    manifest::parse_pipeline,
    plan,
    worker_config::{AMQP_URI_ENV, WorkerConfig},
};
use logstream_broker::{BrokerAdmin, BrokerEndpoint, ManagementClient};

mod common;

use common::{connect, endpoint, env_or, metric};

/// A log of the message contract, about 300 bytes.
fn body(seq: u64) -> Vec<u8> {
    serde_json::json!({
        "ts": "2024-05-01T10:00:00.123Z",
        "level": "info",
        "service": "bench",
        "seq": seq,
        "message": format!("log {seq} of the outage benchmark, {}", "x".repeat(160)),
    })
    .to_string()
    .into_bytes()
}

/// Publishes logs `from..to` with confirms awaited in windows.
async fn publish(channel: &Channel, queue: &str, from: u64, to: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut pending = Vec::new();
    for seq in from..to {
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(format!("outage-{seq}").into())
            .with_timestamp(now);
        pending.push(
            channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    &body(seq),
                    properties,
                )
                .await
                .expect("publish"),
        );
        if pending.len() >= 1000 {
            for c in pending.drain(..) {
                assert!(matches!(c.await.expect("confirm"), Confirmation::Ack(_)));
            }
        }
    }
    for c in pending {
        assert!(matches!(c.await.expect("confirm"), Confirmation::Ack(_)));
    }
}

/// The sink: 200, or 503 while `down`.
async fn sink(down: Arc<AtomicBool>) -> String {
    async fn answer(State(down): State<Arc<AtomicBool>>) -> StatusCode {
        if down.load(Ordering::Relaxed) {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
    }
    let app = Router::new().route("/logs", post(answer)).with_state(down);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/logs", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

struct Worker {
    child: Child,
    listen: String,
    client: reqwest::Client,
}

impl Worker {
    async fn start(endpoint: &BrokerEndpoint, config: &WorkerConfig, name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("logstream-bench-outage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = dir.join(format!("{name}.yaml"));
        std::fs::write(&config_path, config.to_yaml()).unwrap();
        let listen = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let child = Command::new(env!("CARGO_BIN_EXE_logstream-worker"))
            .arg("--config")
            .arg(&config_path)
            .arg("--listen")
            .arg(&listen)
            .env(
                AMQP_URI_ENV,
                endpoint.with_vhost(&config.vhost).amqp_uri_with_password(),
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start logstream-worker");
        let worker = Self {
            child,
            listen,
            client: reqwest::Client::new(),
        };
        while !worker
            .client
            .get(format!("http://{}/readyz", worker.listen))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        worker
    }

    async fn written(&self) -> f64 {
        metric(
            &self.client,
            &self.listen,
            "logstream_messages_total",
            &[("outcome", "ok")],
        )
        .await
        .unwrap_or(0.0)
    }

    /// Waits until `n` logs were written; returns when.
    async fn until_written(&self, n: u64) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(3600);
        while self.written().await < n as f64 {
            assert!(Instant::now() < deadline, "the worker did not finish");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Instant::now()
    }

    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<f64> = rest
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0.0))
            .collect();
        // utime and stime, in clock ticks (100 a second on Linux).
        (fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0)) / 100.0
    }

    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("a pid"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

async fn run(outage: Duration, rate: u64, queue_type: &str) {
    let endpoint = endpoint();
    let management = ManagementClient::new(endpoint.management().clone());
    let vhost = format!("logstream-bench-outage-{}", std::process::id());
    management.create_vhost(&vhost).await.expect("create vhost");
    management
        .grant_all(&vhost, endpoint.username())
        .await
        .expect("grant");
    let down = Arc::new(AtomicBool::new(false));
    let url = sink(Arc::clone(&down)).await;
    let yaml = format!(
        "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {{name: bench, namespace: bench}}\nspec:\n  broker: {{secretRef: {{name: r}}}}\n  queueType: {queue_type}\n  outputs:\n    - name: out\n      sink: {{http: {{url: \"{url}\"}}}}\n"
    );
    let spec = parse_pipeline(&yaml).expect("bench pipeline").spec;
    let mut topology = plan("bench", "bench", &spec).expect("valid");
    topology.vhost.clone_from(&vhost);
    let admin = BrokerAdmin::connect(&endpoint, &vhost)
        .await
        .expect("admin");
    admin.apply(&topology).await.expect("topology");
    admin.close().await;
    let config = WorkerConfig::from_plan(&topology, "bench", "bench", &spec, "out").unwrap();
    let queue = config.queue.clone();
    let connection = connect(&endpoint, &vhost).await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let backlog = rate * outage.as_secs();

    // No outage: the same backlog, already waiting.
    publish(&channel, &queue, 0, backlog).await;
    let worker = Worker::start(&endpoint, &config, "baseline").await;
    let start = Instant::now();
    let end = worker.until_written(backlog).await;
    let baseline = backlog as f64 / (end - start).as_secs_f64();
    worker.stop();
    eprintln!("no outage: {backlog} logs drained at {baseline:.0} logs/s");

    // The outage: logs arrive at `rate` while the sink answers 503.
    down.store(true, Ordering::SeqCst);
    let worker = Worker::start(&endpoint, &config.clone(), "outage").await;
    let outage_start = Instant::now();
    let mut cpu_from = None;
    let mut sent = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while outage_start.elapsed() < outage {
        tick.tick().await;
        let due = ((outage_start.elapsed().as_secs_f64() * rate as f64) as u64).min(backlog);
        publish(&channel, &queue, backlog + sent, backlog + due).await;
        sent = due;
        if cpu_from.is_none() && outage_start.elapsed() >= Duration::from_secs(10) {
            cpu_from = Some((worker.cpu_seconds(), Instant::now()));
        }
    }
    publish(&channel, &queue, backlog + sent, 2 * backlog).await;
    let cpu = cpu_from.map_or(f64::NAN, |(cpu, at)| {
        (worker.cpu_seconds() - cpu) / at.elapsed().as_secs_f64()
    });
    down.store(false, Ordering::SeqCst);
    let recovered = Instant::now();
    let end = worker.until_written(backlog).await;
    let after = backlog as f64 / (end - recovered).as_secs_f64();
    worker.stop();
    eprintln!(
        "after a {}s outage: {backlog} logs drained at {after:.0} logs/s; worker CPU during the outage {:.2} % of a core",
        outage.as_secs(),
        cpu * 100.0
    );
    let _ = connection.close(200, "bye".into()).await;
    let _ = management.delete_vhost(&vhost).await;
    println!(
        "\n| queue type | outage | backlog (logs) | drain, no outage (logs/s) | drain after the outage (logs/s) | ratio | worker CPU during the outage |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {queue_type} | {}s at {rate} logs/s | {backlog} | {baseline:.0} | {after:.0} | {:.2} | {:.2} % of a core |",
        outage.as_secs(),
        after / baseline,
        cpu * 100.0
    );
}

fn main() {
    let outage = Duration::from_secs(env_or("LOGSTREAM_BENCH_OUTAGE_SECONDS", 600));
    let rate = env_or("LOGSTREAM_BENCH_RATE", 200u64);
    let queue_type: String = env_or("LOGSTREAM_BENCH_QUEUE_TYPE", "classic".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(outage, rate, &queue_type));
}
