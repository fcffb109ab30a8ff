//! Pacing of load runs and replays: `--rate` messages per second on average, sent in bursts of
//! `--burst`.
//!
//! The schedule is absolute (message `k` is due at `start + burst_index(k) * burst / rate`), so
//! a slow moment is caught up instead of lowering the average, and the sender sleeps only
//! when it is ahead, never once per message.

use std::time::Duration;

use tokio::time::Instant;

/// When each message of a paced run is due.
#[derive(Clone, Copy, Debug)]
pub struct Pacer {
    start: Instant,
    rate: Option<f64>,
    burst: u64,
}

impl Pacer {
    /// A schedule of `rate` messages per second (unpaced when `None`) in bursts of `burst`.
    pub fn new(rate: Option<f64>, burst: u64) -> Self {
        Self {
            start: Instant::now(),
            rate,
            burst: burst.max(1),
        }
    }

    /// Offset from the start at which message `k` (0-based) is due.
    pub fn due_offset(&self, k: u64) -> Duration {
        match self.rate {
            None => Duration::ZERO,
            Some(rate) => {
                let burst_start = (k / self.burst) * self.burst;
                Duration::from_secs_f64(burst_start as f64 / rate)
            }
        }
    }

    /// True when message `k` is due now (waiting for it would not sleep).
    pub fn is_due(&self, k: u64) -> bool {
        self.rate.is_none() || Instant::now() >= self.start + self.due_offset(k)
    }

    /// Waits until message `k` is due.
    pub async fn wait_for(&self, k: u64) {
        if self.rate.is_some() {
            tokio::time::sleep_until(self.start + self.due_offset(k)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_rate_spaces_messages_evenly() {
        let p = Pacer::new(Some(100.0), 1);
        assert_eq!(p.due_offset(0), Duration::ZERO);
        assert_eq!(p.due_offset(1), Duration::from_millis(10));
        assert_eq!(p.due_offset(250), Duration::from_millis(2500));
    }

    #[test]
    fn bursts_send_together_and_keep_the_average_rate() {
        let p = Pacer::new(Some(1000.0), 500);
        assert_eq!(p.due_offset(0), Duration::ZERO);
        assert_eq!(p.due_offset(499), Duration::ZERO);
        assert_eq!(p.due_offset(500), Duration::from_millis(500));
        assert_eq!(p.due_offset(1999), Duration::from_millis(1500));
    }

    #[test]
    fn without_a_rate_everything_is_due_at_once() {
        let p = Pacer::new(None, 1);
        assert_eq!(p.due_offset(1_000_000), Duration::ZERO);
        assert!(p.is_due(1_000_000));
        let paced = Pacer::new(Some(1.0), 1);
        assert!(paced.is_due(0));
        assert!(!paced.is_due(5));
    }
}
