//! The age of an output's oldest waiting message, tracked across polls so that it is neither
//! stale nor masked.
//!
//! One management API sample is not enough: the broker samples its statistics every
//! `collect_statistics_interval` (5 s by default; a quorum queue's counts were measured to lag
//! up to 10 s on 4.0.5), so a queue drained and refilled since still shows its old head
//! message's timestamp; on a priority queue the head is the oldest message of the highest
//! priority waiting, so a fresh critical log hides an old backlog; quorum queues report no head
//! timestamp at all. Each poll, [`AgeTracker::observe`] combines what is current (the
//! passive declare's ready count) with what the samples add up to over time:
//!
//! - **Empty sightings** (an upper bound): when a poll finds no ready message, nothing waiting
//!   later can be older than that poll. A head timestamp older than the last empty sighting,
//!   read less than [`STATS_LAG_S`] after it, may come from a sample taken before the queue
//!   emptied: it is stale and not used. Later it is believed: the broker samples a queue again
//!   within its statistics interval of a change, and the queue changed (it emptied) before the
//!   sighting; an older head then is a message that came back (a worker died holding it).
//! - **Checkpoints** (a lower bound no priority can mask): if `R` messages were ready at poll
//!   `t` and fewer than `R` have been delivered since, one of them still waits, so the oldest
//!   waiting message is at least `now - t` old. Deliveries come from the sampled cumulative
//!   `deliver_get` counter, counted in the safe direction: from the sample seen at `t` (which
//!   predates `t`, so it counts deliveries before `t` too), plus the deliveries the current
//!   sample may not include yet (its delivery rate times [`STATS_LAG_S`]); redeliveries count
//!   again. At most [`CHECKPOINTS`] are kept.
//! - **The head timestamp** (measured) where the broker reports one and it is not stale: the
//!   age is the larger of it and the lower bound.
//! - **The checkpoints again** (estimated) where there is no usable head timestamp (quorum
//!   queues, producers that set no `timestamp`, a stale head): in a FIFO queue the messages
//!   ready at a poll leave before any later one, so the oldest waiting message arrived about
//!   when the checkpoints turn from "all delivered since" to "some still waiting", counted
//!   without the safety margin of the bound (interpolated between the two polls). The ready
//!   counts are real time and only the deliveries are sampled, so the error is at most about
//!   the statistics lag times the ratio of the drain and arrival rates, plus rounding: within
//!   25 % once the oldest message is older than about 15 s (tests/age.rs). A backlog older
//!   than the checkpoints (the autoscaler started after it) is extrapolated from the
//!   cumulative `publish` counter at the publish rate the broker reported at the first
//!   checkpoint; failing that, the backlog divided by the ack rate (Little's law); failing
//!   that, the time since the first checkpoint. The estimate is kept within the bounds above.
//!
//! Pure: the caller passes the time and the readings.

use std::collections::VecDeque;

use jiff::Timestamp;
use logstream_broker::{Age, QueueStats};

/// How old a management API sample can be when a poll reads it, in seconds: two default
/// statistics intervals (quorum queues' counts were measured to lag about 10 s on 4.0.5),
/// which also covers the autoscalers' shared listing (`crate::shared`, a second per page).
pub const STATS_LAG_S: f64 = 10.0;

/// Checkpoints kept per output: at a 2 s poll, two minutes at full resolution; older spans
/// are thinned (never the oldest checkpoint), so a bound an hour back is good to about a
/// minute.
pub const CHECKPOINTS: usize = 64;

/// A head timestamp has whole seconds: one published just after an empty sighting may read up
/// to a second earlier than it.
const TIMESTAMP_RESOLUTION_S: f64 = 1.0;

/// One poll: the real-time ready count with the sampled cumulative counters seen with it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Checkpoint {
    /// Poll time, seconds since the Unix epoch.
    at: f64,
    /// Ready messages at `at` (real time).
    ready: u64,
    /// Deliveries counted by the sample seen at `at` (no more than the true count at `at`).
    delivered: u64,
    /// Publishes counted by the sample seen at `at`.
    published: u64,
    /// The publish rate the sample seen at `at` reported (messages per second).
    publish_rate: f64,
}

/// The age of one output's oldest waiting message, across polls.
#[derive(Clone, Debug, Default)]
pub struct AgeTracker {
    checkpoints: VecDeque<Checkpoint>,
    /// The last poll that found no ready message.
    last_empty: Option<f64>,
    /// The cumulative counters last seen (published, delivered), to notice a reset.
    counters: Option<(u64, u64)>,
}

impl AgeTracker {
    /// A tracker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The age at `at` from this poll's real-time ready count (`ready`, from a passive
    /// declare; `None` when it did not answer) and the main queue's management API sample
    /// (`main`; `None` when the API did not answer). `None` when neither says anything: the
    /// policy then holds or falls back.
    pub fn observe(
        &mut self,
        at: Timestamp,
        ready: Option<u64>,
        main: Option<&QueueStats>,
    ) -> Option<Age> {
        let now = seconds(at);
        let ready = ready.or_else(|| main.and_then(|q| q.messages_ready))?;
        let counters = main.map(|q| (q.published_total(), q.delivered_total()));
        if let (Some((published, delivered)), Some((p0, d0))) = (counters, self.counters)
            && (published < p0 || delivered < d0)
        {
            // The broker's statistics restarted (or the queue was re-created): what the
            // checkpoints counted means nothing any more.
            self.checkpoints.clear();
        }
        if counters.is_some() {
            self.counters = counters;
        }

        let publish_rate = main.and_then(QueueStats::publish_rate).unwrap_or(0.0);
        if ready == 0 {
            self.last_empty = Some(now);
            self.checkpoints.clear();
            self.push(now, 0, counters, publish_rate);
            return Some(Age::measured(0.0));
        }
        self.push(now, ready, counters, publish_rate);
        self.forget_dead(main);

        let lower = self.lower_bound(now, ready, main);
        let upper = self.last_empty.map(|empty| now - empty);
        let head = main
            .and_then(|q| q.head_message_timestamp)
            .map(|h| h as f64);
        if let Some(head) = head
            && !self.is_stale(head, now)
        {
            return Some(Age::measured((now - head).max(lower.unwrap_or(0.0))));
        }
        let guess = main
            .and_then(|q| self.age_by_survivors(now, q))
            .or_else(|| main.and_then(|q| self.age_by_arrivals(now, q)))
            .or_else(|| main.and_then(|q| littles_law(ready, q)))
            .or(upper)
            .or(lower)?;
        let capped = upper.map_or(guess, |upper| guess.min(upper));
        Some(Age::estimated(capped.max(lower.unwrap_or(0.0))))
    }

    fn push(&mut self, at: f64, ready: u64, counters: Option<(u64, u64)>, publish_rate: f64) {
        let Some((published, delivered)) = counters else {
            return;
        };
        self.checkpoints.push_back(Checkpoint {
            at,
            ready,
            delivered,
            published,
            publish_rate,
        });
        if self.checkpoints.len() > CHECKPOINTS {
            // Thin where the checkpoints are densest, keeping the oldest and the newest.
            let densest = (1..self.checkpoints.len() - 1).min_by(|&a, &b| {
                let gap = |i: usize| self.checkpoints[i + 1].at - self.checkpoints[i - 1].at;
                gap(a).total_cmp(&gap(b))
            });
            if let Some(i) = densest {
                self.checkpoints.remove(i);
            }
        }
    }

    /// Drops the checkpoints whose messages have all been delivered for certain (the sampled
    /// deliveries alone reach their ready count), keeping the newest of them: it anchors the
    /// arrival history.
    fn forget_dead(&mut self, main: Option<&QueueStats>) {
        let Some(q) = main else { return };
        let delivered = q.delivered_total();
        let dead = |c: &Checkpoint| delivered.saturating_sub(c.delivered) >= c.ready;
        while self.checkpoints.len() >= 2
            && dead(&self.checkpoints[0])
            && dead(&self.checkpoints[1])
        {
            self.checkpoints.pop_front();
        }
    }

    /// The oldest checkpoint one of whose messages surely still waits gives the bound.
    fn lower_bound(&self, now: f64, ready: u64, main: Option<&QueueStats>) -> Option<f64> {
        let q = main?;
        let unseen = q.deliver_rate().unwrap_or(0.0).max(0.0) * STATS_LAG_S;
        let delivered = q.delivered_total() as f64 + unseen;
        self.checkpoints
            .iter()
            .find(|c| {
                let left = delivered - c.delivered as f64;
                (c.ready as f64 - left).min(ready as f64) >= 1.0
            })
            .map(|c| now - c.at)
    }

    /// A head timestamp older than the last empty sighting, read at `now` from a sample that
    /// may have been taken before it.
    fn is_stale(&self, head: f64, now: f64) -> bool {
        self.last_empty
            .is_some_and(|empty| head + TIMESTAMP_RESOLUTION_S < empty && now < empty + STATS_LAG_S)
    }

    /// The age of the oldest waiting message if the queue is FIFO: since when the messages
    /// ready at a checkpoint are no longer all delivered. `None` when the oldest checkpoint's
    /// messages still wait (the backlog is older than the history) or every checkpoint's have
    /// left (the sample lags the ready count).
    fn age_by_survivors(&self, now: f64, q: &QueueStats) -> Option<f64> {
        let delivered = q.delivered_total() as f64;
        let surplus = |c: &Checkpoint| c.ready as f64 - (delivered - c.delivered as f64);
        let k = self.checkpoints.iter().position(|c| surplus(c) > 0.0)?;
        if k == 0 {
            return None;
        }
        let (a, b) = (&self.checkpoints[k - 1], &self.checkpoints[k]);
        let (sa, sb) = (surplus(a), surplus(b));
        let crossing = a.at + (-sa) / (sb - sa) * (b.at - a.at);
        Some(now - crossing)
    }

    /// When the oldest waiting message arrived, if the queue is FIFO: when the publishes
    /// passed today's deliveries.
    fn age_by_arrivals(&self, now: f64, q: &QueueStats) -> Option<f64> {
        let delivered = q.delivered_total() as f64;
        let first = self.checkpoints.front()?;
        if first.published as f64 > delivered {
            // Published before the history began: at the publish rate the broker reported then
            // (the history's own rate may belong to another regime: a burst that stopped).
            if first.publish_rate <= 0.0 {
                return None;
            }
            let before = (first.published as f64 - delivered) / first.publish_rate;
            return Some(now - (first.at - before));
        }
        let (a, b) = self
            .checkpoints
            .iter()
            .zip(self.checkpoints.iter().skip(1))
            .find(|(_, b)| b.published as f64 > delivered)?;
        let between = (delivered - a.published as f64) / (b.published - a.published) as f64;
        Some(now - (a.at + between * (b.at - a.at)))
    }
}

/// The backlog divided by the ack rate, while messages are acknowledged.
fn littles_law(ready: u64, q: &QueueStats) -> Option<f64> {
    let drain = q.ack_rate().filter(|r| *r > 0.0)?;
    Some(ready as f64 / drain)
}

fn seconds(at: Timestamp) -> f64 {
    at.as_millisecond() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use logstream_broker::management::Rate;
    use serde_json::json;

    use super::*;

    fn at(seconds: f64) -> Timestamp {
        Timestamp::from_millisecond((seconds * 1000.0) as i64).unwrap()
    }

    /// A sample of the main queue: ready, cumulative publishes and deliveries, head timestamp,
    /// delivery rate.
    fn sample(
        ready: u64,
        published: u64,
        delivered: u64,
        head: Option<i64>,
        deliver_rate: f64,
    ) -> QueueStats {
        serde_json::from_value(json!({
            "name": "q",
            "messages_ready": ready,
            "messages_unacknowledged": 0,
            "head_message_timestamp": head,
            "message_stats": {
                "publish": published,
                "deliver_get": delivered,
                "deliver_get_details": {"rate": deliver_rate},
            },
        }))
        .unwrap()
    }

    #[test]
    fn an_empty_queue_is_zero_seconds_old() {
        let mut t = AgeTracker::new();
        let q = sample(0, 10, 10, None, 0.0);
        assert_eq!(
            t.observe(at(100.0), Some(0), Some(&q)),
            Some(Age::measured(0.0))
        );
        assert_eq!(t.observe(at(100.0), None, None), None, "nothing known");
    }

    #[test]
    fn a_fresh_head_timestamp_is_the_measured_age() {
        let mut t = AgeTracker::new();
        let q = sample(500, 500, 0, Some(1_000), 0.0);
        let age = t.observe(at(1_041.0), Some(500), Some(&q)).unwrap();
        assert_eq!(age, Age::measured(41.0));
    }

    #[test]
    fn a_head_timestamp_from_before_the_queue_was_last_empty_is_stale() {
        let mut t = AgeTracker::new();
        // Old messages, 60 s old by their timestamp.
        let old = sample(100, 100, 0, Some(940), 0.0);
        assert_eq!(
            t.observe(at(1_000.0), Some(100), Some(&old)),
            Some(Age::measured(60.0))
        );
        // Drained: the passive declare sees it at once, the sample does not.
        assert_eq!(
            t.observe(at(1_002.0), Some(0), Some(&old)),
            Some(Age::measured(0.0))
        );
        // Refilled at 1,003.5; at 1,004 the sample still shows the old head.
        let age = t.observe(at(1_004.0), Some(50), Some(&old)).unwrap();
        assert!(age.estimated, "{age:?}");
        assert!(
            age.seconds <= 2.0,
            "no waiting message is older than the empty sighting at 1,002: {age:?}"
        );
        // The next sample has the new head.
        let new = sample(50, 150, 100, Some(1_003), 0.0);
        assert_eq!(
            t.observe(at(1_006.0), Some(50), Some(&new)),
            Some(Age::measured(3.0))
        );
    }

    #[test]
    fn an_old_head_read_a_statistics_lag_after_the_empty_sighting_is_believed() {
        // A worker died holding old deliveries: they came back after the queue looked empty.
        let mut t = AgeTracker::new();
        let before = sample(0, 100, 100, None, 0.0);
        t.observe(at(1_000.0), Some(0), Some(&before));
        let requeued = sample(20, 100, 120, Some(900), 0.0);
        let soon = t.observe(at(1_002.0), Some(20), Some(&requeued)).unwrap();
        assert!(
            soon.estimated,
            "the sample may predate the sighting: {soon:?}"
        );
        assert!(soon.seconds <= 2.0, "{soon:?}");
        let later = t
            .observe(at(1_000.0 + STATS_LAG_S), Some(20), Some(&requeued))
            .unwrap();
        assert_eq!(
            later,
            Age::measured(STATS_LAG_S + 100.0),
            "by now the broker has sampled the queue since it emptied"
        );
    }

    #[test]
    fn fresh_critical_logs_at_the_head_do_not_mask_an_old_backlog() {
        let mut t = AgeTracker::new();
        // 10,000 infos wait from t=0; nobody consumes.
        for s in (0..=60).step_by(2) {
            let q = sample(10_000, 10_000, 0, Some(1_000), 0.0);
            t.observe(at(1_000.0 + f64::from(s)), Some(10_000), Some(&q));
        }
        // 50 critical logs arrive and become the head.
        let q = sample(10_050, 10_050, 0, Some(1_061), 0.0);
        let age = t.observe(at(1_062.0), Some(10_050), Some(&q)).unwrap();
        assert_eq!(
            age,
            Age::measured(62.0),
            "the infos seen at 1,000 still wait"
        );
    }

    #[test]
    fn the_lower_bound_counts_deliveries_the_sample_may_not_show_yet() {
        let mut t = AgeTracker::new();
        let q = sample(100, 100, 0, None, 0.0);
        t.observe(at(1_000.0), Some(100), Some(&q));
        // 60 delivered by the sample, and 5/s for up to 10 s more it may not show: 110 > 100.
        let q = sample(40, 100, 60, None, 5.0);
        assert_eq!(t.lower_bound(1_030.0, 40, Some(&q)), None);
        let q = sample(40, 100, 40, None, 5.0);
        assert_eq!(t.lower_bound(1_030.0, 60, Some(&q)), Some(30.0));
    }

    #[test]
    fn without_a_head_timestamp_a_fifo_queue_is_aged_by_when_its_checkpoints_ran_out() {
        // A FIFO queue: 60/s published from t=0, 30/s delivered; the head arrived at now/2.
        let mut t = AgeTracker::new();
        let empty = sample(0, 0, 0, None, 0.0);
        t.observe(at(1_000.0), Some(0), Some(&empty));
        let mut last = None;
        for s in (2..=40).step_by(2) {
            let s = f64::from(s);
            let (published, delivered) = ((60.0 * s) as u64, (30.0 * s) as u64);
            let q = sample(published - delivered, published, delivered, None, 30.0);
            last = t.observe(at(1_000.0 + s), Some(published - delivered), Some(&q));
        }
        let age = last.unwrap();
        assert!(age.estimated);
        assert!((age.seconds - 20.0).abs() < 1e-9, "{age:?}");
    }

    #[test]
    fn a_backlog_older_than_the_history_is_extrapolated_at_the_publish_rate_seen_first() {
        let mut t = AgeTracker::new();
        // 1,000 published before we looked, at 10/s; none delivered yet; then arrivals stop.
        let with_rate = |published: u64, rate: f64| {
            let mut q = sample(published, published, 0, None, 0.0);
            q.message_stats.as_mut().unwrap().publish_details = Some(Rate { rate });
            q
        };
        t.observe(at(2_000.0), Some(1_000), Some(&with_rate(1_000, 10.0)));
        let age = t
            .observe(at(2_060.0), Some(1_000), Some(&with_rate(1_000, 0.0)))
            .unwrap();
        // The first message arrived 100 s before the history began.
        assert_eq!(age, Age::estimated(160.0));

        // No arrivals when we first looked: at least as old as the history.
        let mut t = AgeTracker::new();
        t.observe(at(2_000.0), Some(1_000), Some(&with_rate(1_000, 0.0)));
        let age = t
            .observe(at(2_060.0), Some(1_000), Some(&with_rate(1_000, 0.0)))
            .unwrap();
        assert_eq!(age, Age::estimated(60.0));
    }

    #[test]
    fn an_estimate_stays_within_the_bounds() {
        let mut t = AgeTracker::new();
        t.observe(at(1_000.0), Some(0), Some(&sample(0, 0, 0, None, 0.0)));
        // Little's law alone would say 1,000 s (no history of publishes yet: the counters stay
        // at 0), but the queue was empty 4 s ago.
        let mut q = sample(1_000, 0, 0, None, 0.0);
        q.message_stats.as_mut().unwrap().ack_details = Some(Rate { rate: 1.0 });
        let age = t.observe(at(1_004.0), Some(1_000), Some(&q)).unwrap();
        assert_eq!(age, Age::estimated(4.0));
    }

    #[test]
    fn a_statistics_reset_forgets_the_checkpoints() {
        let mut t = AgeTracker::new();
        t.observe(
            at(1_000.0),
            Some(100),
            Some(&sample(100, 500, 400, None, 0.0)),
        );
        assert_eq!(t.checkpoints.len(), 1);
        t.observe(
            at(1_002.0),
            Some(100),
            Some(&sample(100, 100, 0, None, 0.0)),
        );
        assert_eq!(t.checkpoints.len(), 1, "only the new one");
    }

    #[test]
    fn checkpoints_stay_bounded_and_keep_the_oldest() {
        let mut t = AgeTracker::new();
        for s in 0..1_000 {
            let q = sample(10, 10, 0, None, 0.0);
            t.observe(at(1_000.0 + f64::from(s)), Some(10), Some(&q));
        }
        assert_eq!(t.checkpoints.len(), CHECKPOINTS);
        assert_eq!(t.checkpoints[0].at, 1_000.0);
        let q = sample(10, 10, 0, None, 0.0);
        assert_eq!(t.lower_bound(2_000.0, 10, Some(&q)), Some(1_000.0));
    }
}
