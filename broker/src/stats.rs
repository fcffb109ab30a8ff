//! One output's queues read together, from the management API's statistics: the main queue's
//! depth, rates and the age of its oldest message, the state of its sink as the queue shows
//! it, and the retry ladder's and dead-letter queue's figures. The operator's status,
//! `logstream status`, the autoscaler and the dashboard all read an output through
//! [`OutputReading`], and show ages through [`format_age`].

use std::fmt;

use jiff::Timestamp;
use logstream_api::topology::{QueueRole, TopologyPlan};
use serde::Serialize;

use crate::management::QueueStats;

/// The queues of one output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutputQueues {
    /// The main queue.
    pub main: String,
    /// The retry steps, in order.
    pub retries: Vec<String>,
    /// The dead-letter queue.
    pub dead_letter: String,
}

impl OutputQueues {
    /// The queues `plan` gives output `output`; `None` when it has no such output.
    pub fn of(plan: &TopologyPlan, output: &str) -> Option<Self> {
        Some(Self {
            main: plan.queue(output, QueueRole::Main)?.name.clone(),
            retries: plan
                .queues
                .iter()
                .filter(|q| q.output == output && matches!(q.role, QueueRole::Retry(_)))
                .map(|q| q.name.clone())
                .collect(),
            dead_letter: plan.queue(output, QueueRole::DeadLetter)?.name.clone(),
        })
    }
}

/// The age of the oldest waiting message.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Age {
    /// Seconds.
    pub seconds: f64,
    /// True when it is estimated (from the backlog and the drain rate) rather than read from
    /// the message's own timestamp.
    pub estimated: bool,
}

impl Age {
    /// A measured age.
    pub fn measured(seconds: f64) -> Self {
        Self {
            seconds: seconds.max(0.0),
            estimated: false,
        }
    }

    /// An estimated age.
    pub fn estimated(seconds: f64) -> Self {
        Self {
            seconds: seconds.max(0.0),
            estimated: true,
        }
    }

    /// The age of the oldest message of `queue` at `now`, from one sample: 0 for an empty
    /// queue; the head message's `timestamp` where the broker reports it; else the backlog
    /// divided by the ack rate (Little's law) while messages are acknowledged; else unknown.
    ///
    /// One sample can be stale (the broker samples every statistics interval, 5 s by
    /// default: a queue drained and refilled since still shows its old head) and masked (on a
    /// priority queue the head is the oldest message of the highest priority waiting).
    /// The autoscaler tracks the age across polls instead (`logstream_autoscaler::age`).
    pub fn of(queue: &QueueStats, now: Timestamp) -> Option<Self> {
        let ready = queue.messages_ready?;
        if ready == 0 {
            return Some(Self::measured(0.0));
        }
        if let Some(head) = queue.head_message_timestamp {
            let now_s = now.as_millisecond() as f64 / 1000.0;
            return Some(Self::measured(now_s - head as f64));
        }
        let drain = queue.ack_rate().filter(|r| *r > 0.0)?;
        Some(Self::estimated(ready as f64 / drain))
    }
}

impl Age {
    /// `measured` or `estimated`, as decisions say it.
    pub fn basis(&self) -> &'static str {
        if self.estimated {
            "estimated"
        } else {
            "measured"
        }
    }
}

impl fmt::Display for Age {
    /// `42s`, or `~42s` when estimated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.estimated {
            f.write_str("~")?;
        }
        f.write_str(&format_age(self.seconds))
    }
}

/// An age as LogStream shows it everywhere (status column, `logstream status`, decisions):
/// `0s`, `42s`, `3m5s`, `2h5m`, as kubectl shows durations.
pub fn format_age(seconds: f64) -> String {
    let s = if seconds.is_finite() && seconds > 0.0 {
        seconds.round() as u64
    } else {
        0
    };
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

/// An output's sink as its main queue shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkState {
    /// A worker consumes.
    Up,
    /// Every worker paused: none consumes, yet deliveries are held unacknowledged. A worker
    /// whose sink is down cancels its consumer and keeps what it holds until the sink answers.
    /// A classic queue then counts no consumer; a quorum queue goes on counting it while it
    /// holds deliveries, and the vhost's consumer listing tells (`consuming`).
    Down,
}

impl SinkState {
    /// `up` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

impl fmt::Display for SinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One output's figures. Every field is `None` when the broker did not report it (the queue
/// is missing, or the management API did not answer): never read as zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct OutputReading {
    /// Messages ready in the main queue: the backlog.
    pub ready: Option<u64>,
    /// Messages delivered to workers and not yet acknowledged.
    pub unacked: Option<u64>,
    /// Consumers of the main queue (running workers): real time where a passive declare
    /// answered (the autoscaler), else from the management API's sample.
    pub consumers: Option<u64>,
    /// Consumers of the main queue in the management API's sample, taken at the same instant
    /// as `unacked`.
    pub sampled_consumers: Option<u64>,
    /// Consumers of the main queue that take deliveries, from the vhost's consumer listing:
    /// read only for a quorum queue with consumers (or none reported yet), as it counts
    /// paused workers as consumers too. `None` otherwise.
    pub consuming: Option<u64>,
    /// The age of the oldest waiting message.
    pub oldest_age: Option<Age>,
    /// Messages published to the main queue per second.
    pub publish_rate: Option<f64>,
    /// Messages acknowledged from the main queue per second.
    pub ack_rate: Option<f64>,
    /// Messages waiting in the retry steps.
    pub retrying: Option<u64>,
    /// Messages sent to a retry step per second.
    pub retry_rate: Option<f64>,
    /// Messages in the dead-letter queue.
    pub dead_lettered: Option<u64>,
    /// Messages dead-lettered per second.
    pub dead_letter_rate: Option<f64>,
}

impl OutputReading {
    /// Reads the output whose queues are `queues` from a vhost's statistics `stats` at `now`.
    pub fn read(stats: &[QueueStats], queues: &OutputQueues, now: Timestamp) -> Self {
        let find = |name: &str| stats.iter().find(|q| q.name == name);
        let main = find(&queues.main);
        let dlq = find(&queues.dead_letter);
        let retries: Vec<&QueueStats> = queues.retries.iter().filter_map(|n| find(n)).collect();
        let any_retry = !retries.is_empty();
        Self {
            ready: main.and_then(|q| q.messages_ready),
            unacked: main.and_then(|q| q.messages_unacknowledged),
            consumers: main.and_then(|q| q.consumers),
            sampled_consumers: main.and_then(|q| q.consumers),
            consuming: main.and_then(|q| q.consuming),
            oldest_age: main.and_then(|q| Age::of(q, now)),
            publish_rate: main.map(|q| q.publish_rate().unwrap_or(0.0)),
            ack_rate: main.map(|q| q.ack_rate().unwrap_or(0.0)),
            retrying: any_retry.then(|| retries.iter().map(|q| q.messages.unwrap_or(0)).sum()),
            retry_rate: any_retry.then(|| {
                retries
                    .iter()
                    .map(|q| q.publish_rate().unwrap_or(0.0))
                    .sum()
            }),
            dead_lettered: dlq.and_then(|q| q.messages),
            dead_letter_rate: dlq.map(|q| q.publish_rate().unwrap_or(0.0)),
        }
    }

    /// The output's sink as the main queue shows it: [`SinkState::Up`] while a worker
    /// consumes; [`SinkState::Down`] when every worker has paused (no consumer now, and the
    /// sample shows no consumer with deliveries held; or, where the queue counts paused
    /// workers as consumers, consumers that hold deliveries and none of them consuming);
    /// `None` when no worker runs, or the figures are missing.
    ///
    /// "No consumer, deliveries held" is read from one management API sample (`unacked` and
    /// `sampled_consumers` are taken together), never from `unacked` sampled seconds ago with
    /// a real-time consumer count: when the last worker dies, its deliveries return to the
    /// queue as its consumer goes, so a consistent sample never shows a crash as an outage,
    /// while an old sample with a new consumer count would. The real-time count only decides
    /// sooner: a consumer now means up, whatever the sample says.
    ///
    /// A quorum queue counts a worker that cancelled its consumer as long as the worker holds
    /// deliveries, in its sample and in a passive declare alike; the consumer listing
    /// (`consuming`) does not. Consumers counted with none consuming and deliveries held is
    /// an outage there; a crash is not mistaken for one, as a crashed worker is no longer
    /// counted in real time.
    pub fn sink(&self) -> Option<SinkState> {
        match (self.consumers, self.sampled_consumers, self.unacked) {
            (_, _, Some(held)) if held > 0 && self.paused_consumers().is_some() => {
                Some(SinkState::Down)
            }
            (Some(now), _, _) if now > 0 => Some(SinkState::Up),
            (Some(0) | None, Some(0), Some(held)) if held > 0 => Some(SinkState::Down),
            (None, Some(sampled), _) if sampled > 0 => Some(SinkState::Up),
            _ => None,
        }
    }

    /// Workers that hold deliveries without consuming, where the queue still counts them as
    /// consumers (a quorum queue): the counted consumers, while none consumes.
    pub fn paused_consumers(&self) -> Option<u64> {
        (self.consuming == Some(0))
            .then(|| self.consumers.or(self.sampled_consumers))
            .flatten()
            .filter(|&n| n > 0)
    }

    /// True when every worker has paused because the sink is down: see [`sink`](Self::sink).
    pub fn sink_down(&self) -> bool {
        self.sink() == Some(SinkState::Down)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn stats(value: serde_json::Value) -> QueueStats {
        serde_json::from_value(value).unwrap()
    }

    fn queues() -> OutputQueues {
        OutputQueues {
            main: "q".into(),
            retries: vec!["q.retry.0".into(), "q.retry.1".into()],
            dead_letter: "q.dlq".into(),
        }
    }

    #[test]
    fn an_output_is_read_from_its_main_retry_and_dead_letter_queues() {
        let all = [
            stats(
                json!({"name": "q", "messages_ready": 10, "messages_unacknowledged": 4,
                "consumers": 2, "head_message_timestamp": 1_000,
                "message_stats": {"publish_details": {"rate": 12.5}, "ack_details": {"rate": 3.0}}}),
            ),
            stats(json!({"name": "q.retry.0", "messages": 3,
                "message_stats": {"publish_details": {"rate": 1.5}}})),
            stats(json!({"name": "q.retry.1", "messages": 2})),
            stats(json!({"name": "q.dlq", "messages": 7,
                "message_stats": {"publish_details": {"rate": 0.5}}})),
            stats(json!({"name": "other", "messages": 99})),
        ];
        let r = OutputReading::read(&all, &queues(), at(1_041));
        assert_eq!(
            r,
            OutputReading {
                ready: Some(10),
                unacked: Some(4),
                consumers: Some(2),
                sampled_consumers: Some(2),
                consuming: None,
                oldest_age: Some(Age::measured(41.0)),
                publish_rate: Some(12.5),
                ack_rate: Some(3.0),
                retrying: Some(5),
                retry_rate: Some(1.5),
                dead_lettered: Some(7),
                dead_letter_rate: Some(0.5),
            }
        );
    }

    #[test]
    fn what_the_broker_did_not_report_stays_unknown() {
        assert_eq!(
            OutputReading::read(&[], &queues(), at(0)),
            OutputReading::default()
        );
        let idle = [stats(json!({"name": "q", "messages_ready": 0}))];
        let r = OutputReading::read(&idle, &queues(), at(0));
        assert_eq!(
            r.publish_rate,
            Some(0.0),
            "an idle queue has no message_stats"
        );
        assert_eq!(r.oldest_age, Some(Age::measured(0.0)));
    }

    #[test]
    fn ages_come_from_the_head_timestamp_or_littles_law() {
        let q = stats(json!({"name": "q", "messages_ready": 500,
            "message_stats": {"ack_details": {"rate": 50.0}}}));
        assert_eq!(Age::of(&q, at(0)), Some(Age::estimated(10.0)));
        let stalled = stats(json!({"name": "q", "messages_ready": 500}));
        assert_eq!(Age::of(&stalled, at(0)), None);
        let future = stats(json!({"name": "q", "messages_ready": 1, "head_message_timestamp": 50}));
        assert_eq!(Age::of(&future, at(10)), Some(Age::measured(0.0)));
    }

    #[test]
    fn the_sink_is_down_when_no_worker_consumes_yet_deliveries_are_held() {
        let reading = |now: Option<u64>, sampled: Option<u64>, unacked: Option<u64>| {
            OutputReading {
                consumers: now,
                sampled_consumers: sampled,
                unacked,
                ..OutputReading::default()
            }
            .sink()
        };
        // Every worker paused, holding 200: down.
        assert_eq!(reading(Some(0), Some(0), Some(200)), Some(SinkState::Down));
        assert!(
            OutputReading {
                consumers: Some(0),
                sampled_consumers: Some(0),
                unacked: Some(200),
                ..OutputReading::default()
            }
            .sink_down()
        );
        // `logstream status` reads the sample alone.
        assert_eq!(reading(None, Some(0), Some(200)), Some(SinkState::Down));
        // A worker consumes again (real time): up, whatever the older sample says.
        assert_eq!(reading(Some(1), Some(0), Some(200)), Some(SinkState::Up));
        assert_eq!(reading(None, Some(2), Some(0)), Some(SinkState::Up));
        // The workers just went (crashed, or scaled to zero): the sample still shows their
        // consumers and deliveries. Not an outage.
        assert_eq!(reading(Some(0), Some(2), Some(200)), None);
        // No worker and nothing held: nothing to say about the sink.
        assert_eq!(reading(Some(0), Some(0), Some(0)), None);
        assert_eq!(reading(None, None, None), None);
        assert_eq!(SinkState::Down.to_string(), "down");
    }

    #[test]
    fn a_quorum_queue_that_counts_paused_workers_is_down_when_none_of_them_consumes() {
        let reading =
            |now: Option<u64>, sampled: Option<u64>, consuming: Option<u64>| OutputReading {
                consumers: now,
                sampled_consumers: sampled,
                unacked: Some(400),
                consuming,
                ..OutputReading::default()
            };
        // Two paused workers, still counted (real time and sample), none in the listing.
        let paused = reading(Some(2), Some(2), Some(0));
        assert_eq!(paused.sink(), Some(SinkState::Down));
        assert_eq!(paused.paused_consumers(), Some(2));
        // `logstream status` reads the sample alone.
        assert_eq!(
            reading(None, Some(2), Some(0)).sink(),
            Some(SinkState::Down)
        );
        // One of them consumes: up.
        let one = reading(Some(2), Some(2), Some(1));
        assert_eq!(one.sink(), Some(SinkState::Up));
        assert_eq!(one.paused_consumers(), None);
        // The workers crashed: no longer counted in real time, their deliveries back in the
        // queue; the sample still shows them. Not an outage.
        assert_eq!(reading(Some(0), Some(2), Some(0)).sink(), None);
        // The listing was not read (a classic queue): as before.
        assert_eq!(reading(Some(2), Some(2), None).sink(), Some(SinkState::Up));
    }

    #[test]
    fn ages_read_like_kubectl_durations() {
        assert_eq!(format_age(0.0), "0s");
        assert_eq!(format_age(4.2), "4s");
        assert_eq!(format_age(185.0), "3m5s");
        assert_eq!(format_age(7_500.0), "2h5m");
        assert_eq!(format_age(f64::NAN), "0s");
        assert_eq!(Age::estimated(185.0).to_string(), "~3m5s");
        assert_eq!(Age::measured(42.0).to_string(), "42s");
        assert_eq!(Age::measured(42.0).basis(), "measured");
        assert_eq!(Age::estimated(42.0).basis(), "estimated");
    }
}
