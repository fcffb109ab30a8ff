//! Test harness for the worker against the real RabbitMQ on loopback, a real HTTP sink server
//! started by the test, and the real `logstream-worker` binary.
//!
//! `AMQP_ADDR` (default `amqp://guest:guest@127.0.0.1:5672/%2f`) and optional `MANAGEMENT_ADDR`
//! name the broker, as in the operator's harness. Every test gets its own vhost (deleted on
//! drop, pass or fail), its own temporary directory, its own sink server and worker processes
//! (killed on drop).

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use lapin::{BasicProperties, Channel, Confirmation, options::BasicPublishOptions};
use logstream_api::{
    LogPipelineSpec, TopologyPlan,
    manifest::parse_pipeline,
    pipeline::{HttpFormat, HttpSink, SinkSpec},
    plan,
    worker_config::{AMQP_URI_ENV, WorkerConfig},
};
// Not every test binary uses every helper.
#[allow(unused_imports)]
pub use logstream_testkit::{
    Taken, TestBroker as Broker, TestVhost, endpoint, eventually, free_port, unique,
};
use logstream_worker::metrics::sample;
use nix::{sys::signal, unistd::Pid};
use serde_json::Value;

/// Namespace of every test pipeline.
pub const NAMESPACE: &str = "test";
/// Name of every test pipeline.
pub const PIPELINE: &str = "app";
/// Name of the output every test pipeline has.
pub const OUTPUT: &str = "out";

/// Both queue types a pipeline may have.
pub const QUEUE_TYPES: [&str; 2] = ["classic", "quorum"];

/// One test per queue type: `name::classic` and `name::quorum` run `body` with the queue type
/// bound to the given identifier.
#[macro_export]
macro_rules! on_both_queue_types {
    ($(#[$meta:meta])* async fn $name:ident($queue_type:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($queue_type: &'static str) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn classic() {
                run("classic").await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn quorum() {
                run("quorum").await;
            }
        }
    };
}

/// A temporary directory, removed on drop.
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(unique(&format!("logstream-worker-{label}")));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How a test pipeline looks.
#[derive(Clone, Debug)]
pub struct PipelineOptions {
    pub queue_type: &'static str,
    pub max_attempts: u32,
    pub backoff: &'static str,
    pub prefetch: u16,
    pub batch_max: u32,
    pub linger: &'static str,
    pub dlq_max_length: Option<u64>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            queue_type: "classic",
            max_attempts: 3,
            backoff: "[100ms, 200ms]",
            prefetch: 50,
            batch_max: 20,
            linger: "20ms",
            dlq_max_length: None,
        }
    }
}

/// A pipeline declared on a broker: its plan and its worker's configuration.
pub struct TestPipeline {
    pub spec: LogPipelineSpec,
    pub plan: TopologyPlan,
    pub config: WorkerConfig,
}

impl TestPipeline {
    /// A pipeline with the default options on queues of `queue_type`.
    pub async fn of_type(broker: &Broker, queue_type: &'static str) -> Self {
        Self::declare(
            broker,
            &PipelineOptions {
                queue_type,
                ..PipelineOptions::default()
            },
        )
        .await
    }

    /// Declares pipeline `test/app` with one output `out` on `broker`, as the operator would.
    pub async fn declare(broker: &Broker, options: &PipelineOptions) -> Self {
        let dlq = options
            .dlq_max_length
            .map(|n| format!("      deadLetter: {{maxLength: {n}}}\n"))
            .unwrap_or_default();
        let yaml = format!(
            "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {{name: {PIPELINE}, namespace: {NAMESPACE}}}\nspec:\n  broker: {{secretRef: {{name: r}}}}\n  queueType: {}\n  outputs:\n    - name: {OUTPUT}\n      retry: {{maxAttempts: {}, backoff: {}}}\n{dlq}      sink: {{http: {{url: \"http://placeholder:1/\"}}}}\n      worker: {{prefetch: {}, batch: {{maxMessages: {}, linger: {}}}}}\n",
            options.queue_type,
            options.max_attempts,
            options.backoff,
            options.prefetch,
            options.batch_max,
            options.linger,
        );
        let spec = parse_pipeline(&yaml).expect("test pipeline parses").spec;
        let mut plan = plan(NAMESPACE, PIPELINE, &spec).expect("test pipeline is valid");
        plan.vhost.clone_from(&broker.vhost);
        let admin = broker.admin().await;
        admin.apply(&plan).await.expect("topology applies");
        admin.close().await;
        let config = WorkerConfig::from_plan(&plan, NAMESPACE, PIPELINE, &spec, OUTPUT)
            .expect("the output exists");
        Self { spec, plan, config }
    }

    /// The exchange producers publish to.
    pub fn exchange(&self) -> &str {
        &self.config.exchange
    }

    /// The worker configuration writing Elasticsearch bulk requests to the sink at `url`.
    pub fn config_for_elasticsearch(&self, url: &str) -> WorkerConfig {
        let mut config = self.config_for(url);
        config.sink = SinkSpec::Http(HttpSink {
            url: url.to_owned(),
            format: Some(HttpFormat::Elasticsearch),
            timeout: Some(logstream_api::Duration::from_secs(5)),
            ..HttpSink::default()
        });
        config
    }

    /// The worker configuration writing to the HTTP sink at `url` (JSON arrays).
    pub fn config_for(&self, url: &str) -> WorkerConfig {
        let mut config = self.config.clone();
        config.sink = SinkSpec::Http(HttpSink {
            url: url.to_owned(),
            format: Some(HttpFormat::Json),
            timeout: Some(logstream_api::Duration::from_secs(5)),
            ..HttpSink::default()
        });
        config.shutdown_grace = logstream_api::Duration::from_secs(10);
        config
    }
}

/// A log body: `{"ts", "level", "service", "message": <message>, "seq": <seq>}`.
pub fn log_body(message: &str, level: &str, seq: u64) -> Vec<u8> {
    serde_json::json!({
        "ts": "2024-05-01T10:00:00Z",
        "level": level,
        "service": "api",
        "message": message,
        "seq": seq,
    })
    .to_string()
    .into_bytes()
}

/// Producer properties of the message contract: persistent, JSON, id, timestamp, priority.
pub fn log_properties(message_id: &str, priority: u8) -> BasicProperties {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(message_id.into())
        .with_timestamp(now)
        .with_priority(priority)
}

/// Publishes one message and waits for its confirm.
pub async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(
        matches!(confirm, Confirmation::Ack(None)),
        "the broker stored the message: {confirm:?}"
    );
}

/// Publishes many messages with confirms awaited in windows (much faster than one by one).
pub async fn publish_many(
    channel: &Channel,
    exchange: &str,
    messages: impl IntoIterator<Item = (String, Vec<u8>, BasicProperties)>,
) {
    let mut pending = Vec::new();
    for (routing_key, body, properties) in messages {
        let confirm = channel
            .basic_publish(
                exchange.into(),
                routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &body,
                properties,
            )
            .await
            .expect("publish");
        pending.push(confirm);
        if pending.len() >= 500 {
            for c in pending.drain(..) {
                assert!(matches!(c.await.expect("confirm"), Confirmation::Ack(None)));
            }
        }
    }
    for c in pending {
        assert!(matches!(c.await.expect("confirm"), Confirmation::Ack(None)));
    }
}

/// What the sink server answers to one request, given its logs.
pub type Behaviour = dyn Fn(&[Value]) -> Reply + Send + Sync;

/// An answer of the sink server.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl From<u16> for Reply {
    fn from(status: u16) -> Self {
        Self {
            status,
            body: String::new(),
        }
    }
}

/// An Elasticsearch bulk answer (200) giving each log the item status `status_of(log)`.
pub fn bulk_reply(logs: &[Value], status_of: impl Fn(&Value) -> u16) -> Reply {
    let mut errors = false;
    let items: Vec<Value> = logs
        .iter()
        .map(|log| {
            let status = status_of(log);
            errors |= status >= 300;
            serde_json::json!({"index": {
                "_id": log["logstream"]["message_id"],
                "status": status,
                "error": (status >= 300).then(|| serde_json::json!({"type": "test_error"})),
            }})
        })
        .collect();
    Reply {
        status: 200,
        body: serde_json::json!({"took": 1, "errors": errors, "items": items}).to_string(),
    }
}

/// The logs an Elasticsearch-style sink stored (item status under 300), with their
/// `logstream.attempt`, in arrival order.
pub fn written_item_attempts(sink: &SinkServer) -> Vec<(String, u64)> {
    let mut written = Vec::new();
    for r in sink.received() {
        let answer: Value = serde_json::from_str(&r.reply).unwrap_or_default();
        for (i, log) in r.logs.iter().enumerate() {
            let status = answer["items"][i]["index"]["status"]
                .as_u64()
                .unwrap_or(500);
            if (200..300).contains(&r.status) && status < 300 {
                written.push((message_of(log), attempt_of(log)));
            }
        }
    }
    written
}

/// How many times an Elasticsearch-style sink stored each message.
pub fn written_item_counts(sink: &SinkServer) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (message, _) in written_item_attempts(sink) {
        *counts.entry(message).or_default() += 1;
    }
    counts
}

/// One request the sink server received.
#[derive(Clone, Debug)]
pub struct Received {
    pub status: u16,
    pub logs: Vec<Value>,
    pub at: std::time::Instant,
    /// The answer's body.
    pub reply: String,
}

struct SinkState {
    received: Mutex<Vec<Received>>,
    behaviour: Box<Behaviour>,
    delay: Duration,
    /// When set, every request is answered with this status, whatever the behaviour says.
    down: std::sync::atomic::AtomicU16,
}

/// An HTTP sink on 127.0.0.1 that records every request (JSON arrays of logs) and answers
/// what its behaviour says.
pub struct SinkServer {
    pub url: String,
    state: Arc<SinkState>,
    task: tokio::task::JoinHandle<()>,
}

impl SinkServer {
    /// A sink that answers 200 to everything.
    pub async fn accepting() -> Self {
        Self::start(|_| 200).await
    }

    /// A sink answering `behaviour(logs)`.
    pub async fn start<R: Into<Reply>>(
        behaviour: impl Fn(&[Value]) -> R + Send + Sync + 'static,
    ) -> Self {
        Self::start_with_delay(Duration::ZERO, behaviour).await
    }

    /// A sink that takes `delay` to answer `behaviour(logs)` to each request.
    pub async fn start_with_delay<R: Into<Reply>>(
        delay: Duration,
        behaviour: impl Fn(&[Value]) -> R + Send + Sync + 'static,
    ) -> Self {
        let state = Arc::new(SinkState {
            received: Mutex::new(Vec::new()),
            behaviour: Box::new(move |logs| behaviour(logs).into()),
            delay,
            down: std::sync::atomic::AtomicU16::new(0),
        });
        let app = Router::new()
            .route("/logs", post(receive))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}/logs"),
            state,
            task,
        }
    }

    /// From now on answers every request with `status` (an outage: 503, a misconfiguration:
    /// 401), or (`None`) as its behaviour says again.
    pub fn set_down(&self, status: Option<u16>) {
        self.state
            .down
            .store(status.unwrap_or(0), std::sync::atomic::Ordering::SeqCst);
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// How many logs were written (answered with 2xx), duplicates included.
    pub fn written_len(&self) -> usize {
        self.state
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .map(|r| r.logs.len())
            .sum()
    }

    /// Logs of the requests answered with 2xx, in arrival order.
    pub fn written(&self) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .flat_map(|r| r.logs)
            .collect()
    }

    /// How many times each message (by its `message` field) was written.
    pub fn written_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for log in self.written() {
            *counts.entry(message_of(&log)).or_default() += 1;
        }
        counts
    }

    /// How many requests carried a log whose `message` is `message` (whatever the answer).
    pub fn attempts_of(&self, message: &str) -> usize {
        self.received()
            .iter()
            .filter(|r| r.logs.iter().any(|l| message_of(l) == message))
            .count()
    }
}

impl Drop for SinkServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(State(state): State<Arc<SinkState>>, body: Bytes) -> (StatusCode, String) {
    let at = std::time::Instant::now();
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    let logs = parse_logs(&body);
    let down = state.down.load(std::sync::atomic::Ordering::SeqCst);
    let reply = if down == 0 {
        (state.behaviour)(&logs)
    } else {
        Reply::from(down)
    };
    state.received.lock().unwrap().push(Received {
        status: reply.status,
        logs,
        at,
        reply: reply.body.clone(),
    });
    (
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        reply.body,
    )
}

/// The logs in a request body: a JSON array, or JSON lines (NDJSON, or an Elasticsearch bulk
/// body whose action lines are skipped because they have no `message`).
fn parse_logs(body: &[u8]) -> Vec<Value> {
    if let Ok(logs) = serde_json::from_slice::<Vec<Value>>(body) {
        return logs;
    }
    body.split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
        .filter(|v| v.get("message").is_some())
        .collect()
}

/// The `message` field of a log.
pub fn message_of(log: &Value) -> String {
    log["message"].as_str().unwrap_or_default().to_owned()
}

/// The worker's `logstream.attempt` on a log the sink received.
pub fn attempt_of(log: &Value) -> u64 {
    log["logstream"]["attempt"].as_u64().unwrap_or_default()
}

/// A running `logstream-worker` process.
pub struct WorkerProcess {
    child: Mutex<Child>,
    pid: u32,
    pub listen: SocketAddr,
    pub stderr: PathBuf,
}

impl WorkerProcess {
    /// Starts the worker binary with `config` (written into `dir`) against `broker`, on a
    /// port the system picks (read back from the worker's log, so parallel tests never race
    /// for a port).
    pub fn spawn(dir: &TestDir, broker: &Broker, config: &WorkerConfig) -> Self {
        let name = unique("worker");
        let config_path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&config_path, config.to_yaml()).unwrap();
        let stderr = dir.path().join(format!("{name}.stderr"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_logstream-worker"))
            .arg("--config")
            .arg(&config_path)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env(AMQP_URI_ENV, broker.uri())
            .env("RUST_LOG", "info,logstream_worker=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start logstream-worker");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let listen = loop {
            let log = std::fs::read_to_string(&stderr).unwrap_or_default();
            let bound = log.lines().find_map(|l| {
                l.split_once("listen=")?
                    .1
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            });
            if let Some(addr) = bound {
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("logstream-worker exited with {status} before listening:\n{log}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "logstream-worker did not listen within 20s:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        Self {
            pid: child.id(),
            child: Mutex::new(child),
            listen,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The worker's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// GETs `path` on the worker's HTTP port.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::get(format!("http://{}{path}", self.listen))
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        eventually(
            Duration::from_secs(20),
            "the worker to be ready",
            || async { matches!(self.get("/readyz").await, Some((200, _))).then_some(()) },
        )
        .await;
    }

    /// The value of metric `name` with `labels` (among others) from `/metrics`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let (_, text) = self.get("/metrics").await?;
        sample(&text, name, labels)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        signal::kill(Pid::from_raw(self.pid() as i32), signal::Signal::SIGTERM).unwrap();
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        let child = self.child.get_mut().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The exit status once the process has exited, or `None` after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.get_mut().unwrap().try_wait().unwrap() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// True while the process runs.
    pub fn running(&self) -> bool {
        matches!(self.child.lock().unwrap().try_wait(), Ok(None))
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.running() {
            self.kill();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- worker {} log ----\n{}",
                self.pid,
                tail(&self.log(), 80)
            );
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sends SIGKILL to process `pid` (a worker the test started), ignoring a process already gone.
pub fn kill_pid(pid: u32) {
    let _ = signal::kill(Pid::from_raw(pid as i32), signal::Signal::SIGKILL);
}

/// Consumers and unacknowledged messages of `queue`, as the management API reports them
/// (sampled: callers poll).
pub async fn consumers_and_unacked(vhost: &TestVhost, queue: &str) -> Option<(u64, u64)> {
    let queues = vhost.management().queues(&vhost.vhost).await.ok()?;
    let q = queues.into_iter().find(|q| q.name == queue)?;
    Some((q.consumers?, q.messages_unacknowledged?))
}

/// CPU seconds (user + system) process `pid` used so far, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15: indexes 11 and 12 after the state.
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The Redis the tests use: `REDIS_URL`, else the one of `scripts/ensure-redis.sh`.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// `config` with the shared dedup store at `url`: a Secret directory in `dir` holding `url`.
pub fn with_redis(dir: &TestDir, mut config: WorkerConfig, url: &str) -> WorkerConfig {
    use logstream_api::worker_config::{SecretFiles, SecretUse};
    // A namespace of its own: the store's keys are per output, and tests run side by side.
    config.namespace = unique("test");
    let secret = dir.path().join(unique("dedup-redis"));
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("url"), format!("{url}\n")).unwrap();
    config.secrets.insert(
        SecretUse::DedupRedis,
        SecretFiles {
            secret: "dedup-redis".into(),
            dir: secret.display().to_string(),
        },
    );
    config
}

/// A small pseudo-random sequence (xorshift) for test timings, seeded from the clock and
/// printed so that a run can be told apart.
pub struct Random(u64);

impl Random {
    pub fn seeded() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            | 1;
        eprintln!("random seed {seed}");
        Self(u64::from(seed))
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}
