//! The sink's health as this worker sees it: up, or down since when, and when to probe it next.
//!
//! The sink is down from the first write that failed as a whole without the sink writing
//! anything else ([`super::narrow`]) until a write succeeds again. While it is down the worker
//! takes no new deliveries and rewrites (probes with) what it holds, with a capped exponential
//! backoff: [`PROBE_BACKOFF_MIN`] doubling to [`PROBE_BACKOFF_MAX`]. Pure: the session acts on it.

use std::time::{Duration, Instant};

/// First wait before probing a sink that just went down.
pub const PROBE_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait between two probes of a sink that stays down. It is also the longest a
/// recovered sink waits for its backlog: with 30 s, a worker draining the 120,000 logs of a
/// 10-minute outage at 200 logs/s (about 25 s of work) spent as long again waiting for its
/// probe. One batch every 5 s per worker is little load for a sink that is down.
pub const PROBE_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The sink's health.
#[derive(Clone, Debug, Default)]
pub struct SinkHealth {
    outage: Option<Outage>,
    /// Counts outages; a write started in an earlier one says nothing about the current one.
    epoch: u64,
}

#[derive(Clone, Copy, Debug)]
struct Outage {
    since: Instant,
    backoff: Duration,
    next_probe: Instant,
}

impl SinkHealth {
    /// A sink believed up.
    pub fn new() -> Self {
        Self::default()
    }

    /// True while the sink is down.
    pub fn is_down(&self) -> bool {
        self.outage.is_some()
    }

    /// When the current outage started.
    pub fn down_since(&self) -> Option<Instant> {
        self.outage.map(|o| o.since)
    }

    /// Which outage writes started now belong to.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A write failed because the sink is down. Returns true when this starts an outage.
    pub fn failed(&mut self, now: Instant) -> bool {
        if self.outage.is_some() {
            return false;
        }
        self.epoch += 1;
        self.outage = Some(Outage {
            since: now,
            backoff: PROBE_BACKOFF_MIN,
            next_probe: now + PROBE_BACKOFF_MIN,
        });
        true
    }

    /// A probe failed: the next one waits twice as long (at most [`PROBE_BACKOFF_MAX`]).
    pub fn probe_failed(&mut self, now: Instant) {
        if let Some(o) = &mut self.outage {
            o.backoff = (o.backoff * 2).min(PROBE_BACKOFF_MAX);
            o.next_probe = now + o.backoff;
        }
    }

    /// When to probe next, while down.
    pub fn next_probe(&self) -> Option<Instant> {
        self.outage.map(|o| o.next_probe)
    }

    /// A write that started in `epoch` succeeded. Returns the outage's length when this ends
    /// one; a write started before the current outage began proves nothing about it.
    pub fn wrote(&mut self, epoch: u64, now: Instant) -> Option<Duration> {
        if epoch < self.epoch {
            return None;
        }
        self.outage
            .take()
            .map(|o| now.saturating_duration_since(o.since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_back_off_from_one_second_doubling_to_five() {
        let start = Instant::now();
        let mut health = SinkHealth::new();
        assert!(!health.is_down());
        assert!(health.failed(start));
        assert!(!health.failed(start), "already down");
        assert_eq!(health.next_probe(), Some(start + PROBE_BACKOFF_MIN));
        let mut waits = Vec::new();
        for _ in 0..7 {
            health.probe_failed(start);
            waits.push(health.next_probe().unwrap() - start);
        }
        let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [2, 4, 5, 5, 5, 5, 5]);
        assert_eq!(health.down_since(), Some(start));
    }

    #[test]
    fn only_a_write_started_during_the_outage_ends_it() {
        let start = Instant::now();
        let mut health = SinkHealth::new();
        let before = health.epoch();
        health.failed(start);
        assert_eq!(
            health.wrote(before, start),
            None,
            "an older write proves nothing"
        );
        assert!(health.is_down());
        let probe = health.epoch();
        assert_eq!(
            health.wrote(probe, start + Duration::from_secs(9)),
            Some(Duration::from_secs(9))
        );
        assert!(!health.is_down());
        assert_eq!(health.wrote(probe, start), None, "already up");
        // The next outage starts from the shortest wait again.
        health.failed(start);
        assert_eq!(health.next_probe(), Some(start + PROBE_BACKOFF_MIN));
    }
}
