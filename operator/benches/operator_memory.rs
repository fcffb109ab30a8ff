//! What the `logstream-operator` binary costs itself and the broker while it manages N
//! LogPipelines: the Kubernetes API is the fake API server (over HTTP, on loopback), the
//! broker is the real RabbitMQ (a vhost and a user of its own). Three runs in one invocation:
//! idle (0 pipelines), 100 pipelines of one output (target: at most 25 MiB RSS), and 1,000
//! pipelines of two outputs sharing the broker (targets: first pass over all within 60 s,
//! RSS at most 64 MiB, in the steady state at most 2 management API requests per second and
//! at most 1 new AMQP connection per minute in total).
//!
//! How the broker's side is counted: the operator reaches the broker only through two
//! counting TCP proxies on loopback (the Secret's `uri` and `managementUri` name them): one
//! counts the AMQP connections it opens, the other the HTTP requests it sends (request lines
//! in the client's bytes). The steady state is the measuring window after every pipeline was
//! reconciled once and the first listings were made (a 30 s settle).
//!
//! `make bench-operator` (= `cargo bench -p logstream-operator --profile operator --bench
//! operator_memory`: the size-optimised build the operator image ships).
//! `BENCH_PIPELINES` (default `100,1000`: the loaded sizes) and `BENCH_SECONDS` (default 60:
//! the measuring window) change the load; `BENCH_LOG_DIR` keeps the operator's logs;
//! `BENCH_WRAPPER` runs the operator under a profiler; `BENCH_OPERATOR_ARGS` gives it flags
//! beyond the defaults (e.g. `--recheck-interval=5m`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use k8s_openapi::ByteString;
use serde_json::{Value, json};
use support::{TestUser, TestVhost, encode, endpoint, fake_api::FakeApi, unique};

/// RSS targets by size.
const TARGET_100_MIB: f64 = 25.0;
const TARGET_1000_MIB: f64 = 64.0;
/// Steady-state targets of the shared broker (1,000 pipelines).
const FIRST_PASS_TARGET: Duration = Duration::from_secs(60);
const MANAGEMENT_PER_SECOND_TARGET: f64 = 2.0;
const CONNECTIONS_PER_MINUTE_TARGET: f64 = 1.0;
/// Time after the first pass before the window opens (first listings, autoscalers start).
const SETTLE: Duration = Duration::from_secs(30);

struct Run {
    pipelines: usize,
    outputs: usize,
    /// Management API requests and new AMQP connections in the window.
    management_requests: u64,
    amqp_connections: u64,
    first_pass: Duration,
    reconciles: u64,
    window: Duration,
    rss_median: f64,
    rss_max: f64,
    hwm: f64,
    /// Of the RSS at the end: heap and other anonymous memory, and pages of the binary and
    /// libraries.
    anon: f64,
    file: f64,
    threads: u64,
}

fn main() {
    let sizes: Vec<usize> = std::env::var("BENCH_PIPELINES")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let seconds: u64 = env_or("BENCH_SECONDS", 60);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "broker: RabbitMQ {} at {}",
        runtime.block_on(logstream_testkit::rabbitmq_version()),
        endpoint().amqp().authority.port
    );
    // Each row as soon as its run ends, so that a later run that fails keeps the earlier ones.
    println!(
        "\n| pipelines × outputs | first pass over all | reconciles in window | window | RSS median | RSS max | VmHWM (peak) | anonymous / file at end | threads | management API requests/s | new AMQP connections/min |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let runs = runtime.block_on(async {
        let mut runs = vec![row(run(0, 1, Duration::from_secs(seconds)).await)];
        for &n in &sizes {
            // The shared-broker size has two outputs per pipeline.
            let outputs = if n >= 1000 { 2 } else { 1 };
            runs.push(row(run(n, outputs, Duration::from_secs(seconds)).await));
        }
        runs
    });
    let mut missed = Vec::new();
    for r in runs.iter().filter(|r| r.pipelines > 0) {
        let target = if r.pipelines >= 1000 {
            TARGET_1000_MIB
        } else {
            TARGET_100_MIB
        };
        let mut check = |what: String, met: bool| {
            println!("target: {what}: {}", if met { "met" } else { "MISSED" });
            if !met {
                missed.push(what);
            }
        };
        check(
            format!(
                "peak RSS with {} pipelines <= {target} MiB ({:.1} MiB)",
                r.pipelines, r.hwm
            ),
            r.hwm <= target,
        );
        if r.pipelines >= 1000 {
            let secs = r.window.as_secs_f64();
            check(
                format!(
                    "first pass over {} pipelines <= {} s ({:.1} s)",
                    r.pipelines,
                    FIRST_PASS_TARGET.as_secs(),
                    r.first_pass.as_secs_f64()
                ),
                r.first_pass <= FIRST_PASS_TARGET,
            );
            let rate = r.management_requests as f64 / secs;
            check(
                format!(
                    "management API requests <= {MANAGEMENT_PER_SECOND_TARGET}/s ({rate:.2}/s)"
                ),
                rate <= MANAGEMENT_PER_SECOND_TARGET,
            );
            let per_minute = r.amqp_connections as f64 * 60.0 / secs;
            check(
                format!(
                    "new AMQP connections <= {CONNECTIONS_PER_MINUTE_TARGET}/min ({per_minute:.2}/min)"
                ),
                per_minute <= CONNECTIONS_PER_MINUTE_TARGET,
            );
        }
    }
    if !missed.is_empty() {
        std::process::exit(1);
    }
}

/// Prints the table row of `r`.
fn row(r: Run) -> Run {
    let secs = r.window.as_secs_f64();
    println!(
        "| {} × {} | {:.1} s | {} | {} s | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} / {:.1} MiB | {} | {:.2} ({} in {} s) | {:.2} ({}) |",
        r.pipelines,
        r.outputs,
        r.first_pass.as_secs_f64(),
        r.reconciles,
        r.window.as_secs(),
        r.rss_median,
        r.rss_max,
        r.hwm,
        r.anon,
        r.file,
        r.threads,
        r.management_requests as f64 / secs,
        r.management_requests,
        r.window.as_secs(),
        r.amqp_connections as f64 * 60.0 / secs,
        r.amqp_connections,
    );
    r
}

/// A TCP proxy on loopback to `upstream` that counts the connections it accepts and, when
/// `http`, the HTTP requests in the client's bytes (request lines ending in ` HTTP/1.1`).
struct CountingProxy {
    address: SocketAddr,
    connections: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

impl CountingProxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let (c, r) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::Relaxed);
                let (upstream, requests) = (upstream.clone(), r.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        let mut tail: Vec<u8> = Vec::new();
                        while let Ok(n) = cr.read(&mut buf).await {
                            if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            tail.extend_from_slice(&buf[..n]);
                            let pattern = b" HTTP/1.1\r\n";
                            let found =
                                tail.windows(pattern.len()).filter(|w| w == pattern).count();
                            requests.fetch_add(found as u64, Ordering::Relaxed);
                            let keep = tail.len().min(pattern.len() - 1);
                            tail.drain(..tail.len() - keep);
                        }
                        let _ = sw.shutdown().await;
                    };
                    let down = async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                        let _ = cw.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Self {
            address,
            connections,
            requests,
        }
    }
}

async fn run(pipelines: usize, outputs: usize, window: Duration) -> Run {
    let vhost = TestVhost::new("bench").await;
    let _cleanup = VhostCleanup(vhost.name.clone());
    let user = TestUser::new(&vhost).await;
    let a = endpoint().amqp();
    let amqp = CountingProxy::start(format!("{}:{}", a.authority.host, a.authority.port)).await;
    let m = endpoint().management().base.clone();
    let management = CountingProxy::start(format!(
        "{}:{}",
        m.host_str().unwrap(),
        m.port_or_known_default().unwrap()
    ))
    .await;
    let uri = format!(
        "amqp://{}:{}@{}/{}",
        encode(&user.name),
        encode(&user.password),
        amqp.address,
        encode(&vhost.name)
    );
    let bytes = |s: String| serde_json::to_value(ByteString(s.into_bytes())).unwrap();
    let fake = FakeApi::start(
        (0..pipelines).map(|i| pipeline(i, outputs)).collect(),
        vec![json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "rabbitmq", "namespace": "bench"},
            "data": {
                "uri": bytes(uri),
                "managementUri": bytes(format!("http://{}", management.address)),
            }
        })],
    )
    .await;
    let dir = std::env::temp_dir().join(unique("logstream-bench"));
    std::fs::create_dir_all(&dir).unwrap();
    let port = logstream_testkit::free_port();
    let binary = env!("CARGO_BIN_EXE_logstream-operator");
    // BENCH_WRAPPER (e.g. `heaptrack -o /tmp/operator`) runs the operator under a profiler;
    // the RSS figures then include the profiler.
    let wrapper = std::env::var("BENCH_WRAPPER").unwrap_or_default();
    let mut command: Vec<&str> = wrapper.split_whitespace().collect();
    command.push(binary);
    // BENCH_OPERATOR_ARGS (e.g. `--recheck-interval=5m`): flags beyond the defaults.
    let extra = std::env::var("BENCH_OPERATOR_ARGS").unwrap_or_default();
    let mut child = Guard(
        Command::new(command[0])
            .args(&command[1..])
            .env("KUBECONFIG", fake.kubeconfig(&dir))
            .args([
                &format!("--listen=127.0.0.1:{port}"),
                "--lease-namespace=bench",
                "--identity=bench-operator",
            ])
            .args(extra.split_whitespace())
            .stdout(log_target(pipelines))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Under a wrapper the operator is a descendant of the spawned process: measure and stop
    // the operator itself.
    let pid = if wrapper.is_empty() {
        child.0.id()
    } else {
        operator_pid(binary).await
    };

    let started = Instant::now();
    let mut samples = Vec::new();
    // Until every pipeline has a status (for 0 pipelines: until the operator leads).
    loop {
        samples.push(proc_status(pid, "VmRSS:"));
        let done = if pipelines == 0 {
            metrics(port).await.contains("logstream_operator_leader 1")
        } else {
            fake.pipelines_with_status() == pipelines
        };
        if done {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {} of {pipelines} pipelines reconciled",
            fake.pipelines_with_status()
        );
        assert!(child.0.try_wait().unwrap().is_none(), "the operator exited");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first_pass = started.elapsed();
    assert_eq!(fake.ready_pipelines(), pipelines, "every pipeline Ready");
    if pipelines > 0 {
        let settle = Instant::now();
        while settle.elapsed() < SETTLE {
            samples.push(proc_status(pid, "VmRSS:"));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    let patches_before = fake.status_patches();
    let (requests_before, connections_before) = (
        management.requests.load(Ordering::Relaxed),
        amqp.connections.load(Ordering::Relaxed),
    );
    let window_start = Instant::now();
    while window_start.elapsed() < window {
        samples.push(proc_status(pid, "VmRSS:"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let reconciles = fake.status_patches() - patches_before;
    let management_requests = management.requests.load(Ordering::Relaxed) - requests_before;
    let amqp_connections = amqp.connections.load(Ordering::Relaxed) - connections_before;
    let hwm = proc_status(pid, "VmHWM:");
    let anon = proc_status(pid, "RssAnon:");
    let file = proc_status(pid, "RssFile:");
    let threads = proc_status_raw(pid, "Threads:");

    assert_eq!(
        support::unlisted_calls(&fake),
        Vec::<String>::new(),
        "calls outside rbac::PERMISSIONS"
    );
    support::terminate(pid);
    let status = child.0.wait().unwrap();
    assert!(status.success(), "the operator exited with {status}");
    if !wrapper.is_empty() {
        // Give the profiler time to write its file.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    drop(user);
    drop(vhost);

    samples.sort_by(f64::total_cmp);
    Run {
        pipelines,
        outputs,
        management_requests,
        amqp_connections,
        first_pass,
        reconciles,
        window,
        rss_median: samples[samples.len() / 2],
        rss_max: samples.last().copied().unwrap_or_default(),
        hwm,
        anon,
        file,
        threads,
    }
}

/// How long the broker may take to delete the benchmark's vhost: 1,000 pipelines leave
/// 10,000 queues, which take longer than the management client's request timeout.
const VHOST_DELETE_TIMEOUT: Duration = Duration::from_secs(300);

/// Deletes the benchmark's vhost, with its queues, when the run ends or fails half-way, and
/// waits until it is gone, so that no queues stay on a shared broker.
struct VhostCleanup(String);

impl Drop for VhostCleanup {
    fn drop(&mut self) {
        let url = format!(
            "{}api/vhosts/{}",
            endpoint().management().base,
            encode(&self.0)
        );
        let name = self.0.clone();
        support::finish_in_drop(async move {
            let m = endpoint().management().clone();
            let http = reqwest::Client::builder()
                .timeout(VHOST_DELETE_TIMEOUT)
                .build()
                .unwrap();
            // A delete of thousands of queues may end without an answer half-way (the
            // broker closed the connection): asked again, it finishes the rest.
            let started = Instant::now();
            let mut last = String::new();
            while started.elapsed() < VHOST_DELETE_TIMEOUT {
                let deleted = http
                    .delete(&url)
                    .basic_auth(&m.username, Some(&m.password))
                    .send()
                    .await;
                last = format!("{deleted:?}");
                let gone = http
                    .get(&url)
                    .basic_auth(&m.username, Some(&m.password))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == reqwest::StatusCode::NOT_FOUND);
                if gone {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            eprintln!("vhost {name} is still on the broker (last delete: {last})");
        });
    }
}

/// Kills the operator if the benchmark fails half-way.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn pipeline(i: usize, outputs: usize) -> Value {
    let outputs: Vec<Value> = ["out", "audit"][..outputs]
        .iter()
        .map(|name| {
            json!({
                "name": name,
                "bindings": ["*.error", "*.critical"],
                "sink": {"http": {"url": "http://loki:3100/loki/api/v1/push", "format": "loki"}}
            })
        })
        .collect();
    json!({
        "apiVersion": "logstream.io/v1alpha1",
        "kind": "LogPipeline",
        "metadata": {
            "name": format!("pipe-{i:04}"),
            "namespace": "bench",
            "uid": format!("00000000-0000-4000-8000-{i:012}"),
            "generation": 1,
            "resourceVersion": "1",
            "finalizers": ["logstream.io/broker-cleanup"]
        },
        "spec": {
            "broker": {"secretRef": {"name": "rabbitmq"}},
            "outputs": outputs
        }
    })
}

async fn metrics(port: u16) -> String {
    match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The pid of the running process whose executable is `binary` (started under a wrapper).
async fn operator_pid(binary: &str) -> u32 {
    let binary = std::fs::canonicalize(binary).unwrap();
    for _ in 0..100 {
        let found = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .find_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                (std::fs::read_link(entry.path().join("exe")).ok()? == binary).then_some(pid)
            });
        if let Some(pid) = found {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no process runs {}", binary.display());
}

/// A `/proc/<pid>/status` memory line, in MiB.
fn proc_status(pid: u32, key: &str) -> f64 {
    proc_status_raw(pid, key) as f64 / 1024.0
}

/// The number of a `/proc/<pid>/status` line (kB for memory lines).
fn proc_status_raw(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Where the operator's logs go: `BENCH_LOG_DIR/operator-<n>.log` when set, else nowhere.
fn log_target(pipelines: usize) -> Stdio {
    match std::env::var("BENCH_LOG_DIR") {
        Ok(dir) => std::fs::File::create(format!("{dir}/operator-{pipelines}.log"))
            .map_or_else(|_| Stdio::null(), Stdio::from),
        Err(_) => Stdio::null(),
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
