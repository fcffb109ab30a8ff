//! The sink's outages, on the settle loop: holding deliveries while the sink is down, taking
//! no new ones (the consumer is cancelled: the queue shows no consumer and the held deliveries
//! unacked, which is how the autoscaler and `logstream status` tell the sink is down), probing
//! with what is held (or with one batch taken by `basic.get` when nothing is), resuming at full
//! speed once a write succeeds, and putting held deliveries back in the main queue before
//! `holdLimit` (and so the broker's consumer timeout) runs out.

use std::{sync::Arc, time::Instant};

use lapin::{
    options::{BasicCancelOptions, BasicGetOptions},
    types::ShortString,
};
use tracing::{debug, info, warn};

use super::{Consuming, Pending, ProcessState, Session, SessionError, TaskReport};
use crate::{metrics::Returned, sink::health::PROBE_BACKOFF_MAX};

impl Session {
    /// Holds `pending` until the sink is back (a suspect goes back to the queue instead: it
    /// must never wait where a crash would charge it).
    pub(super) fn hold(&mut self, pending: Pending) {
        if pending.alone && self.fetching {
            // Taken to probe with: written alone at once, as any suspect is.
            self.probing = true;
            self.ctx.metrics.sink_probes.inc();
            self.spawn_task_write(vec![pending], true, true);
        } else if pending.alone {
            self.put_back(vec![pending], Returned::Suspect);
        } else {
            self.held.push_back(pending);
        }
    }

    /// Learns from a task's report what it says about the sink, and holds what it could not
    /// write.
    pub(super) fn on_sink_report(&mut self, report: &mut TaskReport, state: &mut ProcessState) {
        let now = Instant::now();
        let metrics = Arc::clone(&self.ctx.metrics);
        if report.probe {
            self.probing = false;
        }
        if report.wrote
            && let Some(lasted) = state.sink.wrote(report.epoch, now)
        {
            metrics.set_sink_down(None);
            info!(
                outage = ?lasted,
                held = self.held.len(),
                "the sink takes writes again: writing what was held and consuming again"
            );
            let held: Vec<Pending> = self.held.drain(..).collect();
            self.spawn_batches(held);
        }
        if report.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut report.held);
        if !state.sink.is_down() && report.epoch < state.sink.epoch() {
            // Failed before the sink came back: write it again now.
            self.spawn_batches(held);
            return;
        }
        if state.sink.failed(now) {
            self.epoch = state.sink.epoch();
            metrics.sink_outages.inc();
            metrics.set_sink_down(Some(now));
            let reason = report.down_reason.take().unwrap_or_default();
            warn!(
                held = held.len() + self.batcher.len(),
                "the sink is down (every write fails: {reason}): holding what this worker has, unacknowledged and uncharged, taking nothing new, and probing every {:?} at most",
                PROBE_BACKOFF_MAX
            );
            for pending in self.batcher.take() {
                self.hold(pending);
            }
        } else if report.probe {
            state.sink.probe_failed(now);
        }
        for pending in held {
            self.hold(pending);
        }
    }

    /// Rewrites the first held deliveries (one batch) to see whether the sink is back; with
    /// nothing held, takes one delivery from the queue to probe with (see
    /// [`Self::fetch_to_probe`]).
    pub(super) async fn probe(&mut self, state: &mut ProcessState) -> Result<(), SessionError> {
        if self.held.is_empty() {
            self.fetching = true;
            let fetched = self.fetch_to_probe(state).await;
            self.fetching = false;
            fetched?;
        }
        if self.probing {
            // A suspect taken from the queue is the probe.
            return Ok(());
        }
        let n = self.batch_max().min(self.held.len());
        let batch: Vec<Pending> = self.held.drain(..n).collect();
        if batch.is_empty() {
            // Nothing to probe with (the queue is empty, or what it gave was settled without a
            // write): look again after the wait a failed probe would bring.
            state.sink.probe_failed(Instant::now());
            return Ok(());
        }
        self.probing = true;
        self.ctx.metrics.sink_probes.inc();
        self.spawn_write(batch, true);
        Ok(())
    }

    /// Takes deliveries from the main queue with `basic.get`, each taken in as usual, until one
    /// is held (or, a suspect, is being written as the probe): at most one batch's worth of
    /// gets, as duplicates and redeliveries are settled on the way.
    ///
    /// Not with a consumer started and cancelled again: a queue goes on delivering to a
    /// consumer until it handles the cancel, and what a quorum queue delivers to a consumer its
    /// channel already cancelled goes back to the queue as a redelivery
    /// (rabbitmq-server#3729), which reads as a crash and charges a suspect. One delivery, not
    /// a batch: a quorum queue counts each unsettled `basic.get` as a consumer, and one per
    /// paused worker is what it counts for a cancelled consumer too.
    async fn fetch_to_probe(&mut self, state: &mut ProcessState) -> Result<(), SessionError> {
        let queue = ShortString::from(self.ctx.config.queue.as_str());
        for _ in 0..self.batch_max() {
            let got = self
                .consume
                .basic_get(queue.clone(), BasicGetOptions { no_ack: false })
                .await
                .map_err(SessionError::Lost)?;
            let Some(message) = got else { break };
            self.on_delivery(message.delivery, state).await?;
            if !self.held.is_empty() || self.probing || message.message_count == 0 {
                break;
            }
        }
        Ok(())
    }

    /// When the longest-held delivery reaches `holdLimit`.
    pub(super) fn hold_deadline(&self) -> Option<Instant> {
        let oldest = self.held.iter().map(|p| p.received).min()?;
        Some(oldest + self.ctx.config.hold_limit.as_std())
    }

    /// Puts back in the main queue (unchanged) every delivery held for `holdLimit`, so that the
    /// broker never closes the channel for a delivery held past its consumer timeout.
    pub(super) fn return_expired(&mut self) {
        let limit = self.ctx.config.hold_limit.as_std();
        let now = Instant::now();
        let (expired, kept): (Vec<Pending>, Vec<Pending>) = self
            .held
            .drain(..)
            .partition(|p| now.saturating_duration_since(p.received) >= limit);
        self.held = kept.into();
        if !expired.is_empty() {
            warn!(
                returned = expired.len(),
                "held deliveries reached holdLimit ({limit:?}) while the sink is still down: put back in the main queue unchanged; probing with what comes next"
            );
            self.put_back(expired, Returned::HoldLimit);
        }
    }

    /// Puts every held delivery back in the main queue (the worker is stopping).
    pub(super) fn return_all_held(&mut self) {
        let held: Vec<Pending> = self.held.drain(..).collect();
        if !held.is_empty() {
            info!(
                returned = held.len(),
                "stopping while the sink is down: putting the held deliveries back in the main queue"
            );
            self.put_back(held, Returned::Stopping);
        }
    }

    /// Publishes copies of `batch` to the main queue and ACKs the originals, in a task.
    fn put_back(&mut self, batch: Vec<Pending>, reason: Returned) {
        // A copy may come back before the task reports: it must not look like a duplicate.
        for pending in &batch {
            self.in_progress.remove(&pending.key);
        }
        let ctx = Arc::clone(&self.ctx);
        self.tasks
            .spawn(async move { TaskReport::settled(ctx.put_back(batch, reason).await) });
    }

    /// Consumes while the sink is up; not while it is down (a probe takes what it needs with
    /// `basic.get`).
    pub(super) async fn steer_consumer(
        &mut self,
        state: &ProcessState,
    ) -> Result<(), SessionError> {
        if self.winding_down {
            return Ok(());
        }
        if state.sink.is_down() {
            self.pause().await
        } else {
            self.resume().await
        }
    }

    async fn pause(&mut self) -> Result<(), SessionError> {
        match self.consuming {
            Consuming::Active => {
                if let Some(consumer) = &self.consumer {
                    debug!(consumer = %consumer.tag(), held = self.held.len(), "pausing: cancelling the consumer");
                    self.consume
                        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                        .await
                        .map_err(SessionError::Lost)?;
                }
                self.consuming = Consuming::Cancelling { resume: false };
            }
            Consuming::Cancelling { .. } => {
                self.consuming = Consuming::Cancelling { resume: false };
            }
            Consuming::Idle => {}
        }
        Ok(())
    }

    async fn resume(&mut self) -> Result<(), SessionError> {
        match self.consuming {
            Consuming::Active => Ok(()),
            Consuming::Cancelling { .. } => {
                self.consuming = Consuming::Cancelling { resume: true };
                Ok(())
            }
            Consuming::Idle => self.start_consumer().await,
        }
    }
}
