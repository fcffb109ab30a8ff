//! Taking one delivery in: track it for ACKs, observe its age, ACK a duplicate at once,
//! restamp a broker redelivery as a suspect (or charge a redelivered suspect), and otherwise
//! write it: a suspect alone and at once, anything else in a batch; while the sink is down,
//! hold it instead.

use std::{
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use jiff::Timestamp;
use lapin::{message::Delivery, types::ShortString};
use logstream_api::contract::ErrorClass;
use tracing::{debug, error};

use super::{Disposition, Pending, ProcessState, Session, SessionError, Settlement, TaskReport};
use crate::{
    delivery::{
        dedup::DedupKey,
        republish,
        retry_ladder::{Admission, Route},
    },
    metrics::Settled,
};

impl Session {
    pub(super) async fn on_delivery(
        &mut self,
        delivery: Delivery,
        state: &mut ProcessState,
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
            debug!(
                tag,
                consumer = self.consumers_started,
                "redelivered by the broker"
            );
        }

        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(ShortString::as_str);
        let key = DedupKey::of(message_id, &delivery.data);
        if state.dedup.contains(key, received) || self.in_progress.contains(&key) {
            debug!(tag, "duplicate: already written or being written");
            return self
                .apply(
                    vec![Settlement {
                        tag,
                        key: None,
                        remember: false,
                        disposition: Disposition::Ack(Settled::Duplicate),
                        received,
                    }],
                    state,
                )
                .await;
        }

        let history = republish::history(&delivery.properties, delivery.redelivered);
        match self.ctx.ladder.admit(history) {
            Admission::Process {
                failed_before,
                alone,
            } => {
                self.in_progress.insert(key);
                let pending = Pending {
                    delivery,
                    key,
                    received,
                    received_at: Timestamp::now(),
                    failed_before,
                    alone,
                };
                if let Some(waiting) = self.restamping.get_mut(&key) {
                    waiting.push(pending);
                } else if state.sink.is_down() {
                    self.hold(pending);
                } else if alone {
                    self.spawn_alone(pending);
                } else if let Some(batch) = self.batcher.push(pending, received) {
                    self.spawn_write(batch, false);
                }
            }
            Admission::Suspect => {
                self.restamping.entry(key).or_default();
                let ctx = Arc::clone(&self.ctx);
                self.tasks.spawn(async move {
                    TaskReport {
                        restamped: Some(key),
                        ..TaskReport::settled(vec![ctx.suspect(&delivery, key, received).await])
                    }
                });
            }
            Admission::Charged(route) => {
                let reason = match route {
                    Route::Retry { attempt, .. } => format!(
                        "redelivered by the broker while written alone: the worker writing it stopped before settling it (failed attempt {attempt} of {})",
                        self.ctx.ladder.max_attempts()
                    ),
                    Route::DeadLetter { attempt } => format!(
                        "redelivered by the broker {attempt} times: every worker writing it stopped before settling it"
                    ),
                };
                let ctx = Arc::clone(&self.ctx);
                self.tasks.spawn(async move {
                    let disposition = ctx
                        .copy(&delivery, route, ErrorClass::Redelivered, &reason, true)
                        .await;
                    TaskReport::settled(vec![Settlement {
                        tag: delivery.delivery_tag,
                        key: None,
                        remember: false,
                        disposition,
                        received,
                    }])
                });
            }
        }
        Ok(())
    }
}
