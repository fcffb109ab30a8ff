//! The session's own task: it owns the consumer channel and every ACK and NACK. It takes
//! deliveries in (see `receive`), hands full batches to write tasks, applies the settlements
//! they report in the order they arrive, holds and probes while the sink is down (see
//! `outage`), and on a stop or a lost connection winds down.

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
use tracing::{debug, error, info, warn};

use super::{
    Consuming, Disposition, Pending, ProcessState, Session, SessionEnd, SessionError, Settlement,
    TaskReport,
};
use crate::metrics::Returned;

impl Session {
    /// Consumes until the connection is lost or `stop` fires; then settles what is in flight
    /// within `grace` and closes the connection.
    pub async fn run(
        mut self,
        stop: &mut tokio::sync::watch::Receiver<bool>,
        state: &mut ProcessState,
        grace: Duration,
    ) -> SessionEnd {
        let mut stop_deadline: Option<tokio::time::Instant> = None;
        let mut lost: Option<SessionError> = None;
        self.epoch = state.sink.epoch();
        if *stop.borrow() {
            stop_deadline = Some(tokio::time::Instant::now() + grace);
            self.begin_stop(&mut lost).await;
        }
        loop {
            if lost.is_none()
                && let Err(e) = self.steer_consumer(state).await
            {
                self.lose(&mut lost, e);
            }
            if self.winding_down
                && self.consumer.is_none()
                && self.batcher.is_empty()
                && self.tasks.is_empty()
                && self.held.is_empty()
            {
                break;
            }
            let batch_deadline = self.batcher.deadline().map(tokio::time::Instant::from_std);
            // With nothing held, a probe takes from the queue: once the consumer is gone.
            let probe_at = (state.sink.is_down()
                && !self.probing
                && (!self.held.is_empty() || self.consuming == Consuming::Idle)
                && !self.winding_down)
                .then(|| state.sink.next_probe())
                .flatten()
                .map(tokio::time::Instant::from_std);
            let hold_deadline = self
                .hold_deadline()
                .filter(|_| !self.winding_down)
                .map(tokio::time::Instant::from_std);
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
                        Ok(report) => {
                            if let Err(e) = self.on_report(report, state).await {
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
                        if let Err(e) = self.on_delivery(delivery, state).await {
                            self.lose(&mut lost, e);
                        }
                    }
                    Some(Err(e)) => self.lose(&mut lost, SessionError::Lost(e)),
                    None => {
                        debug!(consuming = ?self.consuming, "the consumer ended");
                        self.consumer = None;
                        match self.consuming {
                            // Cancelled by us: every delivery of that consumer is in.
                            Consuming::Cancelling { .. } if stop_deadline.is_some() => {
                                self.consuming = Consuming::Idle;
                                self.flush_batch();
                            }
                            Consuming::Cancelling { .. } | Consuming::Idle => {
                                self.consuming = Consuming::Idle;
                            }
                            Consuming::Active => {
                                self.consuming = Consuming::Idle;
                                if lost.is_none() {
                                    let queue = self.ctx.config.queue.clone();
                                    self.lose(&mut lost, SessionError::Cancelled(queue));
                                }
                            }
                        }
                    }
                },
                () = sleep_until(batch_deadline.unwrap_or_else(far_future)), if batch_deadline.is_some() => {
                    self.flush_batch();
                }
                () = sleep_until(probe_at.unwrap_or_else(far_future)), if probe_at.is_some() => {
                    if let Err(e) = self.probe(state).await {
                        self.lose(&mut lost, e);
                    }
                }
                () = sleep_until(hold_deadline.unwrap_or_else(far_future)), if hold_deadline.is_some() => {
                    self.return_expired();
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
    /// processed), writes the waiting batch at once, and puts what is held back in the queue.
    async fn begin_stop(&mut self, lost: &mut Option<SessionError>) {
        self.ready.store(false, Ordering::Relaxed);
        self.winding_down = true;
        info!(
            open = self.tracker.open(),
            "stopping: cancelling the consumer and settling in-flight deliveries"
        );
        if self.consuming == Consuming::Active
            && let Some(consumer) = &self.consumer
        {
            let cancelled = self
                .consume
                .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                .await;
            if let Err(e) = cancelled {
                self.lose(lost, SessionError::Lost(e));
            }
            self.consuming = Consuming::Cancelling { resume: false };
        }
        if let Consuming::Cancelling { .. } = self.consuming {
            self.consuming = Consuming::Cancelling { resume: false };
        }
        self.flush_batch();
        self.return_all_held();
    }

    /// Marks the session dead: nothing more is sent on it. Deliveries not yet handed to the
    /// sink are dropped (the broker redelivers them); running tasks finish so that what they
    /// wrote is remembered for dedup.
    fn lose(&mut self, lost: &mut Option<SessionError>, e: SessionError) {
        if lost.is_none() {
            warn!("{e}");
            *lost = Some(e);
        }
        self.winding_down = true;
        self.ready.store(false, Ordering::Relaxed);
        self.ctx.alive.store(false, Ordering::Relaxed);
        self.consumer = None;
        self.consuming = Consuming::Idle;
        let dropped: Vec<Pending> = self
            .batcher
            .take()
            .into_iter()
            .chain(self.held.drain(..))
            .chain(self.restamping.drain().flat_map(|(_, copies)| copies))
            .collect();
        for pending in dropped {
            self.in_progress.remove(&pending.key);
            self.ctx.metrics.in_flight.dec();
        }
    }

    /// Hands the waiting batch, if any, to a write task.
    fn flush_batch(&mut self) {
        let batch = self.batcher.take();
        if !batch.is_empty() {
            self.spawn_write(batch, false);
        }
    }

    /// Most logs in one sink write.
    pub(super) fn batch_max(&self) -> usize {
        usize::try_from(self.ctx.config.consume.batch_max_messages)
            .unwrap_or(1)
            .max(1)
    }

    /// Writes `batch` in a task of its own, which reports the batch's settlements.
    pub(super) fn spawn_write(&mut self, batch: Vec<Pending>, probe: bool) {
        self.spawn_task_write(batch, false, probe);
    }

    /// Writes a suspect in a batch of its own, at once: the shorter a suspect waits, the less
    /// likely a crash meanwhile is charged to it.
    pub(super) fn spawn_alone(&mut self, pending: Pending) {
        self.spawn_task_write(vec![pending], true, false);
    }

    /// Writes `batch` in a task (`alone`: a suspect's own write; `probe`: of a sink that is
    /// down).
    pub(super) fn spawn_task_write(&mut self, batch: Vec<Pending>, alone: bool, probe: bool) {
        let ctx = Arc::clone(&self.ctx);
        let epoch = self.epoch;
        self.tasks.spawn(async move {
            let mut report = ctx.write(batch, alone).await;
            report.epoch = epoch;
            report.probe = probe;
            report
        });
    }

    /// Writes `pending` in full batches (suspects alone), at once.
    pub(super) fn spawn_batches(&mut self, pending: Vec<Pending>) {
        let max = self.batch_max();
        let mut batch = Vec::with_capacity(max);
        for p in pending {
            if p.alone {
                self.spawn_alone(p);
                continue;
            }
            batch.push(p);
            if batch.len() == max {
                self.spawn_write(
                    std::mem::replace(&mut batch, Vec::with_capacity(max)),
                    false,
                );
            }
        }
        if !batch.is_empty() {
            self.spawn_write(batch, false);
        }
    }

    /// Applies a task's report: its settlements, then what it says about the sink.
    async fn on_report(
        &mut self,
        mut report: TaskReport,
        state: &mut ProcessState,
    ) -> Result<(), SessionError> {
        let settlements = std::mem::take(&mut report.settlements);
        self.apply(settlements, state).await?;
        if let Some(key) = report.restamped
            && let Some(copies) = self.restamping.remove(&key)
        {
            // The original is ACKed (or given back): its copies may be written now.
            for pending in copies {
                if state.sink.is_down() {
                    self.hold(pending);
                } else if pending.alone {
                    self.spawn_alone(pending);
                } else if let Some(batch) = self.batcher.push(pending, Instant::now()) {
                    self.spawn_write(batch, false);
                }
            }
        }
        if self.ctx.alive.load(Ordering::Relaxed) {
            self.on_sink_report(&mut report, state);
        } else {
            for pending in report.held {
                self.in_progress.remove(&pending.key);
                self.ctx.metrics.in_flight.dec();
            }
        }
        Ok(())
    }

    /// Records settlements, then sends the NACKs and the one multiple ACK they allow.
    pub(super) async fn apply(
        &mut self,
        settlements: Vec<Settlement>,
        state: &mut ProcessState,
    ) -> Result<(), SessionError> {
        let alive = self.ctx.alive.load(Ordering::Relaxed);
        let metrics = Arc::clone(&self.ctx.metrics);
        let now = Instant::now();
        for s in settlements {
            if let Some(key) = s.key {
                self.in_progress.remove(&key);
                if s.remember {
                    state.dedup.insert(key, now);
                }
            }
            metrics.in_flight.dec();
            if !alive {
                continue;
            }
            match s.disposition {
                // A suspect copy is already in the queue: its original is ACKed on the wire now,
                // not when the deliveries before it are settled (see `restamping`).
                Disposition::AckReturned(Returned::Suspect) => {
                    if let Err(e) = self.tracker.ack_alone(s.tag) {
                        error!("{e}");
                        continue;
                    }
                    metrics.count_returned(Returned::Suspect);
                    self.consume
                        .basic_ack(s.tag, BasicAckOptions { multiple: false })
                        .await
                        .map_err(SessionError::Settle)?;
                }
                Disposition::Ack(_) | Disposition::AckReturned(_) => {
                    if let Err(e) = self.tracker.ack(s.tag) {
                        error!("{e}");
                        continue;
                    }
                    match s.disposition {
                        Disposition::Ack(outcome) => metrics.count_settled(outcome),
                        Disposition::AckReturned(reason) => metrics.count_returned(reason),
                        _ => {}
                    }
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
