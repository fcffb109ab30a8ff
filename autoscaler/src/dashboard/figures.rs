//! What one autoscaler record becomes on the dashboard: the latest figures of an output, a
//! scaling decision, or an error. Pure: plain data in, serializable data out.

use jiff::Timestamp;
use logstream_broker::{Age, SinkState};
use serde::Serialize;

use crate::pipeline::ScaleRecord;

/// Milliseconds since the Unix epoch (what JavaScript's `Date` takes).
pub fn unix_ms(at: Timestamp) -> u64 {
    u64::try_from(at.as_millisecond()).unwrap_or(0)
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
pub struct FlowRates {
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
pub struct OutputSample {
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
    /// Age of the oldest waiting message in seconds, as the autoscaler used it.
    pub oldest_age_s: Option<f64>,
    /// True when that age is estimated (no usable head timestamp), false when measured.
    pub age_estimated: bool,
    /// Consumers on the main queue (running workers).
    pub consumers: Option<u64>,
    /// The output's sink as its queue shows it: `down` when every worker has paused,
    /// holding its deliveries; `up` while a worker consumes; `null` when no worker runs.
    pub sink: Option<SinkState>,
    /// Messages in the dead-letter queue.
    pub dead_lettered: Option<u64>,
    /// Messages waiting in the retry queues.
    pub retrying: Option<u64>,
    /// Replica counts.
    pub replicas: Replicas,
    /// Message rates.
    pub rates: FlowRates,
    /// The autoscaler's reason for this poll's decision (also when it held).
    pub reason: String,
    /// True when a reading or its rates were missing (the autoscaler holds).
    pub metrics_missing: bool,
    /// Why the target could not be read or scaled, if it could not.
    pub error: Option<String>,
}

impl OutputSample {
    /// The figures one record carries.
    pub fn from_record(r: &ScaleRecord) -> Self {
        let reading = r.reading.unwrap_or_default();
        // The age the policy used: the tracked one, or the policy's own estimate without it.
        let age = reading.oldest_age.or(r.reading.map(|_| Age {
            seconds: r.decision.signals.age_s,
            estimated: r.decision.signals.age_estimated,
        }));
        Self {
            pipeline: r.pipeline.clone(),
            output: r.output.clone(),
            at_ms: unix_ms(r.at),
            ready: reading.ready,
            unacked: reading.unacked,
            oldest_age_s: age.map(|age| age.seconds),
            age_estimated: age.is_some_and(|age| age.estimated),
            consumers: reading.consumers,
            sink: r.reading.and_then(|reading| reading.sink()),
            dead_lettered: reading.dead_lettered,
            retrying: reading.retrying,
            replicas: Replicas {
                current: r.decision.current,
                desired: r.decision.desired,
                recommended: r.decision.recommended,
            },
            rates: FlowRates {
                published: reading.publish_rate,
                processed: reading.ack_rate,
                retried: reading.retry_rate,
                dead_lettered: reading.dead_letter_rate,
            },
            reason: r.decision.reason.clone(),
            metrics_missing: r.decision.metrics_missing,
            error: r.error.clone(),
        }
    }
}

/// A scaling decision that changed the replica count (also the data of an SSE `scale` event).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScaleEvent {
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
    /// Why, in words: `age 41s (measured) > 30s: 3 → 7`.
    pub reason: String,
}

impl ScaleEvent {
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
    use logstream_broker::{Age, OutputReading};

    use crate::policy::{Decision as ScaleDecision, Signals};

    fn record(reading: Option<OutputReading>, current: u32, desired: u32) -> ScaleRecord {
        ScaleRecord {
            pipeline: "games/app".into(),
            queue: "logstream.test.app.o".into(),
            output: "security".into(),
            at: Timestamp::from_millisecond(1_700_000_000_123).unwrap(),
            decision: ScaleDecision {
                current,
                desired,
                recommended: desired,
                reason: format!("age 41s > 30s: {current} → {desired}"),
                signals: Signals {
                    age_s: 12.0,
                    age_estimated: true,
                    ..Default::default()
                },
                metrics_missing: reading.is_none(),
            },
            reading: reading.map(|r| OutputReading {
                dead_lettered: Some(3),
                dead_letter_rate: Some(0.5),
                retrying: Some(7),
                retry_rate: Some(2.0),
                ..r
            }),
            error: None,
        }
    }

    #[test]
    fn a_record_becomes_the_outputs_figures_with_all_four_rates() {
        let obs = OutputReading {
            ready: Some(120),
            unacked: Some(20),
            consumers: Some(3),
            publish_rate: Some(90.0),
            ack_rate: Some(80.0),
            oldest_age: Some(Age::measured(41.0)),
            ..OutputReading::default()
        };
        let f = OutputSample::from_record(&record(Some(obs), 3, 7));
        assert_eq!(f.at_ms, 1_700_000_000_123);
        assert_eq!(
            (f.ready, f.unacked, f.consumers),
            (Some(120), Some(20), Some(3))
        );
        assert_eq!(f.oldest_age_s, Some(41.0));
        assert!(!f.age_estimated);
        assert_eq!(f.sink, Some(SinkState::Up));
        assert_eq!((f.dead_lettered, f.retrying), (Some(3), Some(7)));
        assert_eq!(
            f.rates,
            FlowRates {
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
        let obs = OutputReading {
            ready: Some(1),
            unacked: Some(0),
            consumers: Some(0),
            ..OutputReading::default()
        };
        let f = OutputSample::from_record(&record(Some(obs), 1, 1));
        assert_eq!(f.oldest_age_s, Some(12.0));
        assert!(f.age_estimated);
        assert_eq!(f.rates.processed, None, "unknown is not zero");
        assert_eq!(f.sink, None, "no consumer and nothing held: nothing to say");
    }

    #[test]
    fn an_estimated_age_and_a_sink_that_is_down_are_shown_as_such() {
        let obs = OutputReading {
            ready: Some(5_000),
            unacked: Some(200),
            consumers: Some(0),
            sampled_consumers: Some(0),
            oldest_age: Some(Age::estimated(95.0)),
            ..OutputReading::default()
        };
        let f = OutputSample::from_record(&record(Some(obs), 2, 2));
        assert_eq!((f.oldest_age_s, f.age_estimated), (Some(95.0), true));
        assert_eq!(f.sink, Some(SinkState::Down));
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["sink"], "down");
        assert_eq!(json["age_estimated"], true);
    }

    #[test]
    fn only_an_applied_change_is_a_decision() {
        assert!(ScaleEvent::from_record(&record(None, 2, 2), "x-1".into()).is_none());
        let d = ScaleEvent::from_record(&record(None, 2, 5), "x-1".into()).unwrap();
        assert_eq!(
            (d.from, d.to, d.reason.as_str()),
            (2, 5, "age 41s > 30s: 2 → 5")
        );
        let mut failed = record(None, 2, 5);
        failed.error = Some("failed to scale deployment games/app-security: forbidden".into());
        assert!(ScaleEvent::from_record(&failed, "x-2".into()).is_none());
    }
}
