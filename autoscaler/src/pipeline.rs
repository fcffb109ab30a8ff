//! The autoscaler loop of one pipeline: every poll, one management API request for the vhost,
//! one passive declare per output for a real-time depth, the age of each output's oldest
//! message tracked across polls ([`AgeTracker`]), one decision per output, applied to its
//! [`ScaleTarget`]. The operator and `logstream dev` run this same loop; only the targets
//! differ.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tracing::{info, warn};

use jiff::Timestamp;
use logstream_api::{resolved::ScalingSettings, topology::TopologyPlan};
use logstream_broker::{BrokerAdmin, OutputQueues, OutputReading, QueueDepth, QueueStats};

use crate::{
    age::AgeTracker,
    policy::{Decision, ScalingPolicy},
    shared::SharedQueueStats,
    target::ScaleTarget,
};

/// One output under autoscaling.
pub struct OutputScaling {
    /// Output name.
    pub output: String,
    /// Its queues (the retry and dead-letter figures are reported alongside each decision).
    pub queues: OutputQueues,
    /// The policy and what it learned.
    pub policy: ScalingPolicy,
    /// The age of the main queue's oldest message, across polls.
    pub age: AgeTracker,
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
        Some(Self {
            output: output.to_owned(),
            queues: OutputQueues::of(plan, output)?,
            policy: ScalingPolicy::new(settings),
            age: AgeTracker::new(),
            target,
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
    pub at: Timestamp,
    /// What the policy decided.
    pub decision: Decision,
    /// The reading it decided on, with the tracked age of the oldest message; `None` when
    /// neither the management API nor a passive declare answered.
    pub reading: Option<OutputReading>,
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
            None => crate::shared::queue_stats(admin.management(), &self.vhost)
                .await
                .map(|(queues, _)| Arc::new(queues)),
        };
        let stats = match fetched {
            Ok(queues) => Some(queues),
            Err(e) => {
                warn!(pipeline = %self.pipeline, error = %e, "queue statistics unavailable");
                None
            }
        };
        let at = Timestamp::now();
        let mut records = Vec::with_capacity(self.outputs.len());
        for o in &mut self.outputs {
            let depth = match admin.queue_depth(&o.queues.main).await {
                Ok(depth) => depth,
                Err(e) => {
                    warn!(queue = %o.queues.main, error = %e, "passive declare failed");
                    None
                }
            };
            let listed = stats.as_deref().map(Vec::as_slice);
            let mut reading = observe(listed, &o.queues, depth, at);
            let main = listed.and_then(|all| all.iter().find(|q| q.name == o.queues.main));
            let age = o.age.observe(at, depth.map(|d| d.ready), main);
            if let Some(reading) = reading.as_mut() {
                reading.oldest_age = age;
            }
            let now_s = self.clock.elapsed().as_secs_f64();
            let (decision, error) = match o.target.replicas().await {
                Ok(current) => {
                    let decision = o.policy.decide(now_s, current, reading.as_ref());
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
                queue: o.queues.main.clone(),
                at,
                decision,
                reading,
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

/// One output's reading: the management API's figures (`stats` of the vhost, sampled by the
/// broker) with the main queue's ready messages and consumers from a passive declare (`depth`,
/// real time) where it answered. `None` when neither answered: the policy then holds.
pub fn observe(
    stats: Option<&[QueueStats]>,
    queues: &OutputQueues,
    depth: Option<QueueDepth>,
    now: Timestamp,
) -> Option<OutputReading> {
    let listed = stats.is_some_and(|all| all.iter().any(|q| q.name == queues.main));
    if !listed && depth.is_none() {
        return None;
    }
    let mut reading = stats.map_or_else(OutputReading::default, |all| {
        OutputReading::read(all, queues, now)
    });
    if let Some(depth) = depth {
        reading.ready = Some(depth.ready);
        reading.consumers = Some(depth.consumers);
    }
    Some(reading)
}

#[cfg(test)]
mod tests {
    use logstream_broker::Age;

    use super::*;

    fn stats(json: serde_json::Value) -> QueueStats {
        serde_json::from_value(json).unwrap()
    }

    fn queues() -> OutputQueues {
        OutputQueues {
            main: "q".into(),
            retries: vec![],
            dead_letter: "q.dlq".into(),
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn depth(ready: u64, consumers: u64) -> Option<QueueDepth> {
        Some(QueueDepth { ready, consumers })
    }

    #[test]
    fn passive_declare_depth_wins_over_sampled_statistics() {
        let q = stats(serde_json::json!({
            "name": "q", "messages_ready": 10, "messages_unacknowledged": 4, "consumers": 1,
            "head_message_timestamp": 1_000,
            "message_stats": {"publish_details": {"rate": 12.5}, "ack_details": {"rate": 3.0}}
        }));
        let o = observe(Some(&[q]), &queues(), depth(250, 3), at(1_041)).unwrap();
        assert_eq!(
            (o.ready, o.unacked, o.consumers),
            (Some(250), Some(4), Some(3))
        );
        assert_eq!((o.publish_rate, o.ack_rate), (Some(12.5), Some(3.0)));
        assert_eq!(o.oldest_age, Some(Age::measured(41.0)));
    }

    #[test]
    fn statistics_alone_or_depth_alone_still_make_a_reading() {
        let q = stats(serde_json::json!({"name": "q", "messages_ready": 7, "consumers": 2}));
        let o = observe(Some(&[q]), &queues(), None, at(0)).unwrap();
        assert_eq!((o.ready, o.consumers), (Some(7), Some(2)));
        assert_eq!(
            (o.publish_rate, o.ack_rate),
            (Some(0.0), Some(0.0)),
            "an idle queue has no message_stats"
        );
        let o = observe(None, &queues(), depth(5, 1), at(0)).unwrap();
        assert_eq!(
            o.publish_rate, None,
            "no management API: rates unknown, not zero"
        );
        assert!(observe(None, &queues(), None, at(0)).is_none());
        assert!(observe(Some(&[]), &queues(), None, at(0)).is_none());
    }
}
