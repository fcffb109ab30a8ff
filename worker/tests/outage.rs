//! A failing sink is not a failing log. While the sink is down (every write fails: 5xx,
//! refused, or 401/403/404 to everything) the worker charges no attempt, sends nothing to the
//! retry ladder or the DLQ, cancels its consumer and holds what it has unacked (the queue shows
//! no consumer and unacked deliveries), probes with backoff, and resumes once a write succeeds;
//! held deliveries go back to the queue unchanged at `holdLimit`. A batch the sink refuses is
//! narrowed to the logs it refuses.

#[macro_use]
mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use lapin::options::BasicGetOptions;
use logstream_api::contract::{HEADER_ATTEMPT, HEADER_ERROR_CLASS};
use support::{
    PipelineOptions, SinkServer, TestDir, TestPipeline, TestVhost, WorkerProcess, attempt_of,
    consumers_and_unacked, cpu_seconds, eventually, log_body, log_properties, message_of,
    publish_many,
};

const SETTLED: Duration = Duration::from_secs(60);

/// Publishes logs `m<first>..m<first+n-1>` with ids `id-<i>`.
async fn publish_logs(vhost: &TestVhost, pipeline: &TestPipeline, first: u64, n: u64) {
    let (_connection, channel) = vhost.confirm_channel().await;
    publish_many(
        &channel,
        pipeline.exchange(),
        (first..first + n).map(|i| {
            (
                "api.info".to_owned(),
                log_body(&format!("m{i}"), "info", i),
                log_properties(&format!("id-{i}"), 0),
            )
        }),
    )
    .await;
}

/// Waits until the main queue shows the worker paused: deliveries held unacked and, on a
/// classic queue, no consumer — the sign, for the autoscaler and `logstream status`, that
/// every worker paused. A quorum queue (RabbitMQ 3.10 and 4.0.5 alike) goes on counting a
/// cancelled consumer as long as it holds deliveries (so does `basic.get`): there the sign is
/// only that nothing more is taken while messages wait.
async fn paused(vhost: &TestVhost, queue: &str, queue_type: &str) -> u64 {
    eventually(
        SETTLED,
        "the worker paused with deliveries held unacked",
        || async {
            match consumers_and_unacked(vhost, queue).await {
                Some((0, unacked)) if unacked > 0 => Some(unacked),
                Some((1, unacked)) if unacked > 0 && queue_type == "quorum" => Some(unacked),
                _ => None,
            }
        },
    )
    .await
}

async fn metric(worker: &WorkerProcess, name: &str) -> f64 {
    worker.metric(name, &[]).await.unwrap_or(f64::NAN)
}

/// Nothing went to the retry ladder or the DLQ, and the worker counted no retry.
async fn nothing_charged(vhost: &TestVhost, pipeline: &TestPipeline, worker: &WorkerProcess) {
    assert_eq!(vhost.ready(&pipeline.config.dead_letter_queue).await, 0);
    for step in &pipeline.config.retry {
        assert_eq!(vhost.ready(&step.queue).await, 0, "{}", step.queue);
    }
    for outcome in ["retried", "dead_lettered"] {
        assert_eq!(
            worker
                .metric("logstream_messages_total", &[("outcome", outcome)])
                .await,
            Some(0.0),
            "{outcome}"
        );
    }
}

/// An outage of the sink answering `status` to everything: held, charged nothing, resumed.
async fn outage_holds_and_charges_nothing(queue_type: &'static str, status: u16) {
    const N: u64 = 300;
    let vhost = TestVhost::new(&format!("outage-{status}")).await;
    let pipeline = TestPipeline::declare(
        &vhost,
        &PipelineOptions {
            queue_type,
            max_attempts: 2,
            backoff: "[100ms]",
            ..PipelineOptions::default()
        },
    )
    .await;
    let sink = SinkServer::accepting().await;
    sink.set_down(Some(status));
    let dir = TestDir::new("outage");
    publish_logs(&vhost, &pipeline, 0, N).await;
    let worker = WorkerProcess::spawn(&dir, &vhost, &pipeline.config_for(&sink.url));

    let unacked = paused(&vhost, &pipeline.config.queue, queue_type).await;
    eventually(SETTLED, "the sink reported down", || async {
        (metric(&worker, "logstream_sink_up").await == 0.0).then_some(())
    })
    .await;
    // Long enough for several probes (1 s, 2 s, 4 s) and for maxAttempts 2 to run out twice.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let expected_consumers = u64::from(queue_type == "quorum");
    assert_eq!(
        consumers_and_unacked(&vhost, &pipeline.config.queue).await,
        Some((expected_consumers, unacked)),
        "still paused: nothing more taken"
    );
    nothing_charged(&vhost, &pipeline, &worker).await;
    assert_eq!(metric(&worker, "logstream_sink_outages_total").await, 1.0);
    let probes = metric(&worker, "logstream_sink_probes_total").await;
    assert!((2.0..=4.0).contains(&probes), "{probes} probes in 5 s");
    assert!(metric(&worker, "logstream_sink_down_seconds").await >= 5.0);
    assert_eq!(sink.written_len(), 0);
    eprintln!("{queue_type}, {status}: {unacked} held unacked, {probes} probes");

    sink.set_down(None);
    eventually(SETTLED, "every log written", || async {
        (sink.written_len() >= N as usize).then_some(())
    })
    .await;
    let counts = sink.written_counts();
    assert_eq!(counts.len(), N as usize);
    assert!(counts.values().all(|&n| n == 1), "written once each");
    assert!(
        sink.written().iter().all(|log| attempt_of(log) == 1),
        "no attempt charged"
    );
    eventually(SETTLED, "the sink reported up", || async {
        (metric(&worker, "logstream_sink_up").await == 1.0).then_some(())
    })
    .await;
    assert_eq!(metric(&worker, "logstream_sink_down_seconds").await, 0.0);
    nothing_charged(&vhost, &pipeline, &worker).await;
}

on_both_queue_types! {
    async fn a_sink_answering_503_holds_deliveries_unacked_without_a_consumer_and_charges_nothing(queue_type) {
        outage_holds_and_charges_nothing(queue_type, 503).await;
    }
}

on_both_queue_types! {
    async fn a_sink_refusing_every_log_with_401_is_misconfigured_not_a_dead_letter_per_log(queue_type) {
        outage_holds_and_charges_nothing(queue_type, 401).await;
    }
}

on_both_queue_types! {
    async fn held_deliveries_go_back_to_the_queue_unchanged_at_the_hold_limit(queue_type) {
        const N: u64 = 20;
        let vhost = TestVhost::new("hold-limit").await;
        let pipeline = TestPipeline::of_type(&vhost, queue_type).await;
        let sink = SinkServer::accepting().await;
        sink.set_down(Some(503));
        let dir = TestDir::new("hold-limit");
        publish_logs(&vhost, &pipeline, 0, N).await;
        let mut config = pipeline.config_for(&sink.url);
        config.hold_limit = logstream_api::Duration::from_secs(3);
        let worker = WorkerProcess::spawn(&dir, &vhost, &config);

        paused(&vhost, &pipeline.config.queue, queue_type).await;
        let returned = eventually(SETTLED, "held deliveries put back", || async {
            let n = worker
                .metric("logstream_returned_total", &[("reason", "hold_limit")])
                .await?;
            (n >= N as f64).then_some(n)
        })
        .await;
        // The copies went back through the queue and are held again (or wait in it): unchanged,
        // still uncharged, and the worker paused again.
        paused(&vhost, &pipeline.config.queue, queue_type).await;
        nothing_charged(&vhost, &pipeline, &worker).await;
        assert!(worker.log().contains("holdLimit"), "the return is logged");

        sink.set_down(None);
        eventually(SETTLED, "every log written", || async {
            (sink.written_counts().len() >= N as usize).then_some(())
        })
        .await;
        let counts = sink.written_counts();
        assert!(counts.values().all(|&n| n == 1), "{counts:?}");
        let attempts: Vec<u64> = sink.written().iter().map(attempt_of).collect();
        assert!(attempts.iter().all(|&a| a == 1), "{attempts:?}\n{}", worker.log());
        // Nothing came back as a redelivery: no delivery was lost in a consumer's cancellation
        // (a quorum queue returns what reaches a cancelled consumer as redelivered, and a
        // redelivered suspect is charged), as the worker takes what it probes with by basic.get.
        assert_eq!(
            worker.metric("logstream_redelivered_total", &[]).await,
            Some(0.0),
            "{}",
            worker.log()
        );
        eprintln!("{queue_type}: {returned} returned at the hold limit, then all {N} written once");
    }
}

on_both_queue_types! {
    async fn a_redelivery_taken_to_probe_with_is_written_alone_as_the_probe(queue_type) {
        let vhost = TestVhost::new("fetched-suspect").await;
        let pipeline = TestPipeline::of_type(&vhost, queue_type).await;
        let queue = pipeline.config.queue.as_str();
        let sink = SinkServer::accepting().await;
        sink.set_down(Some(503));
        // m0 is taken by a consumer that dies holding it: it comes back redelivered, a suspect.
        publish_logs(&vhost, &pipeline, 0, 1).await;
        let dying = vhost.connect().await;
        let dying_channel = dying.create_channel().await.unwrap();
        let taken = dying_channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
            .expect("m0 in the queue");
        assert_eq!(message_of(&serde_json::from_slice(&taken.delivery.data).unwrap()), "m0");
        let dir = TestDir::new("fetched-suspect");
        let mut config = pipeline.config_for(&sink.url);
        config.hold_limit = logstream_api::Duration::from_secs(3);
        let worker = WorkerProcess::spawn(&dir, &vhost, &config);
        publish_logs(&vhost, &pipeline, 1, 1).await;
        eventually(SETTLED, "the worker sees the sink down", || async {
            (worker.metric("logstream_sink_up", &[]).await == Some(0.0)).then_some(())
        })
        .await;
        dying.close(200, "gone".into()).await.unwrap();

        // The worker consumes nothing while the sink is down: what it probes with once m1 went
        // back at the hold limit, it takes by basic.get. m0 is restamped as a suspect on the
        // way (its copy queued behind m1's), and once taken so, written alone: the probe.
        let probe = eventually(SETTLED, "m0 written alone to probe the sink", || async {
            // After m1's first write told the worker that the sink is down.
            let received = sink.received();
            let m1 = received
                .iter()
                .position(|r| r.logs.iter().any(|l| message_of(l) == "m1"))?;
            received[m1..]
                .iter()
                .find(|r| r.logs.len() == 1 && message_of(&r.logs[0]) == "m0")
                .cloned()
        })
        .await;
        assert_eq!(probe.status, 503, "taken while the sink was down\n{}", worker.log());
        assert!(worker.metric("logstream_redelivered_total", &[]).await >= Some(1.0));
        nothing_charged(&vhost, &pipeline, &worker).await;

        sink.set_down(None);
        eventually(SETTLED, "both logs written", || async {
            (sink.written_counts().len() == 2).then_some(())
        })
        .await;
        let counts = sink.written_counts();
        assert!(counts.values().all(|&n| n == 1), "{counts:?}");
        let attempts: Vec<u64> = sink.written().iter().map(attempt_of).collect();
        assert_eq!(attempts, [1, 1], "charged nothing\n{}", worker.log());
        nothing_charged(&vhost, &pipeline, &worker).await;
        eprintln!(
            "{queue_type}: a redelivery taken by basic.get while the sink was down was the probe ({} requests in all)",
            sink.received().len()
        );
    }
}

on_both_queue_types! {
    async fn one_refused_log_in_a_batch_of_100_is_the_only_dead_letter(queue_type) {
        let vhost = TestVhost::new("poison-batch").await;
        let pipeline = TestPipeline::declare(
            &vhost,
            &PipelineOptions {
                queue_type,
                max_attempts: 5,
                prefetch: 100,
                batch_max: 100,
                linger: "2s",
                ..PipelineOptions::default()
            },
        )
        .await;
        let sink = SinkServer::start(|logs| {
            if logs.iter().any(|l| message_of(l) == "m37") {
                400
            } else {
                200
            }
        })
        .await;
        let dir = TestDir::new("poison-batch");
        publish_logs(&vhost, &pipeline, 0, 100).await;
        let worker = WorkerProcess::spawn(&dir, &vhost, &pipeline.config_for(&sink.url));

        eventually(SETTLED, "99 written", || async {
            (sink.written_counts().len() >= 99).then_some(())
        })
        .await;
        let dead = eventually(SETTLED, "one dead letter", || async {
            let dead = vhost.drain(&pipeline.config.dead_letter_queue).await;
            (!dead.is_empty()).then_some(dead)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let dead: Vec<_> = dead
            .into_iter()
            .chain(vhost.drain(&pipeline.config.dead_letter_queue).await)
            .collect();
        assert_eq!(dead.len(), 1, "exactly one dead letter");
        assert_eq!(dead[0].message_id().as_deref(), Some("id-37"));
        assert_eq!(dead[0].header(HEADER_ERROR_CLASS).as_deref(), Some("permanent"));
        assert_eq!(dead[0].header(HEADER_ATTEMPT).as_deref(), Some("1"));
        let counts = sink.written_counts();
        assert_eq!(counts.len(), 99);
        assert!(!counts.contains_key("m37"));
        assert!(counts.values().all(|&n| n == 1));
        let requests = sink.received().len();
        eprintln!("{queue_type}: 1 dead letter, 99 written, in {requests} requests");
        assert_eq!(
            worker
                .metric("logstream_messages_total", &[("outcome", "ok")])
                .await,
            Some(99.0)
        );
        assert_eq!(metric(&worker, "logstream_sink_outages_total").await, 0.0);
    }
}

/// The must-show: two minutes of outage under 200 logs/s with the default ladder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_minute_outage_at_200_logs_per_second_loses_and_dead_letters_nothing_and_idles() {
    const RATE: u64 = 200;
    const BEFORE: Duration = Duration::from_secs(10);
    const OUTAGE: Duration = Duration::from_secs(120);
    const AFTER: Duration = Duration::from_secs(20);
    let vhost = TestVhost::new("long-outage").await;
    // The defaults: ladder 1s, 10s, 60s; 5 attempts; prefetch 200; batches of 100.
    let pipeline = TestPipeline::declare(
        &vhost,
        &PipelineOptions {
            max_attempts: 5,
            backoff: "[1s, 10s, 60s]",
            prefetch: 200,
            batch_max: 100,
            linger: "50ms",
            ..PipelineOptions::default()
        },
    )
    .await;
    let sink = Arc::new(SinkServer::accepting().await);
    let dir = TestDir::new("long-outage");
    let worker = WorkerProcess::spawn(&dir, &vhost, &pipeline.config_for(&sink.url));
    worker.wait_ready().await;

    // The producer: RATE logs a second, in ticks of 50 ms, until told to stop.
    let producing = Arc::new(AtomicBool::new(true));
    let producer = {
        let producing = Arc::clone(&producing);
        let exchange = pipeline.exchange().to_owned();
        let (connection, channel) = vhost.confirm_channel().await;
        tokio::spawn(async move {
            let _connection = connection;
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            let mut sent = 0u64;
            let start = Instant::now();
            while producing.load(Ordering::SeqCst) {
                tick.tick().await;
                let due = (start.elapsed().as_secs_f64() * RATE as f64) as u64;
                publish_many(
                    &channel,
                    &exchange,
                    (sent..due).map(|i| {
                        (
                            "api.info".to_owned(),
                            log_body(&format!("m{i}"), "info", i),
                            log_properties(&format!("id-{i}"), 0),
                        )
                    }),
                )
                .await;
                sent = due.max(sent);
            }
            sent
        })
    };

    tokio::time::sleep(BEFORE).await;
    let written_before = sink.written_len();
    sink.set_down(Some(503));
    let down_at = Instant::now();
    paused(&vhost, &pipeline.config.queue, "classic").await;
    // CPU from 10 s into the outage to its end: the steady state, without the transition.
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(down_at.elapsed())).await;
    let (cpu0, t0) = (cpu_seconds(worker.pid()), Instant::now());
    let mut paused_checks = 0;
    while down_at.elapsed() < OUTAGE {
        tokio::time::sleep(Duration::from_secs(10)).await;
        if let Some((consumers, unacked)) =
            consumers_and_unacked(&vhost, &pipeline.config.queue).await
        {
            assert_eq!(consumers, 0, "no consumer while the sink is down");
            assert!(unacked > 0, "deliveries held unacked");
            paused_checks += 1;
        }
    }
    let cpu = (cpu_seconds(worker.pid()) - cpu0) / t0.elapsed().as_secs_f64();
    let waiting = vhost.ready(&pipeline.config.queue).await;
    let probes = metric(&worker, "logstream_sink_probes_total").await;
    let down_seconds = metric(&worker, "logstream_sink_down_seconds").await;
    nothing_charged(&vhost, &pipeline, &worker).await;

    sink.set_down(None);
    let up_at = Instant::now();
    tokio::time::sleep(AFTER).await;
    producing.store(false, Ordering::SeqCst);
    let sent = producer.await.unwrap();
    let drained = eventually(Duration::from_secs(120), "every log written", || async {
        (sink.written_counts().len() >= sent as usize).then(|| up_at.elapsed())
    })
    .await;
    let counts = sink.written_counts();
    eprintln!(
        "2-minute outage at {RATE} logs/s: {sent} sent, {written_before} written before it; \
         during it: worker CPU {:.2} % of a core, {waiting} waiting in the queue at its end, \
         {probes} probes, down {down_seconds:.0} s; after it: every log written {:.1} s after \
         recovery ({} duplicate writes), DLQ {}",
        cpu * 100.0,
        drained.as_secs_f64(),
        sink.written_len() - counts.len(),
        vhost.ready(&pipeline.config.dead_letter_queue).await,
    );
    assert!(paused_checks >= 5, "{paused_checks} checks while paused");
    assert!(cpu < 0.05, "worker CPU {:.2} % of a core", cpu * 100.0);
    assert_eq!(counts.len(), sent as usize, "0 lost");
    assert!(counts.values().all(|&n| n == 1), "written once each");
    nothing_charged(&vhost, &pipeline, &worker).await;
    assert!(sink.written().iter().all(|log| attempt_of(log) == 1));
    assert_eq!(metric(&worker, "logstream_sink_outages_total").await, 1.0);
    assert!(
        waiting >= (OUTAGE.as_secs() * RATE) / 2,
        "the queue buffered the outage: {waiting}"
    );
}
