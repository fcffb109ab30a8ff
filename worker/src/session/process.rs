//! Processing a batch, in a task of its own: decode each body, write the logs to the sink,
//! and publish a copy of each failed one to the retry ladder or the dead-letter queue; then
//! report how each delivery is to be settled. Nothing here touches the consumer channel.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use futures::future::join_all;
use jiff::Timestamp;
use lapin::{Channel, message::Delivery};
use logstream_api::{contract::ErrorClass, worker_config::WorkerConfig};
use logstream_broker::{
    PublishOutcome,
    headers::{self, Failure},
};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::{CONFIRM_TIMEOUT, Disposition, Pending, REFUSED_REQUEUE_PAUSE, Settlement, Worker};
use crate::{
    delivery::{
        decode,
        envelope::{LogRecord, Origin},
        republish::Republisher,
        retry_ladder::{Ladder, Route},
    },
    metrics::{Metrics, Settled},
    sink::{Sink, SinkFailure, WriteOutcome},
};

/// What write and copy tasks need.
pub(super) struct TaskContext {
    pub(super) config: Arc<WorkerConfig>,
    pub(super) ladder: Ladder,
    sink: Arc<dyn Sink>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) republisher: Republisher,
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
            writes: Semaphore::new(concurrency),
            alive: AtomicBool::new(true),
        }
    }

    /// Decodes and writes a batch, republishes what failed, and reports how each delivery is
    /// to be settled. Batch failures are not retried in-process: every log of a batch that
    /// failed transiently climbs the retry ladder on its own.
    pub(super) async fn write(&self, batch: Vec<Pending>) -> Vec<Settlement> {
        let Ok(_permit) = self.writes.acquire().await else {
            return Vec::new();
        };
        let decoded = self.decode(&batch);
        let failures = self.write_decoded(decoded).await;
        let settle = batch.iter().zip(failures).map(|(p, failure)| async move {
            let written = failure.is_none();
            let disposition = match failure {
                None => Disposition::Ack(Settled::Ok),
                Some(f) => {
                    let route = self.ladder.after_failure(p.failed_before, f.class);
                    self.copy(&p.delivery, route, f.class, &f.reason).await
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

    /// Writes the decoded logs to the sink; returns the failure of each delivery of the batch
    /// (`None`: written).
    async fn write_decoded(&self, decoded: Decoded) -> Vec<Option<SinkFailure>> {
        let Decoded {
            records,
            positions,
            mut failures,
        } = decoded;
        if records.is_empty() {
            return failures;
        }
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
                        failures[i] = Some(SinkFailure::worst(failures[i].take(), failure));
                    }
                }
            }
        }
        failures
    }

    /// Publishes a copy of `delivery` where `route` sends it and tells how to settle the original.
    pub(super) async fn copy(
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
        let CopyTarget { queue, outcome } = self.target(route);
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
