//! A worker whose sink is down cancels its consumer and holds its deliveries. A classic queue
//! then counts no consumer; a quorum queue goes on counting it (in its statistics and in a
//! passive declare, RabbitMQ 3.10 and 4.0.5 alike) while its channel holds deliveries. The
//! vhost's consumer listing tells: the paused worker is not in it. These tests hold deliveries
//! on a real broker and read the output as the autoscaler does.

use std::time::Duration;

use futures::StreamExt;
use lapin::{
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use logstream_broker::{BrokerAdmin, OutputQueues, OutputReading, QueueStats, SinkState};
use logstream_testkit::{TestVhost, endpoint, eventually, publish};

const HELD: u16 = 10;

/// A vhost with queue `q` of `queue_type` holding 50 messages.
async fn queue_with_messages(label: &str, queue_type: &str) -> TestVhost {
    let vhost = TestVhost::new(label).await;
    let connection = vhost.connect().await;
    let ch = connection.create_channel().await.unwrap();
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(queue_type.into()),
    );
    ch.queue_declare(
        "q".into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        arguments,
    )
    .await
    .unwrap();
    for i in 0..50 {
        publish(&ch, "", "q", format!("m{i}").as_bytes()).await;
    }
    vhost
}

/// The output `q` as the autoscaler reads it: the vhost's statistics with the consumer
/// listing where the queue may count paused workers, and the real-time consumer count.
async fn reading(vhost: &TestVhost, admin: &BrokerAdmin) -> OutputReading {
    let management = vhost.management();
    let mut stats: Vec<QueueStats> = management.queue_stats(&vhost.name).await.unwrap();
    management
        .read_consuming(&vhost.name, &mut stats)
        .await
        .unwrap();
    let queues = OutputQueues {
        main: "q".into(),
        retries: Vec::new(),
        dead_letter: "q.dlq".into(),
    };
    let mut reading = OutputReading::read(&stats, &queues, jiff::Timestamp::now());
    let depth = admin.queue_depth("q").await.unwrap().unwrap();
    reading.consumers = Some(depth.consumers);
    reading
}

async fn a_worker_that_holds_deliveries_and_cancels_reads_as_a_sink_down(queue_type: &str) {
    let vhost = queue_with_messages(&format!("paused-{queue_type}"), queue_type).await;
    let admin = BrokerAdmin::connect(&endpoint(), &vhost.name)
        .await
        .unwrap();
    let connection = vhost.connect().await;
    let ch = connection.create_channel().await.unwrap();
    ch.basic_qos(HELD, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = ch
        .basic_consume(
            "q".into(),
            "worker".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..HELD {
        consumer.next().await.unwrap().unwrap();
    }

    // Consuming (holding its prefetch, acknowledging nothing: a slow sink): up.
    let consuming = eventually(
        Duration::from_secs(30),
        "the statistics show the held deliveries",
        || async {
            let r = reading(&vhost, &admin).await;
            (r.unacked == Some(u64::from(HELD))).then_some(r)
        },
    )
    .await;
    eprintln!("{queue_type}, consuming: {consuming:?}");
    assert_eq!(consuming.sink(), Some(SinkState::Up));

    // The sink is down: the worker cancels its consumer and keeps what it holds.
    ch.basic_cancel("worker".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    let paused = eventually(
        Duration::from_secs(30),
        "the output read as sink down",
        || async {
            let r = reading(&vhost, &admin).await;
            (r.sink() == Some(SinkState::Down)).then_some(r)
        },
    )
    .await;
    eprintln!("{queue_type}, paused: {paused:?}");
    assert_eq!(paused.unacked, Some(u64::from(HELD)));
    if queue_type == "quorum" {
        assert_eq!(
            paused.consumers,
            Some(1),
            "a quorum queue still counts the paused worker"
        );
        assert_eq!(paused.consuming, Some(0), "the consumer listing does not");
        assert_eq!(paused.paused_consumers(), Some(1));
    } else {
        assert_eq!(paused.consumers, Some(0));
    }

    // The worker dies: its deliveries go back to the queue. Not an outage: on a quorum queue
    // at once (the dead worker is no longer counted in real time, while the statistics still
    // show it holding), on a classic queue once the statistics show nothing held.
    drop(consumer);
    connection.close(200, "gone".into()).await.unwrap();
    let gone = reading(&vhost, &admin).await;
    eprintln!("{queue_type}, gone: {gone:?}");
    assert_eq!(gone.consumers, Some(0));
    if queue_type == "quorum" {
        assert_eq!(gone.sink(), None);
    }
    eventually(Duration::from_secs(30), "no outage read", || async {
        let r = reading(&vhost, &admin).await;
        (r.sink().is_none() && r.ready == Some(50)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_classic_queue_shows_a_paused_worker_as_no_consumer_with_deliveries_held() {
    a_worker_that_holds_deliveries_and_cancels_reads_as_a_sink_down("classic").await;
}

#[tokio::test]
async fn a_quorum_queue_counts_a_paused_worker_but_the_consumer_listing_does_not() {
    a_worker_that_holds_deliveries_and_cancels_reads_as_a_sink_down("quorum").await;
}
