//! `logstream status` against the real broker: one row per output with its depth, retrying and
//! dead-lettered messages and consumers, from one management API request.

mod support;

use std::time::Duration;

use lapin::{
    options::{BasicConsumeOptions, BasicPublishOptions},
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
    assert_eq!(archive["ready"], 0);
    assert_eq!(archive["dead_lettered"], 0);
    let security = rows.iter().find(|r| r["output"] == "security").unwrap();
    assert_eq!(security["pipeline"], "app");
    assert_eq!(security["namespace"], "test");
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
