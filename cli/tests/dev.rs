//! `logstream dev` against the real broker: the quickstart pipeline with local workers,
//! bursts published into it, replicas rising within two polls, the backlog draining, and
//! replicas falling after `scaleDownDelay`; then a graceful stop.

mod support;

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use support::{PipelineVhost, command, eventually, run_logstream};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    sync::mpsc,
};

/// Polls of the test manifest (the quickstart's scaling, with a shorter poll and delay so
/// the test takes seconds, and `minReplicas: 0` so every burst meets an idle output).
const POLL: Duration = Duration::from_secs(1);
const SCALE_DOWN_DELAY: &str = "3s";
const BURSTS: usize = 3;
const BURST_LOGS: &str = "4000";

/// The quickstart example with the test's scaling figures.
fn quickstart(dir: &std::path::Path) -> PathBuf {
    support::quickstart_with(dir, |scaling| {
        assert_eq!(
            scaling["targetBacklogPerReplica"], 500,
            "the quickstart changed"
        );
        scaling["minReplicas"] = 0.into();
        scaling["scaleDownDelay"] = SCALE_DOWN_DELAY.into();
        scaling["pollInterval"] = format!("{}ms", POLL.as_millis()).into();
    })
}

/// Lines of the running `logstream dev`, each with when it arrived.
struct Lines(mpsc::UnboundedReceiver<(Instant, String)>, Vec<String>);

impl Lines {
    /// Waits for a line containing all of `parts`; returns when it arrived and the line.
    async fn wait_for(&mut self, parts: &[&str], timeout: Duration) -> (Instant, String) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.0.recv()).await {
                Ok(Some((at, line))) => {
                    self.1.push(line.clone());
                    if parts.iter().all(|p| line.contains(p)) {
                        return (at, line);
                    }
                }
                Ok(None) => panic!("logstream dev ended; output:\n{}", self.1.join("\n")),
                Err(_) => panic!(
                    "no line with {parts:?} within {timeout:?}; output:\n{}",
                    self.1.join("\n")
                ),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_scales_local_workers_up_on_a_burst_drains_it_and_scales_back_down() {
    let vhost = PipelineVhost::new("dev").await;
    let dir = tempdir();
    let manifest = quickstart(&dir);
    let manifest = manifest.to_str().unwrap();
    let mut dev = support::dev_command(&vhost, manifest, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start logstream dev");
    let (tx, rx) = mpsc::unbounded_channel();
    let stdout = dev.stdout.take().unwrap();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = tx.send((Instant::now(), line));
        }
    });
    let mut lines = Lines(rx, Vec::new());
    let (_, metrics_line) = lines
        .wait_for(&["metrics on http://"], Duration::from_secs(30))
        .await;
    let metrics_url = metrics_line.split_whitespace().last().unwrap().to_owned();

    let mut latencies = Vec::new();
    for burst in 0..BURSTS {
        // The output is idle at zero replicas; a burst arrives.
        let started = Instant::now();
        let produce = run_logstream(
            &[
                "--vhost",
                &vhost.name,
                "produce",
                "-f",
                manifest,
                "--count",
                BURST_LOGS,
            ],
            None,
        )
        .await;
        assert_eq!(produce.code, 0, "{produce:?}");
        assert!(produce.stdout.contains("confirmed 4000"), "{produce:?}");
        let (at, line) = lines
            .wait_for(&["scaled:", "0 → "], Duration::from_secs(30))
            .await;
        let latency = at - started;
        latencies.push(latency);
        // Within two poll intervals of the burst's start (the decision usually comes while
        // the produce run still publishes), plus the produce process's start-up.
        assert!(
            latency <= 2 * POLL + Duration::from_millis(500),
            "burst {burst}: the first decision took {latency:?}: {line}"
        );
        let up: u32 = line
            .rsplit("→ ")
            .next()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(up >= 1, "{line}");

        // The backlog drains: every log of the burst leaves the queue.
        eventually(Duration::from_secs(60), "the burst drains", || async {
            (vhost.ready("logstream.default.quickstart.stdout").await == 0).then_some(())
        })
        .await;
        // And the workers go away once the queue stayed empty and idle for scaleDownDelay.
        let (down_at, down) = lines
            .wait_for(&["scaled:", "→ 0"], Duration::from_secs(40))
            .await;
        assert!(
            down.contains(&format!("empty and idle for {SCALE_DOWN_DELAY}")),
            "{down}"
        );
        assert!(
            down_at - at >= Duration::from_secs(3),
            "scaled down too early: {down}"
        );
    }

    // Every log was written once by some worker (the stdout sink writes JSON lines).
    let written: usize = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap()
                .lines()
                .filter(|l| l.starts_with('{'))
                .count()
        })
        .sum();
    assert_eq!(written, BURSTS * 4000);

    // /metrics shows the autoscaler's figures.
    let text = reqwest_get(&metrics_url).await;
    assert!(text.contains("logstream_scalings_total{namespace=\"default\",pipeline=\"quickstart\",output=\"stdout\",direction=\"up\"}"), "{text}");

    // A graceful stop.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(dev.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(40), dev.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");

    latencies.sort();
    let p95 = latencies[(latencies.len() * 95).div_ceil(100) - 1];
    println!("burst → first decision: {:?} (p95 {p95:?})", latencies);
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    let _ = std::fs::create_dir_all(&artifacts);
    let _ = std::fs::write(
        artifacts.join("dev-burst-latency.txt"),
        format!(
            "burst → first decision (ms): {:?}; p95 {} ms\n",
            latencies
                .iter()
                .map(Duration::as_millis)
                .collect::<Vec<_>>(),
            p95.as_millis()
        ),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn dev_without_a_manifest_is_a_usage_mistake() {
    let out = command(&["dev"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "error: logstream dev needs a manifest: -f pipeline.yaml"
    );
}

#[tokio::test]
async fn dev_with_a_refused_password_fails_with_one_line_and_starts_nothing() {
    let dir = tempdir();
    let out = command(&[
        "--amqp",
        "amqp://guest:wrong-password@127.0.0.1:5672/%2f",
        "dev",
        "-f",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quickstart.yaml"),
        "--work-dir",
        dir.to_str().unwrap(),
    ])
    .output()
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(!stderr.contains("wrong-password"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(support::unique("logstream-dev-test"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn reqwest_get(url: &str) -> String {
    // A plain HTTP/1.0 GET: no client crate needed for one loopback request.
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}
