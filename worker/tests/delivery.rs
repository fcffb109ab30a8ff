//! The worker binary against the real broker and a real HTTP sink: every message written once
//! and ACKed, transient failures climbing the retry ladder, permanent ones dead-lettered at once,
//! attempts exhausted after exactly maxAttempts deliveries, critical logs first, duplicates
//! dropped.

#[macro_use]
mod support;

use std::{collections::HashMap, sync::Mutex, time::Duration};

use logstream_api::contract::{
    HEADER_ATTEMPT, HEADER_ERROR, HEADER_ERROR_CLASS, HEADER_FIRST_FAILED_AT,
    HEADER_ORIGIN_ROUTING_KEY,
};
use support::{
    PipelineOptions, SinkServer, TestDir, TestPipeline, TestVhost, WorkerProcess, attempt_of,
    eventually, log_body, log_properties, message_of, publish, publish_many,
};

const SETTLED: Duration = Duration::from_secs(60);

/// Waits until the worker's `outcome` counter reaches `n`.
async fn settled(worker: &WorkerProcess, outcome: &str, n: f64) {
    eventually(
        SETTLED,
        &format!("{n} deliveries settled as {outcome}"),
        || async {
            let value = worker
                .metric("logstream_messages_total", &[("outcome", outcome)])
                .await?;
            (value >= n).then_some(())
        },
    )
    .await;
}

/// Waits until `queue` has no ready message and the management API reports none unacked.
async fn drained(vhost: &TestVhost, queue: &str) {
    eventually(
        SETTLED,
        &format!("{queue} empty with nothing unacked"),
        || async {
            (vhost.ready(queue).await == 0 && vhost.unacked(queue).await == Some(0)).then_some(())
        },
    )
    .await;
}

on_both_queue_types! {
    async fn ten_thousand_messages_are_each_written_once_and_the_queue_ends_empty(queue_type) {
    let vhost = TestVhost::new("ten-thousand").await;
    let pipeline = TestPipeline::declare(
        &vhost,
        &PipelineOptions {
            queue_type,
            prefetch: 200,
            batch_max: 100,
            ..PipelineOptions::default()
        },
    )
    .await;
    let sink = SinkServer::accepting().await;
    let dir = TestDir::new("ten-thousand");
    let (_connection, channel) = vhost.confirm_channel().await;
    publish_many(
        &channel,
        pipeline.exchange(),
        (0..10_000u64).map(|i| {
            (
                "api.info".to_owned(),
                log_body(&format!("m{i}"), "info", i),
                log_properties(&format!("id-{i}"), 0),
            )
        }),
    )
    .await;

    let worker = WorkerProcess::spawn(&dir, &vhost, &pipeline.config_for(&sink.url));
    eventually(SETTLED, "10000 logs written", || async {
        (sink.written_len() >= 10_000).then_some(())
    })
    .await;
    drained(&vhost, &pipeline.config.queue).await;

    let counts = sink.written_counts();
    assert_eq!(counts.len(), 10_000, "every message reached the sink");
    assert!(
        counts.values().all(|&n| n == 1),
        "no message was written twice"
    );
    assert_eq!(sink.written_len(), 10_000);
    settled(&worker, "ok", 10_000.0).await;
    assert_eq!(worker.metric("logstream_in_flight", &[]).await, Some(0.0));
    assert_eq!(vhost.ready(&pipeline.config.dead_letter_queue).await, 0);
    }
}

on_both_queue_types! {
    /// Logs the sink fails on their own while it takes others (Elasticsearch item errors):
    /// each climbs the ladder.
    async fn a_log_failing_k_times_while_others_are_written_gets_through_after_k_retries_through_the_ladder(queue_type) {
    const K: usize = 2;
    let vhost = TestVhost::new("ladder").await;
    let pipeline = TestPipeline::declare(
        &vhost,
        &PipelineOptions {
            queue_type,
            max_attempts: 5,
            backoff: "[1s, 1s]",
            batch_max: 1,
            ..PipelineOptions::default()
        },
    )
    .await;
    // Item 503 for the first K requests carrying a flaky log; 201 otherwise.
    let tries: Mutex<HashMap<String, usize>> = Mutex::new(HashMap::new());
    let sink = SinkServer::start(move |logs| {
        support::bulk_reply(logs, |log| {
            let message = message_of(log);
            if message.starts_with("flaky") {
                let mut tries = tries.lock().unwrap();
                let n = tries.entry(message).or_default();
                *n += 1;
                if *n <= K {
                    return 503;
                }
            }
            201
        })
    })
    .await;
    let dir = TestDir::new("ladder");
    let (_connection, channel) = vhost.confirm_channel().await;
    for i in 0..20u64 {
        let message = if i % 5 == 0 {
            format!("flaky-{i}")
        } else {
            format!("fine-{i}")
        };
        publish(
            &channel,
            pipeline.exchange(),
            "api.info",
            &log_body(&message, "info", i),
            log_properties(&format!("id-{i}"), 0),
        )
        .await;
    }
    let worker = WorkerProcess::spawn(&dir, &vhost, &pipeline.config_for_elasticsearch(&sink.url));

    // On the way: each retry step holds copies that carry the failure in their headers.
    for (step, attempt) in [(0, "1"), (1, "2")] {
        let queue = &pipeline.config.retry[step].queue;
        let copy = eventually(SETTLED, &format!("a copy in {queue}"), || async {
            vhost.peek(queue).await
        })
        .await;
        assert_eq!(copy.header(HEADER_ATTEMPT).as_deref(), Some(attempt));
        assert_eq!(
            copy.header(HEADER_ERROR_CLASS).as_deref(),
            Some("transient")
        );
        let error = copy.header(HEADER_ERROR).unwrap();
        assert!(error.contains("503"), "{error}");
        assert_eq!(
            copy.header(HEADER_ORIGIN_ROUTING_KEY).as_deref(),
            Some("api.info")
        );
        assert!(copy.header(HEADER_FIRST_FAILED_AT).is_some());
        assert!(copy.message_id().unwrap().starts_with("id-"));
    }

    settled(&worker, "ok", 20.0).await;
    let counts = support::written_item_counts(&sink);
    assert_eq!(counts.len(), 20);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    for (message, attempt) in support::written_item_attempts(&sink) {
        let expected = if message.starts_with("flaky") { K + 1 } else { 1 };
        assert_eq!(attempt, expected as u64, "{message}");
        if message.starts_with("flaky") {
            assert_eq!(sink.attempts_of(&message), K + 1, "{message}");
            // The ladder's delays separate the tries.
            let times: Vec<_> = sink
                .received()
                .into_iter()
                .filter(|r| r.logs.iter().any(|l| message_of(l) == message))
                .map(|r| r.at)
                .collect();
            for pair in times.windows(2) {
                assert!(
                    pair[1] - pair[0] >= Duration::from_millis(900),
                    "{message}: retried after {:?}",
                    pair[1] - pair[0]
                );
            }
        }
    }
    assert_eq!(
        worker
            .metric("logstream_messages_total", &[("outcome", "retried")])
            .await,
        Some((4 * K) as f64)
    );
    assert_eq!(
        worker
            .metric("logstream_sink_errors_total", &[("class", "transient")])
            .await,
        Some((4 * K) as f64)
    );
    assert_eq!(vhost.ready(&pipeline.config.dead_letter_queue).await, 0);
    assert_eq!(worker.metric("logstream_sink_outages_total", &[]).await, Some(0.0));
    }
}

on_both_queue_types! {
    async fn undecodable_and_rejected_logs_go_to_the_dlq_with_their_reason_and_are_never_retried(queue_type) {
    let vhost = TestVhost::new("permanent").await;
    let pipeline = TestPipeline::declare(
        &vhost,
        &PipelineOptions {
            queue_type,
            max_attempts: 5,
            batch_max: 1,
            ..PipelineOptions::default()
        },
    )
    .await;
    let sink = SinkServer::start(|logs| {
        if logs.iter().any(|l| message_of(l) == "reject-me") {
            400
        } else {
            200
        }
    })
    .await;
    let dir = TestDir::new("permanent");
    let (_connection, channel) = vhost.confirm_channel().await;
    let oversized = log_body(&"x".repeat(2_000), "info", 3);
    let bodies: [(&str, Vec<u8>); 5] = [
        ("malformed", b"{\"message\": \"unterminated".to_vec()),
        ("not-utf8", b"{\"message\": \"caf\xe9\"}".to_vec()),
        ("oversized", oversized),
        ("rejected", log_body("reject-me", "error", 4)),
        ("good", log_body("fine", "info", 5)),
    ];
    for (id, body) in &bodies {
        publish(
            &channel,
            pipeline.exchange(),
            "api.error",
            body,
            log_properties(id, 2),
        )
        .await;
    }
    let mut config = pipeline.config_for(&sink.url);
    config.consume.max_message_bytes = 1_024;
    let worker = WorkerProcess::spawn(&dir, &vhost, &config);

    settled(&worker, "dead_lettered", 4.0).await;
    settled(&worker, "ok", 1.0).await;
    let dead = vhost.drain(&pipeline.config.dead_letter_queue).await;
    let reasons: HashMap<String, (String, String, String)> = dead
        .iter()
        .map(|m| {
            (
                m.message_id().unwrap(),
                (
                    m.header(HEADER_ERROR).unwrap_or_default(),
                    m.header(HEADER_ERROR_CLASS).unwrap_or_default(),
                    m.header(HEADER_ATTEMPT).unwrap_or_default(),
                ),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    for (id, expected) in [
        ("malformed", "body is not JSON"),
        ("not-utf8", "body is not UTF-8"),
        ("oversized", "over the limit of 1024 bytes"),
        ("rejected", "answered 400"),
    ] {
        let (error, class, attempt) = &reasons[id];
        assert!(error.contains(expected), "{id}: {error}");
        assert_eq!(class, "permanent", "{id}");
        assert_eq!(attempt, "1", "{id}: dead-lettered at the first failure");
    }
    assert_eq!(sink.attempts_of("reject-me"), 1, "a 400 is never retried");
    assert_eq!(sink.written_counts().get("fine"), Some(&1));
    assert_eq!(
        worker
            .metric("logstream_messages_total", &[("outcome", "retried")])
            .await,
        Some(0.0)
    );
    for step in &pipeline.config.retry {
        assert_eq!(vhost.ready(&step.queue).await, 0);
    }
    }
}

on_both_queue_types! {
    /// A log the sink always fails on its own (an Elasticsearch item error) while it takes
    /// others.
    async fn a_log_that_always_fails_gets_exactly_max_attempts_tries_before_the_dlq(queue_type) {
    const MAX_ATTEMPTS: u32 = 4;
    let vhost = TestVhost::new("exhausted").await;
    let pipeline = TestPipeline::declare(
        &vhost,
        &PipelineOptions {
            queue_type,
            max_attempts: MAX_ATTEMPTS,
            backoff: "[50ms, 100ms]",
            ..PipelineOptions::default()
        },
    )
    .await;
    let sink = SinkServer::start(|logs| {
        support::bulk_reply(logs, |log| if message_of(log) == "doomed" { 503 } else { 201 })
    })
    .await;
    let dir = TestDir::new("exhausted");
    let (_connection, channel) = vhost.confirm_channel().await;
    publish(
        &channel,
        pipeline.exchange(),
        "api.info",
        &log_body("doomed", "info", 1),
        log_properties("doomed-1", 0),
    )
    .await;
    let worker = WorkerProcess::spawn(&dir, &vhost, &pipeline.config_for_elasticsearch(&sink.url));

    settled(&worker, "dead_lettered", 1.0).await;
    let dead = vhost.drain(&pipeline.config.dead_letter_queue).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].header(HEADER_ATTEMPT),
        Some(MAX_ATTEMPTS.to_string())
    );
    assert_eq!(
        dead[0].header(HEADER_ERROR_CLASS).as_deref(),
        Some("transient")
    );
    assert_eq!(sink.attempts_of("doomed"), MAX_ATTEMPTS as usize);
    let attempts: Vec<u64> = sink
        .received()
        .iter()
        .flat_map(|r| r.logs.iter().map(attempt_of))
        .collect();
    assert_eq!(attempts, (1..=u64::from(MAX_ATTEMPTS)).collect::<Vec<_>>());
    assert_eq!(
        worker
            .metric("logstream_messages_total", &[("outcome", "retried")])
            .await,
        Some(f64::from(MAX_ATTEMPTS - 1))
    );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_logs_queued_behind_five_thousand_infos_are_written_first() {
    const PREFETCH: u16 = 50;
    let vhost = TestVhost::new("priority").await;
    let pipeline = TestPipeline::declare(
        &vhost,
        &PipelineOptions {
            prefetch: PREFETCH,
            batch_max: 10,
            ..PipelineOptions::default()
        },
    )
    .await;
    let sink = SinkServer::accepting().await;
    let dir = TestDir::new("priority");
    let (_connection, channel) = vhost.confirm_channel().await;
    let infos = (0..5_000u64).map(|i| {
        (
            "api.info".to_owned(),
            log_body(&format!("info-{i}"), "info", i),
            log_properties(&format!("info-{i}"), 0),
        )
    });
    let criticals = (0..50u64).map(|i| {
        (
            "api.critical".to_owned(),
            log_body(&format!("critical-{i}"), "critical", i),
            log_properties(&format!("critical-{i}"), 3),
        )
    });
    publish_many(&channel, pipeline.exchange(), infos.chain(criticals)).await;

    let worker = WorkerProcess::spawn(&dir, &vhost, &pipeline.config_for(&sink.url));
    settled(&worker, "ok", 5_050.0).await;
    let order: Vec<String> = sink.written().iter().map(message_of).collect();
    assert_eq!(order.len(), 5_050);
    let positions: Vec<usize> = order
        .iter()
        .enumerate()
        .filter(|(_, m)| m.starts_with("critical"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(positions.len(), 50);
    let last = *positions.last().unwrap();
    eprintln!(
        "critical logs were writes {}..={} of {}",
        positions[0] + 1,
        last + 1,
        order.len()
    );
    assert!(
        last < usize::from(PREFETCH) + 100,
        "the last critical log was write number {}",
        last + 1
    );
}

on_both_queue_types! {
    async fn a_message_id_published_twice_is_written_once_and_counted_as_a_duplicate(queue_type) {
    let vhost = TestVhost::new("dedup").await;
    let pipeline = TestPipeline::declare(&vhost, &PipelineOptions {
            queue_type,
            ..PipelineOptions::default()
        }).await;
    let sink = SinkServer::accepting().await;
    let dir = TestDir::new("dedup");
    let (_connection, channel) = vhost.confirm_channel().await;
    for (id, message) in [("same", "twice"), ("same", "twice"), ("other", "once")] {
        publish(
            &channel,
            pipeline.exchange(),
            "api.info",
            &log_body(message, "info", 1),
            log_properties(id, 0),
        )
        .await;
    }
    let worker = WorkerProcess::spawn(&dir, &vhost, &pipeline.config_for(&sink.url));

    settled(&worker, "duplicate", 1.0).await;
    settled(&worker, "ok", 2.0).await;
    drained(&vhost, &pipeline.config.queue).await;
    let counts = sink.written_counts();
    assert_eq!(counts.get("twice"), Some(&1));
    assert_eq!(counts.get("once"), Some(&1));
    assert_eq!(
        worker
            .metric("logstream_messages_total", &[("outcome", "duplicate")])
            .await,
        Some(1.0)
    );
    }
}

on_both_queue_types! {
    async fn a_duplicate_arriving_after_the_write_is_acked_without_writing(queue_type) {
    let vhost = TestVhost::new("dedup-later").await;
    let pipeline = TestPipeline::declare(&vhost, &PipelineOptions {
            queue_type,
            ..PipelineOptions::default()
        }).await;
    let sink = SinkServer::accepting().await;
    let dir = TestDir::new("dedup-later");
    let (_connection, channel) = vhost.confirm_channel().await;
    let worker = WorkerProcess::spawn(&dir, &vhost, &pipeline.config_for(&sink.url));
    worker.wait_ready().await;
    let send = |body: Vec<u8>| {
        let channel = channel.clone();
        let exchange = pipeline.exchange().to_owned();
        async move {
            publish(
                &channel,
                &exchange,
                "api.info",
                &body,
                log_properties("id-1", 0),
            )
            .await;
        }
    };
    send(log_body("first", "info", 1)).await;
    settled(&worker, "ok", 1.0).await;
    // Same id, even with another body: the id decides.
    send(log_body("first again", "info", 2)).await;
    settled(&worker, "duplicate", 1.0).await;
    drained(&vhost, &pipeline.config.queue).await;
    assert_eq!(sink.written_len(), 1);
    assert_eq!(
        worker
            .metric("logstream_messages_total", &[("outcome", "duplicate")])
            .await,
        Some(1.0)
    );
    }
}

on_both_queue_types! {
    async fn elasticsearch_item_errors_settle_each_log_on_its_own(queue_type) {
    let vhost = TestVhost::new("es-bulk").await;
    let pipeline = TestPipeline::declare(
        &vhost,
        &PipelineOptions {
            queue_type,
            max_attempts: 5,
            backoff: "[100ms]",
            batch_max: 10,
            linger: "300ms",
            ..PipelineOptions::default()
        },
    )
    .await;
    // A 200 whose items say: "bad" is a mapping error (400), "busy" is throttled (429) the
    // first time, everything else is stored.
    let throttled = Mutex::new(false);
    let sink = SinkServer::start(move |logs| {
        support::bulk_reply(logs, |log| match message_of(log).as_str() {
            "bad" => 400,
            "busy" if !std::mem::replace(&mut *throttled.lock().unwrap(), true) => 429,
            _ => 201,
        })
    })
    .await;
    let dir = TestDir::new("es-bulk");
    let (_connection, channel) = vhost.confirm_channel().await;
    for (i, message) in ["fine", "bad", "busy"].into_iter().enumerate() {
        publish(
            &channel,
            pipeline.exchange(),
            "api.info",
            &log_body(message, "info", i as u64),
            log_properties(&format!("es-{message}"), 0),
        )
        .await;
    }
    let mut config = pipeline.config_for(&sink.url);
    config.sink = logstream_api::pipeline::SinkSpec::Http(logstream_api::pipeline::HttpSink {
        url: sink.url.clone(),
        format: Some(logstream_api::pipeline::HttpFormat::Elasticsearch),
        ..Default::default()
    });
    let worker = WorkerProcess::spawn(&dir, &vhost, &config);

    settled(&worker, "ok", 2.0).await;
    settled(&worker, "dead_lettered", 1.0).await;
    assert_eq!(
        sink.attempts_of("fine"),
        1,
        "a stored item is not sent again"
    );
    assert_eq!(sink.attempts_of("busy"), 2, "a 429 item is retried");
    assert_eq!(sink.attempts_of("bad"), 1, "a 400 item is never retried");
    let dead = vhost.drain(&pipeline.config.dead_letter_queue).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id().as_deref(), Some("es-bad"));
    assert_eq!(
        dead[0].header(HEADER_ERROR_CLASS).as_deref(),
        Some("permanent")
    );
    let error = dead[0].header(HEADER_ERROR).unwrap();
    assert!(
        error.contains("400") && error.contains("test_error"),
        "{error}"
    );
    assert_eq!(
        worker
            .metric("logstream_messages_total", &[("outcome", "retried")])
            .await,
        Some(1.0)
    );
    // The bulk request indexes each log under its message id.
    let first = &sink.received()[0];
    assert_eq!(first.logs.len(), 3, "one bulk request for the batch");
    assert_eq!(first.logs[0]["logstream"]["message_id"], "es-fine");
    }
}

on_both_queue_types! {
    async fn a_copy_refused_by_a_full_dlq_leaves_the_original_in_the_queue(queue_type) {
    let vhost = TestVhost::new("dlq-full").await;
    let pipeline = TestPipeline::declare(
        &vhost,
        &PipelineOptions {
            queue_type,
            max_attempts: 2,
            backoff: "[100ms]",
            batch_max: 1,
            dlq_max_length: Some(1),
            ..PipelineOptions::default()
        },
    )
    .await;
    let sink = SinkServer::accepting().await;
    let dir = TestDir::new("dlq-full");
    let (_connection, channel) = vhost.confirm_channel().await;
    let worker = WorkerProcess::spawn(&dir, &vhost, &pipeline.config_for(&sink.url));
    // One after the other: a quorum queue's length bound is only checked between publishes,
    // and it takes one message beyond its bound before it refuses (RabbitMQ 3.10 and 4.0).
    let fit = if queue_type == "quorum" { 2 } else { 1 };
    let ids: Vec<String> = (1..=fit).map(|i| format!("fits-{i}")).collect();
    for (n, id) in ids.iter().chain(std::iter::once(&"second".to_owned())).enumerate() {
        publish(
            &channel,
            pipeline.exchange(),
            "api.info",
            b"not json",
            log_properties(id, 0),
        )
        .await;
        if n < fit {
            settled(&worker, "dead_lettered", (n + 1) as f64).await;
        }
    }

    eventually(SETTLED, "a refused copy", || async {
        let refused = worker.metric("logstream_settle_refused_total", &[]).await?;
        (refused >= 1.0).then_some(())
    })
    .await;
    assert_eq!(
        vhost.ready(&pipeline.config.dead_letter_queue).await,
        fit as u64
    );
    assert!(
        worker.log().contains("the broker refused it"),
        "the refusal is logged"
    );
    // The second message is not lost: it waits in the pipeline's queues until the DLQ has room.
    let dead = vhost.drain(&pipeline.config.dead_letter_queue).await;
    assert_eq!(dead.len(), fit);
    let second = eventually(SETTLED, "the second message dead-lettered", || async {
        let mut dead = vhost.drain(&pipeline.config.dead_letter_queue).await;
        dead.pop()
    })
    .await;
    assert_eq!(second.message_id().as_deref(), Some("second"));
    assert_eq!(sink.written_len(), 0);
    }
}
