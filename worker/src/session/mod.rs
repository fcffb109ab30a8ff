//! One broker connection's life: consume the main queue, batch deliveries to the sink, settle
//! each delivery exactly once, and on shutdown stop consuming and settle what is in flight.
//!
//! One task owns the consumer channel and everything about ACKs, so settlements reach the
//! wire in the order they were decided: a NACK always goes out before a later multiple ACK
//! that would otherwise cover it. Sink writes and copy publishes run in other tasks and report
//! back. When the connection dies, nothing more is sent on it: its open deliveries come back
//! by redelivery, and logs that were written before the loss are remembered in the dedup cache
//! so that their redeliveries are ACKed without a second write.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::{StreamExt, future::join_all};
use jiff::Timestamp;
use lapin::{
    Channel, Consumer,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    },
    types::{FieldTable, ShortString},
};
use logstream_api::{contract::ErrorClass, worker_config::WorkerConfig};
use logstream_broker::{
    BrokerConnection, BrokerEndpoint, BrokerError, PublishOutcome, Purpose,
    headers::{self, Failure},
};
use tokio::{sync::Semaphore, task::JoinSet, time::sleep_until};
use tracing::{debug, error, info, warn};

use crate::{
    delivery::{
        ack_tracker::{AckTracker, DeliveryTag},
        batch::Batcher,
        dedup::{DedupCache, DedupKey},
        envelope::{self, Origin},
        republish::{self, Republisher},
        retry_ladder::{Admission, Ladder, Route},
    },
    metrics::{Metrics, Settled},
    sink::{Sink, SinkFailure, WriteOutcome},
};

/// Longest wait for the broker to confirm a retry or dead-letter copy.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause before a delivery whose copy was refused goes back to the queue, so that a full DLQ
/// does not turn into a hot redelivery loop.
pub const REFUSED_REQUEUE_PAUSE: Duration = Duration::from_secs(1);

/// What every session of one worker process shares.
pub struct Worker {
    /// The configuration.
    pub config: Arc<WorkerConfig>,
    /// The retry ladder.
    pub ladder: Ladder,
    /// The sink.
    pub sink: Arc<dyn Sink>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// `/readyz`: true while connected and consuming.
    pub ready: Arc<AtomicBool>,
}

/// Why a session could not start or ended without being asked to.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The connection could not be opened (the error tells an unreachable broker from
    /// refused credentials or a missing vhost).
    #[error(transparent)]
    Connect(BrokerError),
    /// A queue the worker needs does not exist.
    #[error(
        "failed to find queue {queue} on vhost {vhost}: the pipeline's topology is not declared (the operator declares it)"
    )]
    MissingQueue {
        /// The queue.
        queue: String,
        /// The vhost.
        vhost: String,
    },
    /// A channel operation failed while setting up.
    #[error("failed to {action}: {source}")]
    Setup {
        /// What was being done.
        action: String,
        /// The broker's or client's words.
        source: BrokerError,
    },
    /// The connection or the consumer channel failed.
    #[error("lost the broker connection: {0}")]
    Lost(lapin::Error),
    /// The broker cancelled the consumer (the queue was deleted, or a quorum queue's leader
    /// moved away).
    #[error("the broker cancelled the consumer of queue {0}")]
    Cancelled(String),
    /// The channel copies are published on closed.
    #[error("the publishing channel closed")]
    PublishChannelClosed,
    /// A write task died; its deliveries cannot be settled on this channel any more.
    #[error("failed to finish a sink write: {0}")]
    Task(String),
    /// An ACK or NACK could not be sent.
    #[error("failed to settle deliveries: {0}")]
    Settle(lapin::Error),
}

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// Shutdown was requested; `settled` tells whether every delivery was settled in time.
    Stopped {
        /// False when the grace period ran out first.
        settled: bool,
    },
    /// The connection was lost; reconnect.
    Lost(SessionError),
}

/// A delivery waiting for (or in) a sink write.
struct Pending {
    delivery: Delivery,
    key: DedupKey,
    received: Instant,
    received_at: Timestamp,
    failed_before: u32,
}

/// How one delivery is to be settled, as a task reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disposition {
    /// ACK it; count it as settled this way.
    Ack(Settled),
    /// Its copy was refused: give it back to the queue.
    Requeue,
    /// The session died: leave it to the broker.
    Abandon,
}

#[derive(Debug)]
struct Settlement {
    tag: DeliveryTag,
    /// Set when the delivery was in `in_progress`.
    key: Option<DedupKey>,
    written: bool,
    disposition: Disposition,
    received: Instant,
}

/// What write and copy tasks need.
struct TaskContext {
    config: Arc<WorkerConfig>,
    ladder: Ladder,
    sink: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
    republisher: Republisher,
    writes: Arc<Semaphore>,
    alive: AtomicBool,
}

/// An open connection with its consumer.
pub struct Session {
    connection: BrokerConnection,
    consume: Channel,
    consumer: Option<Consumer>,
    consumer_tag: ShortString,
    ctx: Arc<TaskContext>,
    ready: Arc<AtomicBool>,
    tracker: AckTracker,
    batcher: Batcher<Pending>,
    in_progress: HashSet<DedupKey>,
    tasks: JoinSet<Vec<Settlement>>,
}

impl Session {
    /// Connects to `broker`, checks the topology, and starts consuming.
    pub async fn start(worker: &Worker, broker: &BrokerEndpoint) -> Result<Self, SessionError> {
        let config = &worker.config;
        let name = format!("logstream-worker {}/{}", config.pipeline, config.output);
        let connection = BrokerConnection::open(broker, &name, Purpose::Messages)
            .await
            .map_err(SessionError::Connect)?;
        match open_channels(worker, &connection).await {
            Ok(channels) => Ok(Self::new(worker, connection, channels)),
            Err(e) => {
                connection.close().await;
                Err(e)
            }
        }
    }

    fn new(worker: &Worker, connection: BrokerConnection, channels: Channels) -> Self {
        let Channels {
            publish,
            consume,
            consumer,
            consumer_tag,
        } = channels;
        let config = &worker.config;
        let concurrency = usize::try_from(config.consume.concurrency)
            .unwrap_or(usize::MAX)
            .max(1);
        let batch_max = usize::try_from(config.consume.batch_max_messages).unwrap_or(1);
        worker.ready.store(true, Ordering::Relaxed);
        info!(queue = %config.queue, prefetch = config.consume.prefetch, "consuming");
        Self {
            connection,
            consume,
            consumer: Some(consumer),
            consumer_tag,
            ctx: Arc::new(TaskContext {
                config: Arc::clone(&worker.config),
                ladder: worker.ladder,
                sink: Arc::clone(&worker.sink),
                metrics: Arc::clone(&worker.metrics),
                republisher: Republisher::new(publish, CONFIRM_TIMEOUT),
                writes: Arc::new(Semaphore::new(concurrency)),
                alive: AtomicBool::new(true),
            }),
            ready: Arc::clone(&worker.ready),
            tracker: AckTracker::new(),
            batcher: Batcher::new(batch_max, config.consume.batch_linger.as_std()),
            in_progress: HashSet::new(),
            tasks: JoinSet::new(),
        }
    }

    /// Consumes until the connection is lost or `stop` fires; then settles what is in flight
    /// within `grace` and closes the connection.
    pub async fn run(
        mut self,
        stop: &mut tokio::sync::watch::Receiver<bool>,
        dedup: &mut DedupCache,
        grace: Duration,
    ) -> SessionEnd {
        let mut stop_deadline: Option<tokio::time::Instant> = None;
        let mut lost: Option<SessionError> = None;
        if *stop.borrow() {
            stop_deadline = Some(tokio::time::Instant::now() + grace);
            self.begin_stop(&mut lost).await;
        }
        loop {
            if self.consumer.is_none() && self.batcher.is_empty() && self.tasks.is_empty() {
                break;
            }
            let batch_deadline = self.batcher.deadline().map(tokio::time::Instant::from_std);
            tokio::select! {
                biased;
                _ = stop.changed(), if stop_deadline.is_none() && lost.is_none() => {
                    stop_deadline = Some(tokio::time::Instant::now() + grace);
                    self.begin_stop(&mut lost).await;
                }
                () = sleep_until(stop_deadline.unwrap_or_else(far_future)), if stop_deadline.is_some() => {
                    warn!(
                        open = self.tracker.open(),
                        "shutdown grace period over; the broker requeues what is still unsettled"
                    );
                    self.ready.store(false, Ordering::Relaxed);
                    self.tasks.abort_all();
                    self.connection.close().await;
                    return SessionEnd::Stopped { settled: false };
                }
                Some(joined) = self.tasks.join_next() => {
                    match joined {
                        Ok(settlements) => {
                            if let Err(e) = self.apply(settlements, dedup).await {
                                self.lose(&mut lost, e);
                            }
                        }
                        // Its deliveries can never be settled on this channel: start afresh.
                        Err(e) => self.lose(&mut lost, SessionError::Task(e.to_string())),
                    }
                    if lost.is_none() && !self.ctx.republisher.is_open() {
                        self.lose(&mut lost, SessionError::PublishChannelClosed);
                    }
                }
                next = next_delivery(&mut self.consumer), if self.consumer.is_some() => match next {
                    Some(Ok(delivery)) => {
                        if let Err(e) = self.on_delivery(delivery, dedup).await {
                            self.lose(&mut lost, e);
                        }
                    }
                    Some(Err(e)) => self.lose(&mut lost, SessionError::Lost(e)),
                    None => {
                        self.consumer = None;
                        if stop_deadline.is_some() {
                            // Cancelled by us: every delivery is in; write what waits.
                            self.flush_batch();
                        } else if lost.is_none() {
                            let queue = self.ctx.config.queue.clone();
                            self.lose(&mut lost, SessionError::Cancelled(queue));
                        }
                    }
                },
                () = sleep_until(batch_deadline.unwrap_or_else(far_future)), if batch_deadline.is_some() => {
                    self.flush_batch();
                }
            }
        }
        self.ready.store(false, Ordering::Relaxed);
        match lost {
            Some(e) => {
                self.connection.close().await;
                SessionEnd::Lost(e)
            }
            None => {
                let _ = self.consume.close(200, "worker stopping".into()).await;
                self.connection.close().await;
                SessionEnd::Stopped { settled: true }
            }
        }
    }

    /// Stops consuming: cancels the consumer (deliveries already sent still arrive and are
    /// processed) and writes the waiting batch at once.
    async fn begin_stop(&mut self, lost: &mut Option<SessionError>) {
        self.ready.store(false, Ordering::Relaxed);
        info!(
            open = self.tracker.open(),
            "stopping: cancelling the consumer and settling in-flight deliveries"
        );
        if self.consumer.is_some() {
            let cancelled = self
                .consume
                .basic_cancel(self.consumer_tag.clone(), BasicCancelOptions::default())
                .await;
            if let Err(e) = cancelled {
                self.lose(lost, SessionError::Lost(e));
            }
        }
        self.flush_batch();
    }

    /// Marks the session dead: nothing more is sent on it. Deliveries not yet handed to the
    /// sink are dropped (the broker redelivers them); running tasks finish so that what they
    /// wrote is remembered for dedup.
    fn lose(&mut self, lost: &mut Option<SessionError>, e: SessionError) {
        if lost.is_none() {
            warn!("{e}");
            *lost = Some(e);
        }
        self.ready.store(false, Ordering::Relaxed);
        self.ctx.alive.store(false, Ordering::Relaxed);
        self.consumer = None;
        for pending in self.batcher.take() {
            self.in_progress.remove(&pending.key);
            self.ctx.metrics.in_flight.dec();
        }
    }

    async fn on_delivery(
        &mut self,
        delivery: Delivery,
        dedup: &mut DedupCache,
    ) -> Result<(), SessionError> {
        let received = Instant::now();
        let metrics = &self.ctx.metrics;
        let tag = delivery.delivery_tag;
        if let Err(e) = self.tracker.delivered(tag) {
            error!("{e}");
        }
        metrics.in_flight.inc();
        if let Some(sent) = delivery.properties.timestamp() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            #[allow(clippy::cast_precision_loss)] // seconds since 1970 fit an f64 exactly
            let age = (now - *sent as f64).max(0.0);
            metrics.message_age_seconds.observe(age);
        }
        if delivery.redelivered {
            metrics.redelivered.inc();
        }

        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(ShortString::as_str);
        let key = DedupKey::of(message_id, &delivery.data);
        if dedup.contains(key, received) || self.in_progress.contains(&key) {
            debug!(tag, "duplicate: already written or being written");
            return self
                .apply(
                    vec![Settlement {
                        tag,
                        key: None,
                        written: false,
                        disposition: Disposition::Ack(Settled::Duplicate),
                        received,
                    }],
                    dedup,
                )
                .await;
        }

        let history = republish::history(&delivery.properties, delivery.redelivered);
        match self.ctx.ladder.admit(history) {
            Admission::Process { failed_before } => {
                self.in_progress.insert(key);
                let pending = Pending {
                    delivery,
                    key,
                    received,
                    received_at: Timestamp::now(),
                    failed_before,
                };
                if let Some(batch) = self.batcher.push(pending, received) {
                    self.spawn_write(batch);
                }
            }
            Admission::Redelivered(route) => {
                let reason = match route {
                    Route::Retry { attempt, .. } => format!(
                        "redelivered by the broker: the worker holding it stopped before settling it (failed attempt {attempt} of {})",
                        self.ctx.ladder.max_attempts()
                    ),
                    Route::DeadLetter { attempt } => format!(
                        "redelivered by the broker {attempt} times: every worker holding it stopped before settling it"
                    ),
                };
                let ctx = Arc::clone(&self.ctx);
                self.tasks.spawn(async move {
                    let disposition = ctx
                        .copy(&delivery, route, ErrorClass::Redelivered, &reason)
                        .await;
                    vec![Settlement {
                        tag: delivery.delivery_tag,
                        key: None,
                        written: false,
                        disposition,
                        received,
                    }]
                });
            }
        }
        Ok(())
    }

    fn flush_batch(&mut self) {
        let batch = self.batcher.take();
        if !batch.is_empty() {
            self.spawn_write(batch);
        }
    }

    fn spawn_write(&mut self, batch: Vec<Pending>) {
        let ctx = Arc::clone(&self.ctx);
        self.tasks.spawn(async move { ctx.write(batch).await });
    }

    /// Records settlements, then sends the NACKs and the one multiple ACK they allow.
    async fn apply(
        &mut self,
        settlements: Vec<Settlement>,
        dedup: &mut DedupCache,
    ) -> Result<(), SessionError> {
        let alive = self.ctx.alive.load(Ordering::Relaxed);
        let metrics = Arc::clone(&self.ctx.metrics);
        let now = Instant::now();
        for s in settlements {
            if let Some(key) = s.key {
                self.in_progress.remove(&key);
                if s.written {
                    dedup.insert(key, now);
                }
            }
            metrics.in_flight.dec();
            if !alive {
                continue;
            }
            match s.disposition {
                Disposition::Ack(outcome) => {
                    if let Err(e) = self.tracker.ack(s.tag) {
                        error!("{e}");
                        continue;
                    }
                    metrics.count_settled(outcome);
                    metrics
                        .processing_seconds
                        .observe(now.saturating_duration_since(s.received).as_secs_f64());
                }
                Disposition::Requeue => {
                    if let Err(e) = self.tracker.requeue(s.tag) {
                        error!("{e}");
                        continue;
                    }
                    metrics.settle_refused.inc();
                    metrics
                        .processing_seconds
                        .observe(now.saturating_duration_since(s.received).as_secs_f64());
                    self.consume
                        .basic_nack(
                            s.tag,
                            BasicNackOptions {
                                multiple: false,
                                requeue: true,
                            },
                        )
                        .await
                        .map_err(SessionError::Settle)?;
                }
                Disposition::Abandon => {}
            }
        }
        if alive && let Some(upto) = self.tracker.take_ackable() {
            self.consume
                .basic_ack(upto, BasicAckOptions { multiple: true })
                .await
                .map_err(SessionError::Settle)?;
        }
        Ok(())
    }
}

impl TaskContext {
    /// Decodes and writes a batch, republishes what failed, and reports how each delivery is
    /// to be settled. Batch failures are not retried in-process: every log of a batch that
    /// failed transiently climbs the retry ladder on its own.
    async fn write(&self, batch: Vec<Pending>) -> Vec<Settlement> {
        let Ok(_permit) = self.writes.acquire().await else {
            return Vec::new();
        };
        let config = &self.config;
        let limit = usize::try_from(config.consume.max_message_bytes).unwrap_or(usize::MAX);
        let mut failures: Vec<Option<SinkFailure>> = vec![None; batch.len()];
        let mut records = Vec::with_capacity(batch.len());
        let mut positions = Vec::with_capacity(batch.len());
        for (i, p) in batch.iter().enumerate() {
            let hex;
            let id = match p.delivery.properties.message_id() {
                Some(id) if !id.as_str().is_empty() => id.as_str(),
                _ => {
                    hex = p.key.to_hex();
                    hex.as_str()
                }
            };
            let origin = Origin {
                namespace: &config.namespace,
                pipeline: &config.pipeline,
                output: &config.output,
                attempt: p.failed_before.saturating_add(1),
                id,
                amqp_timestamp: *p.delivery.properties.timestamp(),
                received_at: p.received_at,
            };
            match envelope::decode(&p.delivery.data, limit, &origin) {
                Ok(record) => {
                    records.push(record);
                    positions.push(i);
                }
                Err(e) => failures[i] = Some(SinkFailure::permanent(e.to_string())),
            }
        }
        if !records.is_empty() {
            match self.sink.write(&records).await {
                WriteOutcome::Written => {}
                WriteOutcome::Failed(failure) => {
                    warn!(logs = records.len(), class = %failure.class, "sink write failed: {}", failure.reason);
                    self.metrics.sink_error(failure.class);
                    for &i in &positions {
                        failures[i] = Some(failure.clone());
                    }
                }
                WriteOutcome::PerItem(items) => {
                    for (j, &i) in positions.iter().enumerate() {
                        let item = items.get(j).cloned().unwrap_or_else(|| {
                            Some(SinkFailure::transient(
                                "the sink said nothing about this log",
                            ))
                        });
                        if let Some(failure) = item {
                            self.metrics.sink_error(failure.class);
                            failures[i] = Some(failure);
                        }
                    }
                }
            }
        }
        let settle = batch.iter().zip(failures).map(|(p, failure)| async move {
            let (written, disposition) = match failure {
                None => (true, Disposition::Ack(Settled::Ok)),
                Some(f) => {
                    let route = self.ladder.after_failure(p.failed_before, f.class);
                    (
                        false,
                        self.copy(&p.delivery, route, f.class, &f.reason).await,
                    )
                }
            };
            Settlement {
                tag: p.delivery.delivery_tag,
                key: Some(p.key),
                written,
                disposition,
                received: p.received,
            }
        });
        join_all(settle).await
    }

    /// Publishes a copy of `delivery` where `route` sends it and tells how to settle the original.
    async fn copy(
        &self,
        delivery: &Delivery,
        route: Route,
        class: ErrorClass,
        reason: &str,
    ) -> Disposition {
        if !self.alive.load(Ordering::Relaxed) {
            // The original cannot be settled any more; a copy would only duplicate it.
            return Disposition::Abandon;
        }
        let (queue, outcome) = match route {
            Route::Retry { step, .. } => match self.config.retry.get(step) {
                Some(s) => (s.queue.as_str(), Settled::Retried),
                None => (
                    self.config.dead_letter_queue.as_str(),
                    Settled::DeadLettered,
                ),
            },
            Route::DeadLetter { .. } => (
                self.config.dead_letter_queue.as_str(),
                Settled::DeadLettered,
            ),
        };
        let failure = Failure {
            class,
            reason,
            attempt: route.attempt(),
        };
        let properties = headers::failure_copy(
            &delivery.properties,
            delivery.routing_key.as_str(),
            &failure,
            Timestamp::now(),
        );
        let published = self
            .republisher
            .publish(queue, &delivery.data, properties)
            .await;
        match published {
            PublishOutcome::Confirmed => {
                debug!(queue, attempt = failure.attempt, %class, "republished: {reason}");
                Disposition::Ack(outcome)
            }
            PublishOutcome::Lost { .. } => {
                warn!(
                    "failed to publish a copy to queue {queue}: {}",
                    published.problem().unwrap_or_default()
                );
                Disposition::Abandon
            }
            PublishOutcome::Nacked
            | PublishOutcome::Returned { .. }
            | PublishOutcome::Unconfirmed { .. } => {
                warn!(
                    "failed to publish a copy to queue {queue}: {}; the delivery goes back to the queue",
                    published.problem().unwrap_or_default()
                );
                tokio::time::sleep(REFUSED_REQUEUE_PAUSE).await;
                Disposition::Requeue
            }
        }
    }
}

/// The channels of a session.
struct Channels {
    /// Confirm mode: retry and dead-letter copies.
    publish: Channel,
    /// Prefetch: the consumer's.
    consume: Channel,
    consumer: Consumer,
    consumer_tag: ShortString,
}

/// Checks the topology, opens the publishing channel (confirm mode) and the consuming channel
/// (prefetch), and starts the consumer.
async fn open_channels(
    worker: &Worker,
    connection: &BrokerConnection,
) -> Result<Channels, SessionError> {
    let config = &worker.config;
    let setup = |action: String| move |source| SessionError::Setup { action, source };

    check_topology(connection, config).await?;

    let publish = connection
        .confirm_channel()
        .await
        .map_err(setup("open the publishing channel".into()))?;
    let consume = connection
        .channel()
        .await
        .map_err(setup("open the consuming channel".into()))?;
    consume
        .basic_qos(config.consume.prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| connection.error("set prefetch on queue", &config.queue, &e))
        .map_err(setup(format!("set prefetch {}", config.consume.prefetch)))?;
    let consumer_tag = ShortString::from(consumer_tag());
    let consumer = consume
        .basic_consume(
            ShortString::from(config.queue.as_str()),
            consumer_tag.clone(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| connection.error("consume queue", &config.queue, &e))
        .map_err(setup(format!("consume queue {}", config.queue)))?;

    Ok(Channels {
        publish,
        consume,
        consumer,
        consumer_tag,
    })
}

/// Passively checks that the main queue, the retry steps and the DLQ exist.
async fn check_topology(
    connection: &BrokerConnection,
    config: &WorkerConfig,
) -> Result<(), SessionError> {
    let queues = std::iter::once(&config.queue)
        .chain(config.retry.iter().map(|s| &s.queue))
        .chain(std::iter::once(&config.dead_letter_queue));
    for queue in queues {
        match connection.require_queue(queue).await {
            Ok(_) => {}
            Err(BrokerError::NotFound { .. }) => {
                return Err(SessionError::MissingQueue {
                    queue: queue.clone(),
                    vhost: config.vhost.clone(),
                });
            }
            Err(source) => {
                return Err(SessionError::Setup {
                    action: format!("check queue {queue}"),
                    source,
                });
            }
        }
    }
    Ok(())
}

async fn next_delivery(consumer: &mut Option<Consumer>) -> Option<Result<Delivery, lapin::Error>> {
    match consumer {
        Some(c) => c.next().await,
        None => std::future::pending().await,
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

/// A consumer tag that tells the worker apart in the management UI: the pod (host) name and
/// the process id.
fn consumer_tag() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    let tag = format!("logstream-worker.{host}.{}", std::process::id());
    // Consumer tags are AMQP short strings (at most 255 bytes).
    tag.chars().take(200).collect()
}
