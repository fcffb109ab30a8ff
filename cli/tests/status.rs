//! `logstream status` against the real broker: one row per output with its depth, retrying and
//! dead-lettered messages, consumers and the sink as the queue shows it, from one management
//! API request.

mod support;

use std::time::Duration;

use futures::StreamExt;
use lapin::{
    options::{BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions},
    types::FieldTable,
};
use serde_json::Value;
use support::{PipelineVhost, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_output_with_depth_retries_dead_letters_and_consumers() {
    let vhost = PipelineVhost::with_pipeline(
        "status",
        "  outputs:\n    - {name: security, bindings: [\"#.critical\"], retry: {backoff: [1h]}, sink: {stdout: {}}}\n    - {name: archive, sink: {stdout: {}}}\n",
    )
    .await;
    let names = vhost.plan.names.clone();
    let (connection, channel) = vhost.confirm_channel().await;
    let put = |queue: String, n: usize| {
        let channel = channel.clone();
        async move {
            for _ in 0..n {
                channel
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        b"{\"message\":\"x\"}",
                        lapin::BasicProperties::default().with_timestamp(1),
                    )
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        }
    };
    put(names.main_queue("security"), 5).await;
    put(names.retry_queue("security", 0), 2).await;
    put(names.dead_letter_queue("security"), 3).await;
    let consumer_channel = connection.create_channel().await.unwrap();
    let _consumer = consumer_channel
        .basic_consume(
            names.main_queue("archive").as_str().into(),
            "test-worker".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let rows: Vec<Value> = eventually(Duration::from_secs(30), "statistics to show up", || async {
        let run = vhost.logstream(&["status", "app", "--json"]).await;
        assert_eq!(run.code, 0, "{run:?}");
        let rows: Vec<Value> = run
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let security = rows.iter().find(|r| r["output"] == "security")?;
        let archive = rows.iter().find(|r| r["output"] == "archive")?;
        (security["ready"] == 5
            && security["dead_lettered"] == 3
            && security["retrying"] == 2
            && archive["consumers"] == 1)
            .then_some(rows)
    })
    .await;
    let archive = rows.iter().find(|r| r["output"] == "archive").unwrap();
    assert_eq!(archive["consumers"], 1);
    assert_eq!(archive["sink"], "up", "a worker consumes");
    assert_eq!(archive["ready"], 0);
    assert_eq!(archive["dead_lettered"], 0);
    let security = rows.iter().find(|r| r["output"] == "security").unwrap();
    assert_eq!(security["pipeline"], "app");
    assert_eq!(security["namespace"], "test");
    assert_eq!(security["sink"], Value::Null, "no worker: nothing to say");
    assert!(
        security["oldest_age_seconds"]
            .as_f64()
            .is_some_and(|age| age > 1_000_000.0),
        "{security}"
    );

    let table = vhost.logstream(&["status"]).await;
    assert_eq!(table.code, 0, "{table:?}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", table.stdout);
    assert!(
        lines[0].starts_with("PIPELINE  OUTPUT    READY  UNACKED  OLDEST"),
        "{}",
        lines[0]
    );
    let security: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(&security[..4], ["test/app", "security", "5", "0"]);
    assert_eq!(&security[5..8], ["2", "3", "0"]);
    let _ = connection.close(200, "bye".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_is_down_when_every_worker_paused_holding_its_deliveries() {
    let vhost = PipelineVhost::with_pipeline(
        "status-sink",
        "  outputs:\n    - {name: out, sink: {stdout: {}}}\n",
    )
    .await;
    let main = vhost.main_queue();
    let (connection, channel) = vhost.confirm_channel().await;
    for _ in 0..30 {
        channel
            .basic_publish(
                "".into(),
                main.as_str().into(),
                BasicPublishOptions::default(),
                b"{\"message\":\"x\"}",
                lapin::BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // A worker whose sink is down: it holds its deliveries unacked and cancels its consumer.
    let worker = connection.create_channel().await.unwrap();
    worker
        .basic_qos(10, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = worker
        .basic_consume(
            main.as_str().into(),
            "paused-worker".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..10 {
        consumer.next().await.unwrap().unwrap();
    }
    worker
        .basic_cancel("paused-worker".into(), BasicCancelOptions::default())
        .await
        .unwrap();

    let row: Value = eventually(
        Duration::from_secs(30),
        "the sink to show as down",
        || async {
            let run = vhost.logstream(&["status", "app", "--json"]).await;
            assert_eq!(run.code, 0, "{run:?}");
            let row: Value = serde_json::from_str(run.stdout.lines().next()?).unwrap();
            (row["sink"] == "down").then_some(row)
        },
    )
    .await;
    assert_eq!(
        (row["consumers"].as_u64(), row["unacked"].as_u64()),
        (Some(0), Some(10))
    );
    let table = vhost.logstream(&["status", "app"]).await;
    let lines: Vec<&str> = table.stdout.lines().collect();
    let sink = lines[0]
        .split_whitespace()
        .position(|h| h == "SINK")
        .unwrap();
    assert_eq!(
        lines[1].split_whitespace().nth(sink),
        Some("down"),
        "{}",
        table.stdout
    );
    let _ = connection.close(200, "bye".into()).await;
}
