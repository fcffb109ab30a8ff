//! Critical-first on quorum queues. RabbitMQ 4.0–4.2 give a quorum queue two priority classes,
//! normal (0–4) and high (5 and above), and serve the high class 2:1 while both wait; the
//! contract's quorum table (`Level::priority_on`) puts critical and error logs there. RabbitMQ
//! 3.x quorum queues ignore priorities: the test skips itself on them, saying so.

mod support;

use std::time::Duration;

use logstream_api::{contract::Level, pipeline::QueueType};
use logstream_testkit::broker_has;
use support::{
    PipelineOptions, SinkServer, TestDir, TestPipeline, TestVhost, WorkerProcess, eventually,
    log_body, log_properties, message_of, publish_many,
};

const PREFETCH: u16 = 50;
const INFOS: u64 = 5_000;
const CRITICALS: u64 = 50;

/// Publishes 5,000 info logs, then 50 critical logs with priority `critical_priority`, to a
/// quorum pipeline; then starts one worker and returns the write positions (0-based) of the
/// critical logs.
async fn critical_positions(critical_priority: u8) -> Vec<usize> {
    let vhost = TestVhost::new("quorum-priority").await;
    let pipeline = TestPipeline::declare(
        &vhost,
        &PipelineOptions {
            queue_type: "quorum",
            prefetch: PREFETCH,
            batch_max: 10,
            ..PipelineOptions::default()
        },
    )
    .await;
    let sink = SinkServer::accepting().await;
    let dir = TestDir::new("quorum-priority");
    let (_connection, channel) = vhost.confirm_channel().await;
    let info_priority = Level::Info.priority_on(QueueType::Quorum);
    let infos = (0..INFOS).map(|i| {
        (
            "api.info".to_owned(),
            log_body(&format!("info-{i}"), "info", i),
            log_properties(&format!("info-{i}"), info_priority),
        )
    });
    let criticals = (0..CRITICALS).map(|i| {
        (
            "api.critical".to_owned(),
            log_body(&format!("critical-{i}"), "critical", i),
            log_properties(&format!("critical-{i}"), critical_priority),
        )
    });
    publish_many(&channel, pipeline.exchange(), infos.chain(criticals)).await;

    let _worker = WorkerProcess::spawn(&dir, &vhost, &pipeline.config_for(&sink.url));
    let total = usize::try_from(INFOS + CRITICALS).unwrap();
    eventually(Duration::from_secs(120), "every log written", || async {
        (sink.written_len() >= total).then_some(())
    })
    .await;
    let order: Vec<String> = sink.written().iter().map(message_of).collect();
    assert_eq!(order.len(), total, "each log written once");
    order
        .iter()
        .enumerate()
        .filter(|(_, m)| m.starts_with("critical"))
        .map(|(i, _)| i)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_logs_queued_behind_five_thousand_infos_are_written_first_from_a_quorum_queue_on_rabbitmq4()
 {
    if !broker_has(4, "quorum queues' priority classes").await {
        return;
    }
    let high = Level::Critical.priority_on(QueueType::Quorum);
    let positions = critical_positions(high).await;
    assert_eq!(positions.len(), 50);
    let (first, last) = (positions[0] + 1, positions[positions.len() - 1] + 1);
    eprintln!(
        "quorum table (critical {high}): critical logs were writes {first}..={last} of {}; positions {:?}",
        INFOS + CRITICALS,
        positions.iter().map(|p| p + 1).collect::<Vec<_>>()
    );
    assert!(
        last <= usize::from(PREFETCH) + 100,
        "the last critical log was write number {last}"
    );

    // The classic table's critical priority (3) is in the normal class: behind the infos.
    let normal = Level::Critical.priority_on(QueueType::Classic);
    let positions = critical_positions(normal).await;
    let first = positions[0] + 1;
    eprintln!(
        "classic table (critical {normal}) on the same quorum queue: the first critical log was write {first}"
    );
    assert!(
        first > usize::try_from(INFOS).unwrap() - usize::from(PREFETCH),
        "priority {normal} is in the normal class: FIFO behind the infos (first at {first})"
    );
}
