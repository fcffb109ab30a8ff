//! Written once across replicas: with the shared dedup store (the real Redis of
//! `scripts/ensure-redis.sh`, or `REDIS_URL`), a message id written by one replica is not
//! written again by another, even when workers are killed mid-stream; without Redis, the
//! worker says so and goes on with its own cache.

#[macro_use]
mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use support::{
    PipelineOptions, SinkServer, TestDir, TestPipeline, TestVhost, WorkerProcess, eventually,
    free_port, log_body, log_properties, publish, publish_many, redis_url, with_redis,
};

const LOGS: u64 = 20_000;
/// Logs published a second (each followed by its duplicate a second later).
const RATE: u64 = 1_000;

/// Publishes logs `m0..m{LOGS-1}` at [`RATE`] a second, each again (same id, same body) one
/// second later; returns once every copy is published.
async fn publish_twice(vhost: &TestVhost, pipeline: &TestPipeline, done: Arc<AtomicBool>) {
    let (_connection, channel) = vhost.confirm_channel().await;
    let message = |i: u64| {
        (
            "api.info".to_owned(),
            log_body(&format!("m{i}"), "info", i),
            log_properties(&format!("id-{i}"), 0),
        )
    };
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let (mut first, mut second) = (0u64, 0u64);
    while second < LOGS {
        tick.tick().await;
        let elapsed = start.elapsed().as_secs_f64();
        let due = ((elapsed * RATE as f64) as u64).min(LOGS);
        let due_again = (((elapsed - 1.0).max(0.0) * RATE as f64) as u64).min(due);
        publish_many(
            &channel,
            pipeline.exchange(),
            (first..due).chain(second..due_again).map(message),
        )
        .await;
        (first, second) = (due, due_again);
    }
    done.store(true, Ordering::SeqCst);
}

async fn duplicates_counted(workers: &[WorkerProcess]) -> f64 {
    let mut sum = 0.0;
    for w in workers {
        sum += w
            .metric("logstream_messages_total", &[("outcome", "duplicate")])
            .await
            .unwrap_or(0.0);
    }
    sum
}

async fn redis_pipeline(vhost: &TestVhost, queue_type: &'static str) -> TestPipeline {
    TestPipeline::declare(
        vhost,
        &PipelineOptions {
            queue_type,
            max_attempts: 3,
            prefetch: 200,
            batch_max: 100,
            linger: "50ms",
            ..PipelineOptions::default()
        },
    )
    .await
}

on_both_queue_types! {
    async fn with_the_shared_store_two_replicas_write_each_of_20000_logs_published_twice_once(queue_type) {
        let vhost = TestVhost::new("redis-twice").await;
        let pipeline = redis_pipeline(&vhost, queue_type).await;
        let sink = SinkServer::start_with_delay(Duration::from_millis(5), |_| 200).await;
        let dir = TestDir::new("redis-twice");
        let config = with_redis(&dir, pipeline.config_for(&sink.url), &redis_url());
        let workers = [
            WorkerProcess::spawn(&dir, &vhost, &config),
            WorkerProcess::spawn(&dir, &vhost, &config),
        ];
        for w in &workers {
            w.wait_ready().await;
        }
        publish_twice(&vhost, &pipeline, Arc::new(AtomicBool::new(false))).await;
        eventually(Duration::from_secs(120), "every copy settled", || async {
            let counts = sink.written_counts();
            let dup = duplicates_counted(&workers).await;
            (counts.len() as u64 == LOGS && sink.written_len() as f64 + dup >= 2.0 * LOGS as f64)
                .then_some(())
        })
        .await;
        let counts = sink.written_counts();
        let twice = counts.values().filter(|&&n| n > 1).count();
        let per_worker: Vec<f64> = {
            let mut v = Vec::new();
            for w in &workers {
                v.push(
                    w.metric("logstream_messages_total", &[("outcome", "ok")])
                        .await
                        .unwrap_or(0.0),
                );
            }
            v
        };
        eprintln!(
            "{queue_type}: {LOGS} logs published twice to 2 replicas: {} written, {twice} written twice, {} duplicates dropped, writes per replica {per_worker:?}",
            counts.len(),
            duplicates_counted(&workers).await,
        );
        assert_eq!(counts.len() as u64, LOGS);
        assert_eq!(twice, 0, "each written exactly once");
        assert!(per_worker.iter().all(|&n| n > 0.0), "both replicas wrote");
        for w in &workers {
            assert_eq!(
                w.metric("logstream_dedup_store_up", &[]).await,
                Some(1.0),
                "the store answered"
            );
        }
    }
}

on_both_queue_types! {
    async fn with_the_shared_store_five_sigkills_mid_stream_write_almost_nothing_twice(queue_type) {
        let vhost = TestVhost::new("redis-kills").await;
        let pipeline = redis_pipeline(&vhost, queue_type).await;
        let sink = SinkServer::start_with_delay(Duration::from_millis(5), |_| 200).await;
        let dir = TestDir::new("redis-kills");
        let config = with_redis(&dir, pipeline.config_for(&sink.url), &redis_url());
        let mut workers = [
            WorkerProcess::spawn(&dir, &vhost, &config),
            WorkerProcess::spawn(&dir, &vhost, &config),
        ];
        let done = Arc::new(AtomicBool::new(false));
        let mut random = support::Random::seeded();
        let kill_times = std::sync::Mutex::new(Vec::new());
        let kills = async {
            for kill in 1..=5 {
                // One kill every ~3 s of the ~21 s stream, at a random moment.
                tokio::time::sleep(Duration::from_millis(2_000 + random.below(2_000))).await;
                let victim = random.below(2) as usize;
                workers[victim].kill();
                kill_times.lock().unwrap().push(Instant::now());
                eprintln!("kill {kill}: {} logs written so far", sink.written_len());
                workers[victim] = WorkerProcess::spawn(&dir, &vhost, &config);
            }
        };
        tokio::join!(publish_twice(&vhost, &pipeline, Arc::clone(&done)), kills);
        assert!(done.load(Ordering::SeqCst));
        eventually(Duration::from_secs(120), "every log written", || async {
            (sink.written_counts().len() as u64 == LOGS).then_some(())
        })
        .await;
        eventually(Duration::from_secs(60), "the main queue drained", || async {
            (vhost.ready(&pipeline.config.queue).await == 0
                && vhost.unacked(&pipeline.config.queue).await == Some(0))
            .then_some(())
        })
        .await;
        let counts = sink.written_counts();
        let duplicate_writes = sink.written_len() - counts.len();
        let share = duplicate_writes as f64 / LOGS as f64;
        eprintln!(
            "{queue_type}: 5 kills with the shared store: {} of {LOGS} written, {duplicate_writes} duplicate writes ({:.3} % of logs), DLQ {}",
            counts.len(),
            share * 100.0,
            vhost.ready(&pipeline.config.dead_letter_queue).await,
        );
        assert_eq!(counts.len() as u64, LOGS, "nothing lost");
        assert_eq!(vhost.ready(&pipeline.config.dead_letter_queue).await, 0);
        // The target is under 0.1 % of the logs. What can be promised is less: a log the sink
        // had when its worker was killed (the request sent, the answer or the store's SET not
        // yet done) is written again, as nothing tells whether the sink kept it. On average
        // that is the worker's rate times the sink's latency per kill (Little's law). Every
        // duplicate must be such a log: its first write began shortly before a kill.
        let kills = kill_times.into_inner().unwrap();
        let mut first_write = std::collections::HashMap::new();
        for request in sink.received().iter().filter(|r| r.status / 100 == 2) {
            for log in &request.logs {
                first_write.entry(support::message_of(log)).or_insert(request.at);
            }
        }
        let at_a_kill = |message: &String| {
            let at = first_write[message];
            kills
                .iter()
                .any(|&kill| at <= kill && kill.duration_since(at) < Duration::from_secs(1))
        };
        // What the sink had at each kill: the requests that reached it in the 20 ms before.
        let written = sink.received();
        for (i, &kill) in kills.iter().enumerate() {
            let at_kill: Vec<String> = written
                .iter()
                .filter(|r| r.status / 100 == 2 && r.at <= kill)
                .filter(|r| kill.duration_since(r.at) < Duration::from_millis(20))
                .map(|r| {
                    let twice = r
                        .logs
                        .iter()
                        .filter(|l| counts[&support::message_of(l)] > 1)
                        .count();
                    format!(
                        "{} logs {:.1} ms before ({twice} written twice)",
                        r.logs.len(),
                        kill.duration_since(r.at).as_secs_f64() * 1e3
                    )
                })
                .collect();
            eprintln!("{queue_type}: at kill {}: {at_kill:?}", i + 1);
        }
        let unexplained: Vec<&String> = counts
            .iter()
            .filter(|(message, n)| **n > 1 && !at_a_kill(message))
            .map(|(message, _)| message)
            .collect();
        assert!(
            unexplained.is_empty(),
            "written twice without being at the sink at a kill: {unexplained:?}"
        );
    }
}

on_both_queue_types! {
    async fn an_unreachable_store_is_reported_and_the_worker_goes_on_with_its_own_cache(queue_type) {
        let vhost = TestVhost::new("redis-down").await;
        let pipeline = TestPipeline::of_type(&vhost, queue_type).await;
        let sink = SinkServer::accepting().await;
        let dir = TestDir::new("redis-down");
        // Nothing listens there; the password must never show.
        let url = format!("redis://user:s3cret@127.0.0.1:{}/0", free_port());
        let config = with_redis(&dir, pipeline.config_for(&sink.url), &url);
        let worker = WorkerProcess::spawn(&dir, &vhost, &config);
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
        eventually(Duration::from_secs(30), "both logs written", || async {
            (sink.written_counts().len() == 2).then_some(())
        })
        .await;
        eventually(Duration::from_secs(30), "the duplicate dropped", || async {
            let n = worker
                .metric("logstream_messages_total", &[("outcome", "duplicate")])
                .await?;
            (n >= 1.0).then_some(())
        })
        .await;
        assert_eq!(sink.written_len(), 2, "the process cache still works");
        assert_eq!(worker.metric("logstream_dedup_store_up", &[]).await, Some(0.0));
        assert!(
            worker
                .metric("logstream_dedup_store_errors_total", &[])
                .await
                .unwrap_or(0.0)
                >= 1.0
        );
        let log = worker.log();
        assert!(log.contains("failed to reach the shared dedup store"), "{log}");
        assert!(!log.contains("s3cret"), "{log}");
    }
}
