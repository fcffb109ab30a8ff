//! The dashboard's HTTP API on a real listener: the snapshot's JSON shape (and that
//! docs/dashboard.md names exactly its fields), an event stream that a reconnecting client
//! resumes with `Last-Event-ID`, and a client that never reads, which holds back neither
//! `record()` (the autoscaler's side) nor the other clients.

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use logstream_autoscaler::{
    Decision, ScaleRecord,
    dashboard::{self, Dashboard, DashboardSettings},
};
use logstream_broker::{Age, OutputReading};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket},
};

fn record(at_ms: u64, ready: u64, from: u32, to: u32) -> ScaleRecord {
    ScaleRecord {
        pipeline: "games/app".into(),
        queue: "logstream.test.app.o".into(),
        output: "security".into(),
        at: jiff::Timestamp::from_millisecond(i64::try_from(at_ms).unwrap()).unwrap(),
        decision: Decision {
            current: from,
            desired: to,
            recommended: to,
            reason: format!("backlog {ready} at 100/replica: {from} → {to}"),
            signals: Default::default(),
            metrics_missing: false,
        },
        reading: Some(OutputReading {
            ready: Some(ready),
            unacked: Some(4),
            consumers: Some(u64::from(from)),
            sampled_consumers: Some(u64::from(from)),
            consuming: None,
            oldest_age: Some(Age::measured(3.5)),
            publish_rate: Some(12.0),
            ack_rate: Some(10.0),
            retrying: Some(1),
            retry_rate: Some(0.5),
            dead_lettered: Some(2),
            dead_letter_rate: Some(0.25),
        }),
        error: None,
    }
}

async fn serve(dashboard: Arc<Dashboard>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, dashboard::router(dashboard)).await });
    base
}

/// One parsed SSE event.
#[derive(Debug, Clone, PartialEq)]
struct SseEvent {
    id: Option<String>,
    kind: String,
    data: String,
}

/// An event stream read with reqwest, chunk by chunk.
struct SseClient {
    response: reqwest::Response,
    buffer: String,
}

impl SseClient {
    async fn connect(url: &str, last_event_id: Option<&str>) -> Self {
        let mut request = reqwest::Client::new().get(url);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "{:?}",
            response.headers()
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event with data (comments and the `retry:` preamble are skipped).
    async fn next(&mut self) -> SseEvent {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut kind, mut data) = (None, "message".to_owned(), None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        kind = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(v.to_owned());
                    }
                }
                if let Some(data) = data {
                    return SseEvent { id, kind, data };
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .expect("the stream stays open");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    async fn take(&mut self, n: usize) -> Vec<SseEvent> {
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            events.push(self.next().await);
        }
        events
    }
}

fn kinds(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

async fn wait_for_clients(dashboard: &Dashboard, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while dashboard.clients() < n {
        assert!(Instant::now() < deadline, "{n} clients never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_snapshot_carries_figures_history_and_decisions_in_the_documented_shape() {
    let dashboard = Arc::new(Dashboard::default());
    dashboard.record(&record(1_000, 50, 1, 1));
    dashboard.record(&record(6_000, 450, 1, 5));
    let base = serve(dashboard).await;

    let response = reqwest::get(format!("{base}/api/pipelines")).await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/json");
    let snapshot: Value = response.json().await.unwrap();
    let output = &snapshot["pipelines"][0]["outputs"][0];
    assert_eq!(snapshot["pipelines"][0]["name"], "games/app");
    assert_eq!(output["output"], "security");
    assert_eq!(output["ready"], 450);
    assert_eq!(output["dead_lettered"], 2);
    assert_eq!(output["sink"], "up");
    assert_eq!(output["age_estimated"], false);
    assert_eq!(output["replicas"]["current"], 1);
    assert_eq!(output["replicas"]["desired"], 5);
    assert_eq!(output["rates"]["processed"], 10.0);
    assert_eq!(output["rates"]["retried"], 0.5);
    assert_eq!(output["rates"]["dead_lettered"], 0.25);
    assert_eq!(output["history"].as_array().unwrap().len(), 2);
    assert_eq!(
        snapshot["decisions"][0]["reason"],
        "backlog 450 at 100/replica: 1 → 5"
    );
    assert_eq!(snapshot["history_window_s"], 900);

    // The documented fields are the served fields, no more and no fewer.
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/dashboard.md"))
            .unwrap();
    let documented = documented_example(&docs, "GET /api/pipelines");
    assert_eq!(
        field_paths(&documented, ""),
        field_paths(&snapshot, ""),
        "docs/dashboard.md and /api/pipelines differ"
    );
}

/// The first ```json block after `heading` in `docs`.
fn documented_example(docs: &str, heading: &str) -> Value {
    let after = &docs[docs.find(heading).unwrap_or_else(|| panic!("no {heading}"))..];
    let start = after.find("```json\n").expect("a json block") + 8;
    let end = start + after[start..].find("```").unwrap();
    serde_json::from_str(&after[start..end]).expect("the documented example is JSON")
}

/// Every object key path in `v` (array elements merged: `pipelines[].outputs[].ready`).
fn field_paths(v: &Value, prefix: &str) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let path = format!("{prefix}{k}");
                paths.extend(field_paths(child, &format!("{path}.")));
                paths.insert(path);
            }
        }
        Value::Array(items) => {
            let prefix = format!("{}[].", prefix.trim_end_matches('.'));
            for item in items {
                paths.extend(field_paths(item, &prefix));
            }
        }
        _ => {}
    }
    paths
}

#[tokio::test]
async fn the_documented_events_are_the_served_events() {
    let dashboard = Arc::new(Dashboard::default());
    let base = serve(dashboard.clone()).await;
    let mut client = SseClient::connect(&format!("{base}/api/events"), None).await;
    wait_for_clients(&dashboard, 1).await;
    let mut failing = record(1_000, 450, 1, 5);
    dashboard.record(&record(1_000, 450, 1, 5));
    failing.error = Some("failed to scale deployment games/app-security: forbidden".into());
    dashboard.record(&failing);
    dashboard.forget("games/app");
    let events = client.take(5).await;
    assert_eq!(
        kinds(&events),
        ["sample", "scale", "sample", "error", "removed"]
    );
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/dashboard.md"))
            .unwrap();
    for e in &events[1..] {
        let served: Value = serde_json::from_str(&e.data).unwrap();
        let documented = documented_example(&docs, &format!("`event: {}`", e.kind));
        assert_eq!(
            field_paths(&documented, ""),
            field_paths(&served, ""),
            "docs/dashboard.md and `event: {}` differ",
            e.kind
        );
    }
    // A sample's data is an output of the snapshot without its history.
    let sample: Value = serde_json::from_str(&events[0].data).unwrap();
    let snapshot = documented_example(&docs, "GET /api/pipelines");
    let mut output = snapshot["pipelines"][0]["outputs"][0].clone();
    output.as_object_mut().unwrap().remove("history");
    assert_eq!(field_paths(&output, ""), field_paths(&sample, ""));
}

#[tokio::test]
async fn a_client_reconnecting_with_last_event_id_receives_exactly_what_it_missed() {
    let dashboard = Arc::new(Dashboard::default());
    let base = serve(dashboard.clone()).await;
    let url = format!("{base}/api/events");
    dashboard.record(&record(1_000, 10, 1, 1));

    // A page: snapshot first, then the stream from the snapshot's last event.
    let snapshot: Value = reqwest::get(format!("{base}/api/pipelines"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    dashboard.record(&record(2_000, 20, 1, 1)); // between the snapshot and the stream
    let since = snapshot["last_event_id"].as_str().unwrap();
    let mut first = SseClient::connect(&format!("{url}?since={since}"), None).await;
    dashboard.record(&record(3_000, 30, 1, 1));
    let seen = first.take(2).await;
    assert_eq!(
        seen.iter()
            .map(|e| serde_json::from_str::<Value>(&e.data).unwrap()["ready"].clone())
            .collect::<Vec<_>>(),
        [20, 30],
        "nothing lost between the snapshot and the stream"
    );
    let last_seen = seen[1].id.clone().unwrap();
    drop(first);

    // Meanwhile: two samples and a scale decision.
    dashboard.record(&record(4_000, 40, 1, 1));
    dashboard.record(&record(5_000, 450, 1, 5));
    let mut again = SseClient::connect(&url, Some(&last_seen)).await;
    let missed = again.take(3).await;
    assert_eq!(kinds(&missed), ["sample", "sample", "scale"]);
    assert!(missed[2].data.contains("backlog 450 at 100/replica: 1 → 5"));
    // ... and then it is live again, with ids that keep counting.
    dashboard.record(&record(6_000, 460, 5, 5));
    let live = again.next().await;
    assert_eq!(live.kind, "sample");
    let seq = |e: &SseEvent| -> u64 {
        e.id.as_ref()
            .unwrap()
            .rsplit_once('-')
            .unwrap()
            .1
            .parse()
            .unwrap()
    };
    let ids: Vec<u64> = seen.iter().chain(&missed).chain([&live]).map(seq).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
}

#[tokio::test]
async fn a_client_whose_missed_events_are_gone_is_told_so() {
    let dashboard = Arc::new(Dashboard::new(DashboardSettings {
        backlog_events: 4,
        ..Default::default()
    }));
    let base = serve(dashboard.clone()).await;
    let url = format!("{base}/api/events");
    dashboard.record(&record(1_000, 1, 1, 1));
    let old = dashboard.snapshot().last_event_id;
    for i in 2..=10 {
        dashboard.record(&record(i * 1_000, i, 1, 1));
    }
    let mut client = SseClient::connect(&url, Some(&old)).await;
    let events = client.take(5).await;
    assert_eq!(
        kinds(&events),
        ["lagged", "sample", "sample", "sample", "sample"]
    );
    assert_eq!(events[0].data, r#"{"missed":5}"#);
    // An id from another process (the server restarted): the size of the gap is unknown.
    let mut stranger = SseClient::connect(&url, Some("0abc-3")).await;
    assert_eq!(stranger.next().await.data, r#"{"missed":null}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_blocks_neither_record_nor_other_clients() {
    let dashboard = Arc::new(Dashboard::new(DashboardSettings {
        client_buffer: 16,
        backlog_events: 64,
        ..Default::default()
    }));
    let base = serve(dashboard.clone()).await;
    let addr = base.trim_start_matches("http://").parse().unwrap();

    // The slow client: a request, and then it does not read. (Its receive window is left at
    // the default: a tiny one would also make the final read take minutes.)
    let mut slow = TcpSocket::new_v4().unwrap().connect(addr).await.unwrap();
    slow.write_all(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut fast = SseClient::connect(&format!("{base}/api/events"), None).await;
    wait_for_clients(&dashboard, 2).await;

    // 20 000 polls' worth of records with long reasons: megabytes the slow client never takes.
    const RECORDS: u64 = 20_000;
    let writer = tokio::task::spawn_blocking({
        let dashboard = dashboard.clone();
        move || {
            let mut slowest = Duration::ZERO;
            let started = Instant::now();
            for i in 0..RECORDS {
                let mut r = record(i, i, 1, 1);
                r.decision.reason = format!("{i} {}", "x".repeat(1_000));
                let t = Instant::now();
                dashboard.record(&r);
                slowest = slowest.max(t.elapsed());
            }
            (started.elapsed(), slowest)
        }
    });
    let (total, slowest) = tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("record() never waits for a client")
        .unwrap();
    println!("{RECORDS} records in {total:?}, slowest record() {slowest:?}");
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");

    // The fast client gets to the last record (catching up from the log where it lagged).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let e = fast.next().await;
        if e.kind == "sample" && e.data.contains(&format!("\"ready\":{}", RECORDS - 1)) {
            break;
        }
        assert!(Instant::now() < deadline, "the fast client never caught up");
    }

    // The slow client was really stalled: when it finally reads, it is told it lagged.
    let mut received = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    let told = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let n = slow.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server closed the slow client");
            received.extend_from_slice(&chunk[..n]);
            if received.windows(13).any(|w| w == b"event: lagged") {
                return;
            }
        }
    })
    .await;
    assert!(told.is_ok(), "the slow client was never told it lagged");
    println!(
        "the slow client read {} bytes before the lag notice",
        received.len()
    );
}
