//! The session's own task: it owns the consumer channel and every ACK and NACK. It takes
//! deliveries in (see `receive`), hands full batches to write tasks, applies the settlements
//! they report in the order they arrive, and on a stop or a lost connection winds down.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use futures::StreamExt;
use lapin::{
    Consumer,
    message::Delivery,
    options::{BasicAckOptions, BasicCancelOptions, BasicNackOptions},
};
use tokio::time::sleep_until;
use tracing::{error, info, warn};

use super::{Disposition, Pending, Session, SessionEnd, SessionError, Settlement};
use crate::delivery::dedup::DedupCache;

impl Session {
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

    /// Hands the waiting batch, if any, to a write task.
    fn flush_batch(&mut self) {
        let batch = self.batcher.take();
        if !batch.is_empty() {
            self.spawn_write(batch);
        }
    }

    /// Writes `batch` in a task of its own, which reports the batch's settlements.
    pub(super) fn spawn_write(&mut self, batch: Vec<Pending>) {
        let ctx = Arc::clone(&self.ctx);
        self.tasks.spawn(async move { ctx.write(batch).await });
    }

    /// Records settlements, then sends the NACKs and the one multiple ACK they allow.
    pub(super) async fn apply(
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

/// The consumer's next delivery; never resolves once the consumer is gone.
async fn next_delivery(consumer: &mut Option<Consumer>) -> Option<Result<Delivery, lapin::Error>> {
    match consumer {
        Some(c) => c.next().await,
        None => std::future::pending().await,
    }
}

/// A deadline that never comes, for a `select!` branch that is disabled anyway.
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}
