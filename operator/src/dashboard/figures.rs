//! What one autoscaler record becomes on the dashboard: the latest figures of an output, a
//! scaling decision, or an error. Pure: plain data in, serializable data out.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::scaling::ScaleRecord;

/// Milliseconds since the Unix epoch (what JavaScript's `Date` takes).
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Replica counts of an output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Replicas {
    /// Replicas running (asked for) before this poll.
    pub current: u32,
    /// Replicas after this poll's decision.
    pub desired: u32,
    /// What the formula asks for now, before the scale-down delay.
    pub recommended: u32,
}

/// Message rates of an output, per second; `None` when the management API did not say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Rates {
    /// Published to the main queue.
    pub published: Option<f64>,
    /// Processed: acknowledged by the workers on the main queue.
    pub processed: Option<f64>,
    /// Sent to a retry queue.
    pub retried: Option<f64>,
    /// Sent to the dead-letter queue.
    pub dead_lettered: Option<f64>,
}

/// The latest figures of one output (also the data of an SSE `sample` event).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutputFigures {
    /// `namespace/name` of the pipeline.
    pub pipeline: String,
    /// Output name.
    pub output: String,
    /// When the reading was taken, Unix milliseconds.
    pub at_ms: u64,
    /// Messages ready in the main queue.
    pub ready: Option<u64>,
    /// Messages delivered to workers and not yet acknowledged.
    pub unacked: Option<u64>,
    /// Age of the oldest waiting message in seconds (measured, or estimated from the drain).
    pub oldest_age_s: Option<f64>,
    /// Consumers on the main queue (running workers).
    pub consumers: Option<u64>,
    /// Messages in the dead-letter queue.
    pub dead_lettered: Option<u64>,
    /// Messages waiting in the retry queues.
    pub retrying: Option<u64>,
    /// Replica counts.
    pub replicas: Replicas,
    /// Message rates.
    pub rates: Rates,
    /// The autoscaler's reason for this poll's decision (also when it held).
    pub reason: String,
    /// True when a reading or its rates were missing (the autoscaler holds).
    pub metrics_missing: bool,
    /// Why the target could not be read or scaled, if it could not.
    pub error: Option<String>,
}

impl OutputFigures {
    /// The figures one record carries.
    pub fn from_record(r: &ScaleRecord) -> Self {
        let obs = r.observation.as_ref();
        let flow = r.side_flow.as_ref();
        Self {
            pipeline: r.pipeline.clone(),
            output: r.output.clone(),
            at_ms: unix_ms(r.at),
            ready: obs.map(|o| o.ready),
            unacked: obs.map(|o| o.unacked),
            // The policy's age is the measured head age when the broker reports one, and an
            // estimate from the drain rate otherwise (quorum queues have no head timestamp).
            oldest_age_s: obs.map(|o| o.head_age_s.unwrap_or(r.decision.signals.age_s)),
            consumers: obs.map(|o| o.consumers),
            dead_lettered: flow.map(|f| f.dead_lettered).or(r.dead_lettered),
            retrying: flow.map(|f| f.retrying),
            replicas: Replicas {
                current: r.decision.current,
                desired: r.decision.desired,
                recommended: r.decision.recommended,
            },
            rates: Rates {
                published: obs.and_then(|o| o.rates).map(|x| x.publish),
                processed: obs.and_then(|o| o.rates).map(|x| x.ack),
                retried: flow.map(|f| f.retry_rate),
                dead_lettered: flow.map(|f| f.dead_letter_rate),
            },
            reason: r.decision.reason.clone(),
            metrics_missing: r.decision.metrics_missing,
            error: r.error.clone(),
        }
    }
}

/// A scaling decision that changed the replica count (also the data of an SSE `scale` event).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    /// The id of the event that announced it.
    pub id: String,
    /// `namespace/name` of the pipeline.
    pub pipeline: String,
    /// Output name.
    pub output: String,
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// Replicas before.
    pub from: u32,
    /// Replicas after.
    pub to: u32,
    /// Why, in words: `age 41s > 30s: 3 → 7`.
    pub reason: String,
}

impl Decision {
    /// The decision `r` applied, if it changed the replica count.
    pub fn from_record(r: &ScaleRecord, id: String) -> Option<Self> {
        r.scaled().then(|| Self {
            id,
            pipeline: r.pipeline.clone(),
            output: r.output.clone(),
            at_ms: unix_ms(r.at),
            from: r.decision.current,
            to: r.decision.desired,
            reason: r.decision.reason.clone(),
        })
    }
}

/// An autoscaling failure (the data of an SSE `error` event).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorReport {
    /// `namespace/name` of the pipeline.
    pub pipeline: String,
    /// Output name.
    pub output: String,
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// What failed.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaling::{Decision as ScaleDecision, Observation, Rates as BrokerRates, SideFlow};

    fn record(observation: Option<Observation>, current: u32, desired: u32) -> ScaleRecord {
        ScaleRecord {
            pipeline: "games/app".into(),
            queue: "logstream.test.app.o".into(),
            output: "security".into(),
            at: UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123),
            decision: ScaleDecision {
                current,
                desired,
                recommended: desired,
                reason: format!("age 41s > 30s: {current} → {desired}"),
                signals: crate::scaling::Signals {
                    age_s: 12.0,
                    ..Default::default()
                },
                metrics_missing: observation.is_none(),
            },
            observation,
            dead_lettered: Some(3),
            side_flow: Some(SideFlow {
                dead_lettered: 3,
                dead_letter_rate: 0.5,
                retrying: 7,
                retry_rate: 2.0,
            }),
            error: None,
        }
    }

    #[test]
    fn a_record_becomes_the_outputs_figures_with_all_four_rates() {
        let obs = Observation {
            ready: 120,
            unacked: 20,
            consumers: 3,
            rates: Some(BrokerRates {
                publish: 90.0,
                ack: 80.0,
            }),
            head_age_s: Some(41.0),
        };
        let f = OutputFigures::from_record(&record(Some(obs), 3, 7));
        assert_eq!(f.at_ms, 1_700_000_000_123);
        assert_eq!(
            (f.ready, f.unacked, f.consumers),
            (Some(120), Some(20), Some(3))
        );
        assert_eq!(f.oldest_age_s, Some(41.0));
        assert_eq!((f.dead_lettered, f.retrying), (Some(3), Some(7)));
        assert_eq!(
            f.rates,
            Rates {
                published: Some(90.0),
                processed: Some(80.0),
                retried: Some(2.0),
                dead_lettered: Some(0.5)
            }
        );
        assert_eq!(f.replicas.desired, 7);
    }

    #[test]
    fn without_a_head_timestamp_the_age_is_the_policys_estimate() {
        let obs = Observation {
            ready: 1,
            unacked: 0,
            consumers: 0,
            rates: None,
            head_age_s: None,
        };
        let f = OutputFigures::from_record(&record(Some(obs), 1, 1));
        assert_eq!(f.oldest_age_s, Some(12.0));
        assert_eq!(f.rates.processed, None, "unknown is not zero");
    }

    #[test]
    fn only_an_applied_change_is_a_decision() {
        assert!(Decision::from_record(&record(None, 2, 2), "x-1".into()).is_none());
        let d = Decision::from_record(&record(None, 2, 5), "x-1".into()).unwrap();
        assert_eq!(
            (d.from, d.to, d.reason.as_str()),
            (2, 5, "age 41s > 30s: 2 → 5")
        );
        let mut failed = record(None, 2, 5);
        failed.error = Some("failed to scale deployment games/app-security: forbidden".into());
        assert!(Decision::from_record(&failed, "x-2".into()).is_none());
    }
}
