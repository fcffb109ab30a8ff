//! One pipeline's autoscaler, run until it is told to stop: connects to the broker (retrying
//! with a growing delay), polls every poll interval, and connects again when the connection is
//! lost. What the policy learned (drain rate, pending scale-downs) survives reconnects. The
//! operator runs one per pipeline over Deployments; `logstream dev` over local workers.

use std::{sync::Arc, time::Duration};

use logstream_broker::BrokerEndpoint;
use tokio::sync::{broadcast, watch};
use tracing::warn;

use crate::{
    pipeline::{PipelineAutoscaler, ScaleRecord},
    shared::SharedAdmins,
};

/// Longest wait between two attempts to reach the broker.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);

/// Runs `autoscaler` until `stop` turns true (or its sender is dropped), sending every
/// poll's records to `records`.
pub async fn supervise(
    mut autoscaler: PipelineAutoscaler,
    endpoint: BrokerEndpoint,
    admins: Arc<SharedAdmins>,
    mut stop: watch::Receiver<bool>,
    records: broadcast::Sender<ScaleRecord>,
) {
    let vhost = autoscaler.vhost().to_owned();
    let mut delay = Duration::from_secs(1);
    let mut ticker = tokio::time::interval(autoscaler.poll_interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stopping(&stop) {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => continue,
        }
        let admin = tokio::select! {
            admin = admins.get(&endpoint, &vhost) => admin,
            _ = stop.changed() => continue,
        };
        match admin {
            Ok(admin) => {
                delay = Duration::from_secs(1);
                let polled = autoscaler.poll(&admin).await;
                // Stopped while polling: nothing more is told about this pipeline.
                if stopping(&stop) {
                    break;
                }
                for record in polled {
                    let _ = records.send(record);
                }
            }
            Err(e) => {
                warn!(pipeline = %autoscaler.pipeline(), error = %e, "autoscaler cannot reach the broker; holding replicas");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => {}
                }
                delay = (delay * 2).min(MAX_RECONNECT_DELAY);
            }
        }
    }
}

/// True once the owner asked the task to stop, or is gone.
pub fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}
