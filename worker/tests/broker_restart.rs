//! The broker going away mid-stream (`rabbitmqctl stop_app`, then `start_app`): the worker
//! reconnects and nothing is lost.
//!
//! This disrupts a broker, so it runs on a private RabbitMQ node of its own (started by
//! `scripts/rabbitmq-private-node.sh` with its own name, ports and data directory, and stopped
//! at the end, pass or fail), never on the node the other tests share.

mod support;

use std::{collections::BTreeSet, time::Duration};

use logstream_testkit::private_node::PrivateNode;
use support::{
    Broker, PipelineOptions, SinkServer, TestDir, TestPipeline, WorkerProcess, endpoint,
    eventually, log_body, log_properties, message_of, publish_many,
};

/// The name of the node answering the shared broker's management API.
async fn shared_node_name() -> Option<String> {
    let m = endpoint().management().clone();
    let response = reqwest::Client::new()
        .get(format!("{}api/overview?columns=node", m.base))
        .basic_auth(&m.username, Some(&m.password))
        .send()
        .await
        .ok()?;
    let overview: serde_json::Value = response.json().await.ok()?;
    overview["node"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_reconnects_after_the_broker_restarts_and_nothing_is_lost() {
    const N: u64 = 3_000;
    let shared_node = shared_node_name().await;

    let node = PrivateNode::start(None);
    let broker = Broker::new(&node.endpoint(), "/");
    let pipeline = TestPipeline::declare(
        &broker,
        &PipelineOptions {
            prefetch: 50,
            batch_max: 10,
            backoff: "[100ms]",
            max_attempts: 5,
            ..PipelineOptions::default()
        },
    )
    .await;
    // A slow sink (about 200 logs/s with two writes in flight), so that the broker stops
    // mid-stream: `rabbitmqctl stop_app` itself takes seconds.
    let sink = SinkServer::start_with_delay(Duration::from_millis(100), |_| 200).await;
    let dir = TestDir::new("restart");
    {
        let (_connection, channel) = broker.confirm_channel().await;
        publish_many(
            &channel,
            pipeline.exchange(),
            (0..N).map(|i| {
                (
                    "api.info".to_owned(),
                    log_body(&format!("m{i}"), "info", i),
                    log_properties(&format!("id-{i}"), 0),
                )
            }),
        )
        .await;
    }
    let mut config = pipeline.config_for(&sink.url);
    config.consume.concurrency = 2;
    let worker = WorkerProcess::spawn(&dir, &broker, &config);
    worker.wait_ready().await;
    eventually(Duration::from_secs(30), "300 logs written", || async {
        (sink.written_len() >= 300).then_some(())
    })
    .await;

    node.ctl(&["stop_app"]);
    eventually(Duration::from_secs(20), "the worker to notice", || async {
        matches!(worker.get("/readyz").await, Some((503, _))).then_some(())
    })
    .await;
    let written_while_down = sink.written_len();
    assert!(
        written_while_down < N as usize,
        "the broker stopped mid-stream"
    );
    node.ctl(&["start_app"]);

    worker.wait_ready().await;
    eventually(
        Duration::from_secs(60),
        "every log written or dead-lettered",
        || async {
            let written: BTreeSet<String> = sink.written().iter().map(message_of).collect();
            let dead = broker.ready(&pipeline.config.dead_letter_queue).await as usize;
            (written.len() + dead >= N as usize).then_some(())
        },
    )
    .await;
    let written: BTreeSet<String> = sink.written().iter().map(message_of).collect();
    let dead: BTreeSet<String> = broker
        .drain(&pipeline.config.dead_letter_queue)
        .await
        .iter()
        .map(|m| message_of(&serde_json::from_slice(&m.body).unwrap()))
        .collect();
    let all: BTreeSet<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(&written | &dead, all, "nothing lost");
    assert!(
        worker.metric("logstream_reconnects_total", &[]).await >= Some(1.0),
        "{}",
        worker.log()
    );
    eprintln!(
        "{} written before the stop, {} written ({} duplicate writes), {} dead-lettered",
        written_while_down,
        written.len(),
        sink.written_len() - written.len(),
        dead.len()
    );

    // The shared node never noticed.
    drop(worker);
    drop(node);
    assert_eq!(
        shared_node_name().await,
        shared_node,
        "the shared node still answers"
    );
    assert!(shared_node.is_some());
}
