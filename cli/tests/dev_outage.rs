//! `logstream dev` through a two-minute sink outage under 200 logs/s, with the default retry
//! ladder, starting while the worker runs: the worker holds what it took and stops consuming, the autoscaler sees every worker
//! paused and holds the replicas (the backlog grows to thousands of logs that would otherwise
//! ask for the maximum), nothing is dead-lettered or retried, and once the sink answers again
//! every log is written. On a classic queue and on a quorum queue, which goes on counting a
//! paused worker as a consumer (the autoscaler asks the consumer listing there).

mod support;

use std::{
    collections::HashMap,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, extract::State, http::StatusCode, routing::post};
use serde_json::Value;
use support::{PipelineVhost, eventually};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    sync::mpsc,
};

const RATE: &str = "200";
/// Two minutes; `LOGSTREAM_TEST_OUTAGE_SECONDS` shortens it while debugging.
fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("LOGSTREAM_TEST_OUTAGE_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(120),
    )
}

/// The sink: JSON arrays of logs, counted by message id; 503 to everything while down.
#[derive(Default)]
struct Sink {
    down: AtomicBool,
    written: Mutex<HashMap<String, u32>>,
    refused: Mutex<u64>,
}

async fn receive(State(sink): State<Arc<Sink>>, body: String) -> StatusCode {
    if sink.down.load(Ordering::SeqCst) {
        *sink.refused.lock().unwrap() += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let Ok(Value::Array(logs)) = serde_json::from_str(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut written = sink.written.lock().unwrap();
    for log in logs {
        let id = log["logstream"]["message_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        *written.entry(id).or_default() += 1;
    }
    StatusCode::OK
}

fn manifest(port: u16, queue_type: &str) -> String {
    format!(
        "apiVersion: logstream.io/v1alpha1
kind: LogPipeline
metadata: {{name: outage}}
spec:
  broker: {{secretRef: {{name: rabbitmq}}}}
  queueType: {queue_type}
  outputs:
    - name: http
      sink: {{http: {{url: \"http://127.0.0.1:{port}/logs\", format: json, timeout: 2s}}}}
      scaling: {{minReplicas: 1, maxReplicas: 4, targetBacklogPerReplica: 500, maxMessageAge: 10s, pollInterval: 1s}}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_minute_sink_outage_holds_the_replicas_and_loses_and_dead_letters_nothing() {
    outage_story("classic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_minute_sink_outage_of_a_quorum_output_holds_the_replicas_too() {
    outage_story("quorum").await;
}

async fn outage_story(queue_type: &str) {
    let sink = Arc::new(Sink::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new()
        .route("/logs", post(receive))
        .with_state(Arc::clone(&sink));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let vhost = PipelineVhost::new(&format!("dev-outage-{queue_type}")).await;
    let dir = std::env::temp_dir().join(support::unique("logstream-dev-outage"));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest_path = dir.join("pipeline.yaml");
    std::fs::write(&manifest_path, manifest(port, queue_type)).unwrap();
    let manifest = manifest_path.to_str().unwrap();
    let mut dev = support::dev_command(&vhost, manifest, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start logstream dev");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stdout = dev.stdout.take().unwrap();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = tx.send(line);
        }
    });
    let mut output = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !output
        .iter()
        .any(|l: &String| l.contains("scaled:") && l.contains("0 → 1"))
    {
        let line = tokio::time::timeout_at(deadline.into(), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no worker started; output:\n{}", output.join("\n")))
            .expect("dev runs");
        output.push(line);
    }

    // The worker writes a first log: the sink is up and the worker consumes.
    let first = support::run_logstream(
        &[
            "--vhost",
            &vhost.name,
            "produce",
            "-f",
            manifest,
            "--message",
            "before the outage",
        ],
        None,
    )
    .await;
    assert_eq!(first.code, 0, "{first:?}");
    eventually(Duration::from_secs(30), "the first log written", || async {
        (!sink.written.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The outage starts, then the logs arrive at RATE for its two minutes.
    sink.down.store(true, Ordering::SeqCst);
    println!(
        "outage from {}",
        jiff::Zoned::now().strftime("%H:%M:%S%.3f")
    );
    let seconds = outage().as_secs().to_string();
    let produce = support::command(&[
        "--vhost",
        &vhost.name,
        "produce",
        "-f",
        manifest,
        "--rate",
        RATE,
        "--duration",
        &format!("{seconds}s"),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn logstream produce");
    let out = tokio::time::timeout(
        outage() + Duration::from_secs(60),
        produce.wait_with_output(),
    )
    .await
    .expect("produce finished")
    .unwrap();
    let produced = support::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(produced.code, 0, "{produced:?}");
    let confirmed: usize = produced
        .stdout
        .split("confirmed ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no confirmed count: {produced:?}"));
    let main = "logstream.default.outage.http";
    let backlog = vhost.ready(main).await;
    let dead_during = vhost.ready(&format!("{main}.dlq")).await;
    let mut retrying = 0;
    for step in 0..3 {
        retrying += vhost.ready(&format!("{main}.retry.{step}")).await;
    }
    while let Ok(line) = rx.try_recv() {
        output.push(line);
    }
    let during_outage = output.len();

    // The sink is back: everything is written.
    sink.down.store(false, Ordering::SeqCst);
    let up = Instant::now();
    eventually(Duration::from_secs(120), "every log written", || async {
        (sink.written.lock().unwrap().len() > confirmed).then_some(())
    })
    .await;
    let drained = up.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    while let Ok(line) = rx.try_recv() {
        output.push(line);
    }
    let written = sink.written.lock().unwrap().clone();
    let duplicates: u32 = written.values().map(|n| n - 1).sum();
    let dead = vhost.ready(&format!("{main}.dlq")).await;
    let raised: Vec<&String> = output[..during_outage]
        .iter()
        .filter(|l| l.contains("scaled:") && !l.contains("0 → 1"))
        .collect();
    println!(
        "{queue_type}: two-minute outage at {RATE} logs/s: {confirmed} confirmed, {backlog} waiting at its end, \
         {dead_during} dead-lettered and {retrying} retrying during it, {} refused requests; \
         after it: {} written ({duplicates} twice) in {:.1} s, {dead} dead-lettered; \
         replica changes during it: {raised:?}",
        *sink.refused.lock().unwrap(),
        written.len(),
        drained.as_secs_f64()
    );

    let _ = dev.start_kill();
    let _ = dev.wait().await;
    server.abort();
    if !raised.is_empty() {
        // What the worker said, for the failure below.
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                eprintln!("---- {} ----", entry.path().display());
                eprintln!(
                    "{}",
                    std::fs::read_to_string(entry.path()).unwrap_or_default()
                );
            }
        }
        eprintln!("---- dev ----\n{}", output.join("\n"));
    }
    let _ = std::fs::remove_dir_all(&dir);

    let said = output
        .iter()
        .find(|l| l.contains("holding replicas: sink down"));
    println!("{queue_type}: dev said {said:?}");
    let said = said.unwrap_or_else(|| {
        panic!(
            "dev did not say the sink was down; output:\n{}",
            output.join("\n")
        )
    });
    if queue_type == "quorum" {
        assert!(
            said.contains("consumers paused"),
            "the quorum queue counts the paused worker: {said}"
        );
    }
    assert!(
        raised.is_empty(),
        "replicas changed during the outage: {raised:?}"
    );
    assert!(
        backlog >= 4 * 500,
        "the backlog ({backlog}) would have asked for maxReplicas (4 × 500)"
    );
    assert_eq!((dead_during, retrying, dead), (0, 0, 0));
    assert_eq!(
        written.len(),
        confirmed + 1,
        "0 lost (the first log and the outage's)"
    );
}
