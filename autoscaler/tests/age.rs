//! The age the autoscaler decides on, against the real broker: never stale, never masked,
//! estimated within a quarter of the truth where the broker reports no head timestamp. Each
//! test drives the autoscaler's poll over real queues, as the operator's loop does every
//! `pollInterval` (2 s), and prints the ages used beside the true ones.

mod support;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering},
    },
    time::Duration,
};

use jiff::Timestamp;
use lapin::{
    BasicProperties, Channel,
    options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions},
};
use logstream_api::{TopologyPlan, contract::Level, pipeline::QueueType, topology::QueueRole};
use logstream_autoscaler::{OutputScaling, PipelineAutoscaler, ScaleRecord};
use logstream_broker::{BrokerAdmin, QueueStats};
use support::{ReplicaCounter, TestVhost};

/// The operator's default poll interval.
const POLL: Duration = Duration::from_secs(2);

/// One pipeline `test/<name>` with output `o`, under an autoscaler driven by the test.
struct Watched {
    name: String,
    plan: TopologyPlan,
    admin: BrokerAdmin,
    autoscaler: PipelineAutoscaler,
}

impl Watched {
    async fn new(vhost: &TestVhost, name: &str, queue_type: &str) -> Self {
        let manifest = format!(
            "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {{name: {name}}}\nspec:\n  broker: {{secretRef: {{name: r}}}}\n  queueType: {queue_type}\n  outputs:\n    - name: o\n      sink: {{stdout: {{}}}}\n      scaling: {{minReplicas: 1, maxReplicas: 20, maxMessageAge: 30s}}\n"
        );
        let (pipeline, plan, admin) = vhost.apply_manifest("test", &manifest).await;
        let autoscaler = PipelineAutoscaler::new(
            format!("test/{name}"),
            vhost.name.clone(),
            vec![
                OutputScaling::for_output(
                    &plan,
                    "o",
                    pipeline.spec.outputs[0].scaling_settings(),
                    Box::new(ReplicaCounter(Arc::new(AtomicU32::new(1)))),
                )
                .unwrap(),
            ],
        );
        Self {
            name: name.to_owned(),
            plan,
            admin,
            autoscaler,
        }
    }

    fn main(&self) -> String {
        self.plan.queue("o", QueueRole::Main).unwrap().name.clone()
    }

    fn exchange(&self) -> String {
        self.plan.exchange().name.clone()
    }

    async fn poll(&mut self) -> ScaleRecord {
        self.autoscaler.poll(&self.admin).await.remove(0)
    }

    /// The main queue as the management API samples it right now.
    async fn sample(&self, vhost: &TestVhost) -> QueueStats {
        let main = self.main();
        vhost
            .management
            .queue_stats(&vhost.name)
            .await
            .unwrap()
            .into_iter()
            .find(|q| q.name == main)
            .unwrap()
    }
}

/// The age a record's decision used, and whether it was estimated.
fn used(r: &ScaleRecord) -> (f64, bool) {
    (r.decision.signals.age_s, r.decision.signals.age_estimated)
}

fn now_s() -> f64 {
    Timestamp::now().as_millisecond() as f64 / 1000.0
}

/// Publishes `n` logs with `priority` and AMQP `timestamp` (seconds), confirms awaited in
/// windows.
async fn publish_logs(channel: &Channel, exchange: &str, n: usize, priority: u8, timestamp: u64) {
    let mut pending = Vec::new();
    for i in 0..n {
        let confirm = channel
            .basic_publish(
                exchange.into(),
                "api.info".into(),
                BasicPublishOptions::default(),
                format!("{{\"message\":\"log {i}\"}}").as_bytes(),
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_priority(priority)
                    .with_timestamp(timestamp),
            )
            .await
            .unwrap();
        pending.push(confirm);
        if pending.len() >= 500 {
            for c in pending.drain(..) {
                assert!(c.await.unwrap().is_ack());
            }
        }
    }
    for c in pending {
        assert!(c.await.unwrap().is_ack());
    }
}

/// Runs `step` `per_s` times a second until `stop` is set.
async fn paced(per_s: f64, stop: &AtomicBool, mut step: impl AsyncFnMut()) {
    let start = tokio::time::Instant::now();
    let mut n = 0u32;
    while !stop.load(Ordering::SeqCst) {
        step().await;
        n += 1;
        tokio::time::sleep_until(start + Duration::from_secs_f64(f64::from(n) / per_s)).await;
    }
}

/// (a) A queue drained and refilled within the statistics interval: the broker's sample still
/// shows the old head, 60 s old; the age used is the new messages' age within one poll
/// interval and a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_drained_and_refilled_within_the_statistics_interval_is_aged_by_its_new_messages() {
    let vhost = TestVhost::new("age-refill").await;
    let mut w = Watched::new(&vhost, "refill", "classic").await;
    let (_conn, channel) = vhost.confirm_channel().await;
    let old = u64::try_from(Timestamp::now().as_second()).unwrap() - 60;
    let mut caught = 0;
    for attempt in 1..=8 {
        publish_logs(&channel, &w.exchange(), 200, 0, old).await;
        // Until the broker's sample shows the old head: the age is measured, about 60 s.
        let mut seen_old = None;
        for _ in 0..20 {
            let r = w.poll().await;
            if used(&r).0 >= 55.0 {
                seen_old = Some(used(&r));
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let seen_old = seen_old.expect("the sample shows the 60 s old head within 20 s");
        assert!(
            !seen_old.1,
            "a head timestamp is a measurement: {seen_old:?}"
        );

        // Drained; the next poll sees it empty; refilled 1.5 s later; polled at 2 s.
        vhost.drain(&w.main()).await;
        let emptied = w.poll().await;
        assert_eq!(used(&emptied).0, 0.0, "{:?}", emptied.decision);
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let refilled_at = now_s();
        let fresh = u64::try_from(Timestamp::now().as_second()).unwrap();
        publish_logs(&channel, &w.exchange(), 100, 0, fresh).await;
        tokio::time::sleep(POLL.saturating_sub(Duration::from_millis(1_500))).await;
        let r = w.poll().await;
        let truth = now_s() - refilled_at;
        let (age, estimated) = used(&r);
        let sample = w.sample(&vhost).await;
        let stale = sample
            .head_message_timestamp
            .is_some_and(|head| head <= i64::try_from(old).unwrap() + 1);
        eprintln!(
            "attempt {attempt}: age used {age:.1}s ({}), true {truth:.1}s, the sample's head {}; reason: {}",
            if estimated { "estimated" } else { "measured" },
            if stale {
                "still the old one (stale)"
            } else {
                "already fresh"
            },
            r.decision.reason
        );
        assert!(
            (age - truth).abs() <= POLL.as_secs_f64() + 1.0,
            "age used {age:.1}s, true {truth:.1}s"
        );
        if stale {
            caught += 1;
            if caught == 2 {
                return;
            }
        }
        vhost.drain(&w.main()).await;
        w.poll().await;
    }
    panic!("the broker's sample never lagged the refill in 8 attempts ({caught} caught)");
}

/// (b) 50 fresh critical logs ahead of 10,000 info logs published 60 s earlier: the age used is
/// at least 55 s, on a classic priority queue (its head is a critical log) and on a quorum queue
/// (no head timestamp; on RabbitMQ 4 the critical logs are in the high class).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_critical_logs_do_not_hide_info_logs_waiting_for_a_minute() {
    let vhost = TestVhost::new("age-masked").await;
    let mut classic = Watched::new(&vhost, "classic", "classic").await;
    let mut quorum = Watched::new(&vhost, "quorum", "quorum").await;
    let (_conn, channel) = vhost.confirm_channel().await;

    // The infos go to both queues at once while the autoscalers poll, as they always do.
    let (_conn2, channel2) = vhost.confirm_channel().await;
    let infos_at = now_s();
    let stamp = u64::try_from(Timestamp::now().as_second()).unwrap();
    let (classic_exchange, quorum_exchange) = (classic.exchange(), quorum.exchange());
    let published = AtomicBool::new(false);
    let publishing = async {
        tokio::join!(
            publish_logs(
                &channel,
                &classic_exchange,
                10_000,
                Level::Info.priority_on(QueueType::Classic),
                stamp
            ),
            publish_logs(
                &channel2,
                &quorum_exchange,
                10_000,
                Level::Info.priority_on(QueueType::Quorum),
                stamp
            ),
        );
        published.store(true, Ordering::SeqCst);
    };
    // A minute of polls.
    let polling = async {
        while !published.load(Ordering::SeqCst) || now_s() - infos_at < 60.0 {
            classic.poll().await;
            quorum.poll().await;
            tokio::time::sleep(POLL).await;
        }
    };
    tokio::join!(publishing, polling);
    let stamp = u64::try_from(Timestamp::now().as_second()).unwrap();
    for (w, queue_type) in [(&classic, QueueType::Classic), (&quorum, QueueType::Quorum)] {
        let priority = Level::Critical.priority_on(queue_type);
        publish_logs(&channel, &w.exchange(), 50, priority, stamp).await;
    }
    // Until the classic queue's sample shows a critical log at its head: the mask is on.
    let mut masked = false;
    for _ in 0..10 {
        let records = [classic.poll().await, quorum.poll().await];
        let head = classic.sample(&vhost).await.head_message_timestamp;
        masked = head.is_some_and(|h| h >= i64::try_from(stamp).unwrap());
        let truth = now_s() - infos_at;
        for r in &records {
            let (age, estimated) = used(r);
            eprintln!(
                "{}: age used {age:.1}s ({}), true {truth:.1}s{}; reason: {}",
                r.pipeline,
                if estimated { "estimated" } else { "measured" },
                if r.pipeline.ends_with("classic") {
                    format!(
                        ", head age by the sample {:.1}s",
                        head.map_or(f64::NAN, |h| now_s() - h as f64)
                    )
                } else {
                    String::new()
                },
                r.decision.reason
            );
            assert!(age >= 55.0, "{}: age used {age:.1}s", r.pipeline);
        }
        if masked {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert!(
        masked,
        "the classic queue's sample never showed the critical head"
    );
    assert_eq!(classic.name, "classic");
}

/// (c) A quorum queue (no head timestamp) with a backlog that grows while a slow consumer
/// drains it: once the oldest message is 15 s old, the estimate used is within 25 % of its true
/// age (the estimate's error is bounded in seconds, by the statistics lag: see the `age`
/// module).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_estimated_age_of_a_quorum_backlog_is_within_a_quarter_of_the_truth() {
    const PUBLISH_PER_S: f64 = 40.0;
    const CONSUME_PER_S: f64 = 20.0;
    const RUN: Duration = Duration::from_secs(60);
    const COMPARED_FROM_AGE_S: f64 = 15.0;
    let vhost = TestVhost::new("age-quorum").await;
    let mut w = Watched::new(&vhost, "quorum", "quorum").await;
    w.poll().await; // empty

    // Publish times of every message, in order; the consumer takes them FIFO and acks, so the
    // oldest waiting message is the first it has not taken.
    let published: Mutex<Vec<f64>> = Mutex::default();
    let taken = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (_pconn, pchannel) = vhost.confirm_channel().await;
    let cconn = vhost.connect().await;
    let cchannel = cconn.create_channel().await.unwrap();
    let (exchange, main) = (w.exchange(), w.main());
    let producer = paced(PUBLISH_PER_S, &stop, async || {
        let at = now_s();
        publish_logs(&pchannel, &exchange, 1, 0, at as u64).await;
        published.lock().unwrap().push(at);
    });
    let consumer = paced(CONSUME_PER_S, &stop, async || {
        let got = cchannel
            .basic_get(main.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap();
        if let Some(m) = got {
            cchannel
                .basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
                .await
                .unwrap();
            taken.fetch_add(1, Ordering::SeqCst);
        }
    });

    let mut worst: f64 = 0.0;
    let mut compared = 0;
    let polls = async {
        let started = now_s();
        while now_s() - started < RUN.as_secs_f64() {
            tokio::time::sleep(POLL).await;
            let r = w.poll().await;
            let (age, estimated) = used(&r);
            let truth = {
                let published = published.lock().unwrap();
                published
                    .get(taken.load(Ordering::SeqCst))
                    .map(|at| now_s() - at)
            };
            let Some(truth) = truth else { continue };
            let error = (age - truth) / truth;
            eprintln!(
                "t={:>4.1}s backlog {:>4}: age used {age:.1}s ({}), true {truth:.1}s, error {:+.0} %",
                now_s() - started,
                r.reading.and_then(|r| r.ready).unwrap_or(0),
                if estimated { "estimated" } else { "measured" },
                error * 100.0
            );
            if truth >= COMPARED_FROM_AGE_S {
                assert!(estimated, "a quorum queue has no head timestamp to measure");
                worst = worst.max(error.abs());
                compared += 1;
            }
        }
        stop.store(true, Ordering::SeqCst);
    };
    tokio::join!(producer, consumer, polls);
    eprintln!(
        "worst error once the oldest message was {COMPARED_FROM_AGE_S} s old: {:.0} % over {compared} polls",
        worst * 100.0
    );
    assert!(compared >= 10, "{compared} polls compared");
    assert!(worst <= 0.25, "worst error {:.0} %", worst * 100.0);
}
