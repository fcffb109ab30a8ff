//! The autoscaler loop of one pipeline: every poll, one management API request for the vhost,
//! one passive declare per output for a real-time depth, one decision per output, applied to
//! its [`ScaleTarget`]. The operator and `logstream dev` run this same loop; only the targets
//! differ.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tracing::{info, warn};

use super::{
    policy::{Decision, Observation, Rates, ScalingPolicy},
    stats::SharedQueueStats,
    target::ScaleTarget,
};
use crate::broker::{BrokerAdmin, QueueInfo};
use logstream_api::{
    resolved::ScalingSettings,
    topology::{QueueRole, TopologyPlan},
};

/// One output under autoscaling.
pub struct OutputScaling {
    /// Output name.
    pub output: String,
    /// Its main queue.
    pub queue: String,
    /// Its retry queues (their figures are reported alongside each decision).
    pub retry_queues: Vec<String>,
    /// Its dead-letter queue (its depth is reported alongside each decision).
    pub dead_letter_queue: String,
    /// The policy and what it learned.
    pub policy: ScalingPolicy,
    /// What it scales.
    pub target: Box<dyn ScaleTarget>,
}

impl OutputScaling {
    /// Autoscales output `output` of `plan` with `settings`, scaling `target`. `None` when the
    /// plan has no such output.
    pub fn for_output(
        plan: &TopologyPlan,
        output: &str,
        settings: ScalingSettings,
        target: Box<dyn ScaleTarget>,
    ) -> Option<Self> {
        let queues = |pick: &dyn Fn(QueueRole) -> bool| -> Vec<String> {
            plan.queues
                .iter()
                .filter(|q| q.output == output && pick(q.role))
                .map(|q| q.name.clone())
                .collect()
        };
        Some(Self {
            output: output.to_owned(),
            queue: plan.queue(output, QueueRole::Main)?.name.clone(),
            retry_queues: queues(&|r| matches!(r, QueueRole::Retry(_))),
            dead_letter_queue: plan.queue(output, QueueRole::DeadLetter)?.name.clone(),
            policy: ScalingPolicy::new(settings),
            target,
        })
    }
}

/// What flows beside the main queue of an output, from the management API's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SideFlow {
    /// Messages in the dead-letter queue.
    pub dead_lettered: u64,
    /// Messages dead-lettered per second (publish rate of the dead-letter queue).
    pub dead_letter_rate: f64,
    /// Messages waiting in the retry queues.
    pub retrying: u64,
    /// Messages sent to a retry queue per second.
    pub retry_rate: f64,
}

impl SideFlow {
    fn read(stats: &[QueueInfo], o: &OutputScaling) -> Option<Self> {
        let dlq = stats.iter().find(|q| q.name == o.dead_letter_queue)?;
        let retries = stats.iter().filter(|q| o.retry_queues.contains(&q.name));
        Some(Self {
            dead_lettered: dlq.messages.unwrap_or(0),
            dead_letter_rate: dlq.publish_rate().unwrap_or(0.0),
            retrying: retries.clone().map(|q| q.messages.unwrap_or(0)).sum(),
            retry_rate: retries.map(|q| q.publish_rate().unwrap_or(0.0)).sum(),
        })
    }
}

/// One poll's outcome for one output: for status, events, metrics and the dashboard.
#[derive(Clone, Debug)]
pub struct ScaleRecord {
    /// `namespace/name` of the pipeline.
    pub pipeline: String,
    /// Output name.
    pub output: String,
    /// Its main queue.
    pub queue: String,
    /// When the reading was taken.
    pub at: SystemTime,
    /// What the policy decided.
    pub decision: Decision,
    /// The reading it decided on.
    pub observation: Option<Observation>,
    /// Messages in the dead-letter queue, when the management API answered.
    pub dead_lettered: Option<u64>,
    /// Retry and dead-letter figures, when the management API answered.
    pub side_flow: Option<SideFlow>,
    /// Why the target could not be read or scaled, if it could not.
    pub error: Option<String>,
}

impl ScaleRecord {
    /// True when the replica count was changed.
    pub fn scaled(&self) -> bool {
        self.decision.is_change() && self.error.is_none()
    }
}

/// The autoscaler of one pipeline's outputs.
pub struct PipelineAutoscaler {
    pipeline: String,
    vhost: String,
    outputs: Vec<OutputScaling>,
    clock: Instant,
    shared_stats: Option<Arc<SharedQueueStats>>,
}

impl PipelineAutoscaler {
    /// Autoscales `outputs` of pipeline `pipeline` (`namespace/name`) on `vhost`.
    pub fn new(
        pipeline: impl Into<String>,
        vhost: impl Into<String>,
        outputs: Vec<OutputScaling>,
    ) -> Self {
        Self {
            pipeline: pipeline.into(),
            vhost: vhost.into(),
            outputs,
            clock: Instant::now(),
            shared_stats: None,
        }
    }

    /// Reads queue statistics through `stats`, shared with the other autoscalers of the
    /// vhost, instead of one request per pipeline.
    #[must_use]
    pub fn with_shared_stats(mut self, stats: Arc<SharedQueueStats>) -> Self {
        self.shared_stats = Some(stats);
        self
    }

    /// `namespace/name` of the pipeline.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// The vhost of its queues.
    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    /// The outputs.
    pub fn outputs(&self) -> &[OutputScaling] {
        &self.outputs
    }

    /// The shortest poll interval of the outputs.
    pub fn poll_interval(&self) -> Duration {
        self.outputs
            .iter()
            .map(|o| o.policy.settings().poll_interval.as_std())
            .min()
            .unwrap_or(Duration::from_secs(2))
    }

    /// Reads the queues once, decides for every output and applies the changes.
    pub async fn poll(&mut self, admin: &BrokerAdmin) -> Vec<ScaleRecord> {
        let fetched = match &self.shared_stats {
            Some(shared) => shared.queues(admin).await,
            None => admin
                .management()
                .queue_stats(&self.vhost)
                .await
                .map(Arc::new),
        };
        let stats = match fetched {
            Ok(queues) => Some(queues),
            Err(e) => {
                warn!(pipeline = %self.pipeline, error = %e, "queue statistics unavailable");
                None
            }
        };
        let at = SystemTime::now();
        let now_epoch_s = at
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut records = Vec::with_capacity(self.outputs.len());
        for o in &mut self.outputs {
            let info = stats
                .as_ref()
                .and_then(|all| all.iter().find(|q| q.name == o.queue));
            let depth = match admin.queue_depth(&o.queue).await {
                Ok(depth) => depth,
                Err(e) => {
                    warn!(queue = %o.queue, error = %e, "passive declare failed");
                    None
                }
            };
            let observation = observe(info, depth, now_epoch_s);
            let side_flow = stats.as_deref().and_then(|all| SideFlow::read(all, o));
            let now_s = self.clock.elapsed().as_secs_f64();
            let (decision, error) = match o.target.replicas().await {
                Ok(current) => {
                    let decision = o.policy.decide(now_s, current, observation.as_ref());
                    let error = if decision.is_change() {
                        o.target
                            .scale(decision.desired)
                            .await
                            .err()
                            .map(|e| e.to_string())
                    } else {
                        None
                    };
                    (decision, error)
                }
                Err(e) => {
                    let decision = Decision {
                        current: 0,
                        desired: 0,
                        recommended: 0,
                        reason: format!("replica count unknown: {e}"),
                        signals: Default::default(),
                        metrics_missing: false,
                    };
                    (decision, Some(e.to_string()))
                }
            };
            let record = ScaleRecord {
                pipeline: self.pipeline.clone(),
                output: o.output.clone(),
                queue: o.queue.clone(),
                at,
                decision,
                observation,
                dead_lettered: side_flow.map(|f| f.dead_lettered),
                side_flow,
                error,
            };
            if record.scaled() {
                info!(pipeline = %record.pipeline, output = %record.output, target = %o.target.describe(), reason = %record.decision.reason, "scaled");
            } else if let Some(e) = &record.error {
                warn!(pipeline = %record.pipeline, output = %record.output, error = %e, "autoscaling failed");
            }
            records.push(record);
        }
        records
    }
}

/// Builds one output's reading from the management API's figures (`info`, sampled by the
/// broker) and a passive declare (`depth` = ready messages and consumers, real time). `None`
/// when neither answered: the policy then holds.
pub fn observe(
    info: Option<&QueueInfo>,
    depth: Option<(u64, u64)>,
    now_epoch_s: f64,
) -> Option<Observation> {
    if info.is_none() && depth.is_none() {
        return None;
    }
    let (ready, consumers) = match (depth, info) {
        (Some((ready, consumers)), _) => (ready, consumers),
        (None, Some(q)) => (q.messages_ready.unwrap_or(0), q.consumers.unwrap_or(0)),
        (None, None) => unreachable!("handled above"),
    };
    Some(Observation {
        ready,
        unacked: info.and_then(|q| q.messages_unacknowledged).unwrap_or(0),
        consumers,
        rates: info.map(|q| Rates {
            publish: q.publish_rate().unwrap_or(0.0),
            ack: q.ack_rate().unwrap_or(0.0),
        }),
        head_age_s: info
            .and_then(|q| q.head_message_timestamp)
            .map(|ts| (now_epoch_s - ts as f64).max(0.0)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(json: serde_json::Value) -> QueueInfo {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn passive_declare_depth_wins_over_sampled_statistics() {
        let q = info(serde_json::json!({
            "name": "q", "messages_ready": 10, "messages_unacknowledged": 4, "consumers": 1,
            "head_message_timestamp": 1_000,
            "message_stats": {"publish_details": {"rate": 12.5}, "ack_details": {"rate": 3.0}}
        }));
        let o = observe(Some(&q), Some((250, 3)), 1_041.0).unwrap();
        assert_eq!((o.ready, o.unacked, o.consumers), (250, 4, 3));
        assert_eq!(
            o.rates,
            Some(Rates {
                publish: 12.5,
                ack: 3.0
            })
        );
        assert_eq!(o.head_age_s, Some(41.0));
    }

    #[test]
    fn statistics_alone_or_depth_alone_still_make_a_reading() {
        let q = info(serde_json::json!({"name": "q", "messages_ready": 7, "consumers": 2}));
        let o = observe(Some(&q), None, 0.0).unwrap();
        assert_eq!((o.ready, o.consumers), (7, 2));
        assert_eq!(
            o.rates,
            Some(Rates {
                publish: 0.0,
                ack: 0.0
            }),
            "an idle queue has no message_stats"
        );
        let o = observe(None, Some((5, 1)), 0.0).unwrap();
        assert_eq!(o.rates, None, "no management API: rates unknown, not zero");
        assert!(observe(None, None, 0.0).is_none());
    }
}
