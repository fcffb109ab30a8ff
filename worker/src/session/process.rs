//! Processing a batch, in a task of its own: skip what a replica already wrote (the shared
//! dedup store), decode each body, write the logs to the sink (narrowing a failed write to the
//! logs that fail), remember what was written, and publish a copy of each failed one to the
//! retry ladder or the dead-letter queue; then report how each delivery is to be settled, and
//! which deliveries to hold because the sink is down. Also the other copies: a redelivery's
//! suspect copy, held deliveries put back in the main queue. Nothing here touches the consumer
//! channel.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use futures::future::join_all;
use jiff::Timestamp;
use lapin::{BasicProperties, Channel, message::Delivery};
use logstream_api::{contract::ErrorClass, worker_config::WorkerConfig};
use logstream_broker::{
    PublishOutcome,
    headers::{self, Failure},
};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::{
    CONFIRM_TIMEOUT, Disposition, Pending, REFUSED_REQUEUE_PAUSE, Settlement, TaskReport, Worker,
};
use crate::{
    delivery::{
        decode,
        dedup::DedupKey,
        dedup_store::DedupStore,
        envelope::{LogRecord, Origin},
        republish::{self, Republisher},
        retry_ladder::{Ladder, Route},
    },
    metrics::{Metrics, Returned, Settled},
    sink::{
        Sink, SinkFailure,
        narrow::{self, Verdict},
    },
};

/// What write and copy tasks need.
pub(super) struct TaskContext {
    pub(super) config: Arc<WorkerConfig>,
    pub(super) ladder: Ladder,
    sink: Arc<dyn Sink>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) republisher: Republisher,
    store: Option<Arc<DedupStore>>,
    writes: Semaphore,
    /// False once the session died: its deliveries can no longer be settled.
    pub(super) alive: AtomicBool,
}

impl TaskContext {
    /// What the tasks of a session of `worker` need; copies go out on `publish` (confirm mode).
    pub(super) fn new(worker: &Worker, publish: Channel) -> Self {
        let concurrency = usize::try_from(worker.config.consume.concurrency)
            .unwrap_or(usize::MAX)
            .max(1);
        Self {
            config: Arc::clone(&worker.config),
            ladder: worker.ladder,
            sink: Arc::clone(&worker.sink),
            metrics: Arc::clone(&worker.metrics),
            republisher: Republisher::new(publish, CONFIRM_TIMEOUT),
            store: worker.dedup_store.clone(),
            writes: Semaphore::new(concurrency),
            alive: AtomicBool::new(true),
        }
    }

    /// Writes a batch and reports how each delivery is to be settled, or held. A suspect's
    /// batch (`alone`) does not wait for a write slot. Logs that fail on their own climb the
    /// retry ladder (or go to the DLQ) each on its own; logs not written because the sink is
    /// down are held, charged nothing.
    pub(super) async fn write(&self, batch: Vec<Pending>, alone: bool) -> TaskReport {
        let _permit = if alone {
            None
        } else {
            match self.writes.acquire().await {
                Ok(permit) => Some(permit),
                Err(_) => return TaskReport::default(),
            }
        };
        let mut report = TaskReport::default();
        let batch = self.skip_written_elsewhere(batch, &mut report).await;
        if batch.is_empty() {
            return report;
        }
        let decoded = self.decode(&batch);
        let (verdicts, wrote) = self.write_decoded(decoded).await;
        report.wrote = wrote;
        let written: Vec<DedupKey> = batch
            .iter()
            .zip(&verdicts)
            .filter(|(_, v)| **v == Verdict::Written)
            .map(|(p, _)| p.key)
            .collect();
        if let Some(store) = &self.store {
            // Before the ACKs: a replica that gets a redelivery of these must see them.
            store.remember(&written).await;
        }
        let mut to_copy = Vec::new();
        for (p, verdict) in batch.into_iter().zip(verdicts) {
            match verdict {
                Verdict::Written => {
                    report
                        .settlements
                        .push(Settlement::of(&p, Disposition::Ack(Settled::Ok), true))
                }
                Verdict::Failed(f) => to_copy.push((p, f)),
                Verdict::Held(f) => {
                    report.down_reason.get_or_insert(f.reason);
                    report.held.push(p);
                }
            }
        }
        let copies = to_copy.iter().map(|(p, f)| async move {
            let route = self.ladder.after_failure(p.failed_before, f.class);
            let disposition = self
                .copy(&p.delivery, route, f.class, &f.reason, false)
                .await;
            Settlement::of(p, disposition, false)
        });
        report.settlements.extend(join_all(copies).await);
        report
    }

    /// Settles as duplicates the deliveries of `batch` that the shared store says some worker
    /// wrote already; returns the others.
    async fn skip_written_elsewhere(
        &self,
        batch: Vec<Pending>,
        report: &mut TaskReport,
    ) -> Vec<Pending> {
        let Some(store) = &self.store else {
            return batch;
        };
        let keys: Vec<DedupKey> = batch.iter().map(|p| p.key).collect();
        let Some(written) = store.written(&keys).await else {
            return batch;
        };
        let mut rest = Vec::with_capacity(batch.len());
        for (p, written) in batch.into_iter().zip(written) {
            if written {
                debug!(
                    tag = p.delivery.delivery_tag,
                    "duplicate: written by a replica"
                );
                report.settlements.push(Settlement::of(
                    &p,
                    Disposition::Ack(Settled::Duplicate),
                    true,
                ));
            } else {
                rest.push(p);
            }
        }
        rest
    }

    /// Restamps a broker redelivery as a suspect: a copy to the main queue, charged nothing
    /// (or, when the shared store says it was written, a duplicate).
    pub(super) async fn suspect(
        &self,
        delivery: &Delivery,
        key: DedupKey,
        received: std::time::Instant,
    ) -> Settlement {
        // Not in `in_progress`: the copy may come back before this settlement is applied.
        let settlement = |disposition, remember: bool| Settlement {
            tag: delivery.delivery_tag,
            key: remember.then_some(key),
            remember,
            disposition,
            received,
        };
        if let Some(store) = &self.store
            && store.written(&[key]).await == Some(vec![true])
        {
            return settlement(Disposition::Ack(Settled::Duplicate), true);
        }
        let properties =
            republish::suspect_copy(&delivery.properties, delivery.routing_key.as_str(), 0);
        let disposition = self
            .publish(
                &self.config.queue,
                delivery,
                properties,
                Disposition::AckReturned(Returned::Suspect),
            )
            .await;
        settlement(disposition, false)
    }

    /// Puts `batch` back in the main queue unchanged (attempts, properties and headers kept)
    /// and reports the originals to be ACKed.
    pub(super) async fn put_back(&self, batch: Vec<Pending>, reason: Returned) -> Vec<Settlement> {
        let copies = batch.iter().map(|p| async move {
            let properties =
                republish::returned_copy(&p.delivery.properties, p.delivery.routing_key.as_str());
            let disposition = self
                .publish(
                    &self.config.queue,
                    &p.delivery,
                    properties,
                    Disposition::AckReturned(reason),
                )
                .await;
            Settlement {
                key: None,
                ..Settlement::of(p, disposition, false)
            }
        });
        join_all(copies).await
    }

    /// Decodes each body of `batch`; a body that is not a log is a permanent failure.
    fn decode(&self, batch: &[Pending]) -> Decoded {
        let config = &self.config;
        let limit = usize::try_from(config.consume.max_message_bytes).unwrap_or(usize::MAX);
        let mut decoded = Decoded {
            records: Vec::with_capacity(batch.len()),
            positions: Vec::with_capacity(batch.len()),
            failures: vec![None; batch.len()],
        };
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
                content_type: p
                    .delivery
                    .properties
                    .content_type()
                    .as_ref()
                    .map(|c| c.as_str()),
                amqp_timestamp: *p.delivery.properties.timestamp(),
                received_at: p.received_at,
            };
            // One delivery may carry several logs (OTLP): each is written, and the delivery
            // is settled once from all of them.
            match decode::decode(&p.delivery.data, limit, &origin) {
                Ok(records) => {
                    decoded
                        .positions
                        .extend(std::iter::repeat_n(i, records.len()));
                    decoded.records.extend(records);
                }
                Err(e) => decoded.failures[i] = Some(SinkFailure::permanent(e.to_string())),
            }
        }
        decoded
    }

    /// Writes the decoded logs to the sink, narrowing failures; returns the verdict of each
    /// delivery of the batch and whether the sink wrote anything.
    async fn write_decoded(&self, decoded: Decoded) -> (Vec<Verdict>, bool) {
        let Decoded {
            records,
            positions,
            failures,
        } = decoded;
        let mut verdicts: Vec<Verdict> = failures
            .into_iter()
            .map(|f| f.map_or(Verdict::Written, Verdict::Failed))
            .collect();
        if records.is_empty() {
            return (verdicts, false);
        }
        let narrowed = narrow::write(self.sink.as_ref(), &records).await;
        for &class in &narrowed.errors {
            self.metrics.sink_error(class);
        }
        let failed = narrowed
            .verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Failed(_)))
            .count();
        if let Some(Verdict::Failed(f) | Verdict::Held(f)) = narrowed
            .verdicts
            .iter()
            .find(|v| !matches!(v, Verdict::Written))
        {
            if narrowed.held() {
                debug!(
                    logs = records.len(),
                    "sink write failed, the sink looks down: {}", f.reason
                );
            } else {
                warn!(
                    logs = records.len(),
                    failed,
                    requests = narrowed.errors.len(),
                    "sink write failed for {failed} of {} logs: {}",
                    records.len(),
                    f.reason
                );
            }
        }
        // A delivery of several logs (OTLP) takes the verdict of the worst of them: held when
        // any was held (it comes back whole once the sink is up), else failed when any failed.
        let mut seen = vec![false; verdicts.len()];
        for (&i, verdict) in positions.iter().zip(narrowed.verdicts) {
            verdicts[i] = if seen[i] {
                Verdict::worst(
                    std::mem::replace(&mut verdicts[i], Verdict::Written),
                    verdict,
                )
            } else {
                verdict
            };
            seen[i] = true;
        }
        (verdicts, narrowed.wrote)
    }

    /// Publishes a copy of `delivery` where `route` sends it and tells how to settle the
    /// original. A charged suspect's retry copy stays marked as one.
    pub(super) async fn copy(
        &self,
        delivery: &Delivery,
        route: Route,
        class: ErrorClass,
        reason: &str,
        charged_suspect: bool,
    ) -> Disposition {
        let CopyTarget { queue, outcome } = self.target(route);
        let failure = Failure {
            class,
            reason,
            attempt: route.attempt(),
        };
        let mut properties = headers::failure_copy(
            &delivery.properties,
            delivery.routing_key.as_str(),
            &failure,
            Timestamp::now(),
        );
        if charged_suspect && matches!(route, Route::Retry { .. }) {
            properties = republish::mark_charged_suspect(properties);
        }
        let disposition = self
            .publish(queue, delivery, properties, Disposition::Ack(outcome))
            .await;
        if matches!(disposition, Disposition::Ack(_)) {
            debug!(queue, attempt = failure.attempt, %class, "republished: {reason}");
        }
        disposition
    }

    /// Publishes a copy of `delivery` with `properties` to `queue`; `confirmed` is how to
    /// settle the original once the broker confirmed the copy.
    async fn publish(
        &self,
        queue: &str,
        delivery: &Delivery,
        properties: BasicProperties,
        confirmed: Disposition,
    ) -> Disposition {
        if !self.alive.load(Ordering::Relaxed) {
            // The original cannot be settled any more; a copy would only duplicate it.
            return Disposition::Abandon;
        }
        let published = self
            .republisher
            .publish(queue, &delivery.data, properties)
            .await;
        match published {
            PublishOutcome::Confirmed => confirmed,
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

    /// The queue a copy on `route` goes to, and how its original counts once it is confirmed.
    fn target(&self, route: Route) -> CopyTarget<'_> {
        let dead_letter = CopyTarget {
            queue: &self.config.dead_letter_queue,
            outcome: Settled::DeadLettered,
        };
        match route {
            Route::Retry { step, .. } => match self.config.retry.get(step) {
                Some(s) => CopyTarget {
                    queue: &s.queue,
                    outcome: Settled::Retried,
                },
                None => dead_letter,
            },
            Route::DeadLetter { .. } => dead_letter,
        }
    }
}

/// A batch after decoding: the logs to write, and what failed already.
struct Decoded {
    /// The logs that decoded, in batch order (a delivery may carry several).
    records: Vec<LogRecord>,
    /// The batch position of the delivery each of `records` came from.
    positions: Vec<usize>,
    /// Per batch position: why that delivery failed (`None` so far: decoded).
    failures: Vec<Option<SinkFailure>>,
}

/// Where a copy goes.
struct CopyTarget<'a> {
    /// The retry step's queue, or the dead-letter queue.
    queue: &'a str,
    /// How the original counts once the copy is confirmed.
    outcome: Settled,
}
