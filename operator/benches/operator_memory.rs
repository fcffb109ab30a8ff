//! Resident memory of the `logstream-operator` binary while it manages N LogPipelines: the
//! Kubernetes API is the fake API server (over HTTP, on loopback), the broker is the real
//! RabbitMQ (a vhost and a user of its own). Idle (0 pipelines) and loaded (100 pipelines)
//! run side by side in one invocation; target: at most 25 MiB RSS with 100 pipelines.
//!
//! `make bench-operator` (= `cargo bench -p logstream-operator --profile operator --bench
//! operator_memory`: the size-optimised build the operator image ships).
//! `BENCH_PIPELINES` (default 100) and `BENCH_SECONDS` (default 60: measuring window after
//! every pipeline was reconciled once) change the load; `BENCH_LOG_DIR` keeps the operator's
//! logs; `BENCH_WRAPPER` runs the operator under a profiler.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::ByteString;
use serde_json::{Value, json};
use support::{TestUser, TestVhost, encode, endpoint, fake_api::FakeApi, unique};

const TARGET_MIB: f64 = 25.0;

struct Run {
    pipelines: usize,
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
    let pipelines: usize = env_or("BENCH_PIPELINES", 100);
    let seconds: u64 = env_or("BENCH_SECONDS", 60);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let runs = runtime.block_on(async {
        vec![
            run(0, Duration::from_secs(seconds)).await,
            run(pipelines, Duration::from_secs(seconds)).await,
        ]
    });
    println!(
        "\n| pipelines | first pass over all | reconciles in window | window | RSS median | RSS max | VmHWM (peak) | anonymous / file at end | threads |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in &runs {
        println!(
            "| {} | {:.1} s | {} | {} s | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} / {:.1} MiB | {} |",
            r.pipelines,
            r.first_pass.as_secs_f64(),
            r.reconciles,
            r.window.as_secs(),
            r.rss_median,
            r.rss_max,
            r.hwm,
            r.anon,
            r.file,
            r.threads
        );
    }
    let loaded = &runs[1];
    let verdict = if loaded.hwm <= TARGET_MIB {
        "met"
    } else {
        "MISSED"
    };
    println!(
        "\ntarget: peak RSS with {} pipelines <= {TARGET_MIB} MiB: {verdict} ({:.1} MiB)",
        loaded.pipelines, loaded.hwm
    );
    if loaded.hwm > TARGET_MIB {
        std::process::exit(1);
    }
}

async fn run(pipelines: usize, window: Duration) -> Run {
    let vhost = TestVhost::new("bench").await;
    let user = TestUser::new(&vhost).await;
    let a = endpoint().amqp();
    let uri = format!(
        "amqp://{}:{}@{}:{}/{}",
        encode(&user.name),
        encode(&user.password),
        a.authority.host,
        a.authority.port,
        encode(&vhost.name)
    );
    let fake = FakeApi::start(
        (0..pipelines).map(pipeline).collect(),
        vec![json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "rabbitmq", "namespace": "bench"},
            "data": {"uri": serde_json::to_value(ByteString(uri.into_bytes())).unwrap()}
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
    let mut child = Guard(
        Command::new(command[0])
            .args(&command[1..])
            .env("KUBECONFIG", fake.kubeconfig(&dir))
            .args([
                &format!("--listen=127.0.0.1:{port}"),
                "--lease-namespace=bench",
                "--identity=bench-operator",
            ])
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
            started.elapsed() < Duration::from_secs(300),
            "only {} of {pipelines} pipelines reconciled",
            fake.pipelines_with_status()
        );
        assert!(child.0.try_wait().unwrap().is_none(), "the operator exited");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first_pass = started.elapsed();
    assert_eq!(fake.ready_pipelines(), pipelines, "every pipeline Ready");

    let patches_before = fake.status_patches();
    let window_start = Instant::now();
    while window_start.elapsed() < window {
        samples.push(proc_status(pid, "VmRSS:"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let reconciles = fake.status_patches() - patches_before;
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

fn pipeline(i: usize) -> Value {
    json!({
        "apiVersion": "logstream.io/v1alpha1",
        "kind": "LogPipeline",
        "metadata": {
            "name": format!("pipe-{i:03}"),
            "namespace": "bench",
            "uid": format!("00000000-0000-4000-8000-{i:012}"),
            "generation": 1,
            "resourceVersion": "1",
            "finalizers": ["logstream.io/broker-cleanup"]
        },
        "spec": {
            "broker": {"secretRef": {"name": "rabbitmq"}},
            "outputs": [{
                "name": "out",
                "bindings": ["*.error", "*.critical"],
                "sink": {"http": {"url": "http://loki:3100/loki/api/v1/push", "format": "loki"}}
            }]
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
