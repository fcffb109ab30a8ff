//! Taking one delivery in: track it for ACKs, observe its age, ACK a duplicate at once,
//! restamp a broker redelivery as a failed attempt (without writing it), or batch it for the
//! sink.

use std::{
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use jiff::Timestamp;
use lapin::{message::Delivery, types::ShortString};
use logstream_api::contract::ErrorClass;
use tracing::{debug, error};

use super::{Disposition, Pending, Session, SessionError, Settlement};
use crate::{
    delivery::{
        dedup::{DedupCache, DedupKey},
        republish,
        retry_ladder::{Admission, Route},
    },
    metrics::Settled,
};

impl Session {
    pub(super) async fn on_delivery(
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
}
