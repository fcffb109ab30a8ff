//! The last minutes of one output, one point per time bucket, for the page's charts. Bounded by
//! count and by age, whatever the poll rate.
//!
//! Points are kept packed (counts as `u32`, ages and rates as `f32`: 48 bytes instead of 144),
//! because the operator keeps a full window for every output it scales: 180 points for each
//! of 100 outputs is 0.86 MB packed, 2.6 MB as [`HistoryPoint`]s. Consecutive buckets with
//! the same figures are kept as one run, so an idle output (the most of a thousand sharing a
//! broker) costs one entry instead of 180; [`History::points`] gives every bucket still.

use std::{collections::VecDeque, time::Duration};

use serde::Serialize;

use super::figures::OutputSample;

/// One bucket of history: the highest depths and age seen in it (a burst drained within the
/// bucket still shows), the last rates and replica count.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct HistoryPoint {
    /// Start of the bucket, Unix milliseconds.
    pub t_ms: u64,
    /// Messages ready.
    pub ready: Option<u64>,
    /// Messages unacknowledged.
    pub unacked: Option<u64>,
    /// Age of the oldest waiting message, seconds.
    pub oldest_age_s: Option<f64>,
    /// Messages in the dead-letter queue.
    pub dead_lettered: Option<u64>,
    /// Replicas after the decision.
    pub replicas: u32,
    /// Published per second.
    pub published: Option<f64>,
    /// Processed (acknowledged) per second.
    pub processed: Option<f64>,
    /// Retried per second.
    pub retried: Option<f64>,
    /// Dead-lettered per second.
    pub dead_lettered_rate: Option<f64>,
}

impl HistoryPoint {
    fn merged(&self, f: &OutputSample) -> Self {
        fn max<T: PartialOrd>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(if b > a { b } else { a }),
                (a, b) => b.or(a),
            }
        }
        Self {
            ready: max(self.ready, f.ready),
            unacked: max(self.unacked, f.unacked),
            oldest_age_s: max(self.oldest_age_s, f.oldest_age_s),
            dead_lettered: max(self.dead_lettered, f.dead_lettered),
            ..Self::of(self.t_ms, f)
        }
    }

    fn of(t_ms: u64, f: &OutputSample) -> Self {
        Self {
            t_ms,
            ready: f.ready,
            unacked: f.unacked,
            oldest_age_s: f.oldest_age_s,
            dead_lettered: f.dead_lettered,
            replicas: f.replicas.desired,
            published: f.rates.published,
            processed: f.rates.processed,
            retried: f.rates.retried,
            dead_lettered_rate: f.rates.dead_lettered,
        }
    }
}

/// A [`HistoryPoint`] as kept. Counts above `u32::MAX - 1` are kept as that; ages and rates
/// lose precision beyond `f32`'s 24 bits, which a chart does not show.
#[derive(Clone, Copy, Debug)]
struct Packed {
    /// Start of the run's first bucket.
    t_ms: u64,
    /// Consecutive buckets with these figures (at least 1).
    buckets: u32,
    replicas: u32,
    ready: u32,
    unacked: u32,
    dead_lettered: u32,
    oldest_age_s: f32,
    published: f32,
    processed: f32,
    retried: f32,
    dead_lettered_rate: f32,
}

/// "Unknown" for a packed count.
const NO_COUNT: u32 = u32::MAX;

fn pack_count(v: Option<u64>) -> u32 {
    v.map_or(NO_COUNT, |v| {
        u32::try_from(v).unwrap_or(NO_COUNT - 1).min(NO_COUNT - 1)
    })
}

fn unpack_count(v: u32) -> Option<u64> {
    (v != NO_COUNT).then_some(u64::from(v))
}

#[allow(clippy::cast_possible_truncation)] // f32 is the chart's precision
fn pack_figure(v: Option<f64>) -> f32 {
    v.map_or(f32::NAN, |v| v as f32)
}

fn unpack_figure(v: f32) -> Option<f64> {
    (!v.is_nan()).then_some(f64::from(v))
}

impl Packed {
    fn of(p: &HistoryPoint) -> Self {
        Self {
            t_ms: p.t_ms,
            buckets: 1,
            replicas: p.replicas,
            ready: pack_count(p.ready),
            unacked: pack_count(p.unacked),
            dead_lettered: pack_count(p.dead_lettered),
            oldest_age_s: pack_figure(p.oldest_age_s),
            published: pack_figure(p.published),
            processed: pack_figure(p.processed),
            retried: pack_figure(p.retried),
            dead_lettered_rate: pack_figure(p.dead_lettered_rate),
        }
    }

    /// The same figures, bit for bit (an unknown figure equals an unknown one).
    fn same_figures(&self, other: &Self) -> bool {
        let counts = |p: &Self| (p.replicas, p.ready, p.unacked, p.dead_lettered);
        let figures = |p: &Self| {
            [
                p.oldest_age_s,
                p.published,
                p.processed,
                p.retried,
                p.dead_lettered_rate,
            ]
            .map(f32::to_bits)
        };
        counts(self) == counts(other) && figures(self) == figures(other)
    }

    /// Start of the run's last bucket.
    fn last_ms(&self, bucket_ms: u64) -> u64 {
        self.t_ms + u64::from(self.buckets - 1) * bucket_ms
    }

    /// The point of the bucket starting at `t_ms`.
    fn point_at(&self, t_ms: u64) -> HistoryPoint {
        HistoryPoint {
            t_ms,
            ..self.point()
        }
    }

    fn point(&self) -> HistoryPoint {
        HistoryPoint {
            t_ms: self.t_ms,
            ready: unpack_count(self.ready),
            unacked: unpack_count(self.unacked),
            oldest_age_s: unpack_figure(self.oldest_age_s),
            dead_lettered: unpack_count(self.dead_lettered),
            replicas: self.replicas,
            published: unpack_figure(self.published),
            processed: unpack_figure(self.processed),
            retried: unpack_figure(self.retried),
            dead_lettered_rate: unpack_figure(self.dead_lettered_rate),
        }
    }
}

/// A ring of [`HistoryPoint`]s covering at most `window`.
#[derive(Clone, Debug)]
pub struct History {
    bucket_ms: u64,
    window_ms: u64,
    /// Runs of buckets, oldest first.
    runs: VecDeque<Packed>,
    /// Buckets in all runs.
    len: usize,
}

impl History {
    /// An empty history of `window` in buckets of `bucket`.
    pub fn new(bucket: Duration, window: Duration) -> Self {
        let bucket_ms = u64::try_from(bucket.as_millis()).unwrap_or(u64::MAX).max(1);
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        Self {
            bucket_ms,
            window_ms,
            runs: VecDeque::new(),
            len: 0,
        }
    }

    fn capacity_of(bucket_ms: u64, window_ms: u64) -> usize {
        usize::try_from(window_ms / bucket_ms)
            .unwrap_or(usize::MAX)
            .max(1)
    }

    /// The most points this history holds.
    pub fn capacity(&self) -> usize {
        Self::capacity_of(self.bucket_ms, self.window_ms)
    }

    /// Adds a sample: it replaces the last one of its bucket, or opens a new bucket. A sample
    /// older than the newest bucket (a clock step back) replaces the newest bucket's figures.
    pub fn push(&mut self, figures: &OutputSample) {
        let bucket_ms = self.bucket_ms;
        let t_ms = figures.at_ms - figures.at_ms % bucket_ms;
        match self.runs.back_mut() {
            Some(last) if last.last_ms(bucket_ms) >= t_ms => {
                // The newest bucket changes: out of its run first.
                let newest = last.last_ms(bucket_ms);
                let merged = Packed::of(&last.point_at(newest).merged(figures));
                if merged.same_figures(last) {
                    // Unchanged.
                } else if last.buckets == 1 {
                    *last = merged;
                } else {
                    last.buckets -= 1;
                    self.runs.push_back(merged);
                }
            }
            Some(last)
                if last.last_ms(bucket_ms) + bucket_ms == t_ms
                    && last.same_figures(&Packed::of(&HistoryPoint::of(t_ms, figures))) =>
            {
                last.buckets += 1;
                self.len += 1;
            }
            _ => {
                self.runs
                    .push_back(Packed::of(&HistoryPoint::of(t_ms, figures)));
                self.len += 1;
            }
        }
        let oldest_kept = t_ms.saturating_sub(self.window_ms);
        let capacity = self.capacity();
        while let Some(first) = self.runs.front_mut() {
            if self.len <= capacity && first.t_ms >= oldest_kept {
                break;
            }
            // Drop the oldest bucket.
            self.len -= 1;
            if first.buckets == 1 {
                self.runs.pop_front();
            } else {
                first.buckets -= 1;
                first.t_ms += bucket_ms;
            }
        }
    }

    /// The points, oldest first: one per bucket that had a sample.
    pub fn points(&self) -> impl Iterator<Item = HistoryPoint> + '_ {
        let bucket_ms = self.bucket_ms;
        self.runs.iter().flat_map(move |run| {
            (0..u64::from(run.buckets)).map(move |i| run.point_at(run.t_ms + i * bucket_ms))
        })
    }

    /// How many points there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Entries kept for [`len`](Self::len) points (runs of equal buckets are one).
    pub fn entries(&self) -> usize {
        self.runs.len()
    }

    /// True when no sample arrived yet.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::figures::{FlowRates, Replicas};

    fn sample(at_ms: u64, ready: u64) -> OutputSample {
        OutputSample {
            pipeline: "p".into(),
            output: "o".into(),
            at_ms,
            ready: Some(ready),
            unacked: None,
            oldest_age_s: None,
            age_estimated: false,
            consumers: None,
            sink: None,
            dead_lettered: None,
            retrying: None,
            replicas: Replicas::default(),
            rates: FlowRates::default(),
            reason: String::new(),
            metrics_missing: false,
            error: None,
        }
    }

    #[test]
    fn a_burst_drained_within_one_bucket_still_shows() {
        let mut h = History::new(Duration::from_secs(5), Duration::from_secs(900));
        h.push(&sample(10_000, 1));
        h.push(&sample(12_000, 800));
        h.push(&sample(14_999, 0));
        h.push(&sample(15_000, 4));
        let points: Vec<_> = h.points().map(|p| (p.t_ms, p.ready)).collect();
        assert_eq!(points, [(10_000, Some(800)), (15_000, Some(4))]);
    }

    #[test]
    fn history_is_bounded_to_its_window_however_long_it_runs() {
        let mut h = History::new(Duration::from_secs(5), Duration::from_secs(900));
        assert_eq!(h.capacity(), 180);
        // Ten hours of polls every 2 s.
        for i in 0..18_000u64 {
            h.push(&sample(1_000_000 + i * 2_000, i));
        }
        assert_eq!(h.len(), 180);
        let first = h.points().next().unwrap().t_ms;
        let last = h.points().last().unwrap().t_ms;
        assert!(last - first < 900_000, "{first}..{last}");
    }

    #[test]
    fn an_idle_output_keeps_one_entry_for_a_full_window_of_points() {
        let mut h = History::new(Duration::from_secs(5), Duration::from_secs(900));
        for i in 0..1_000u64 {
            h.push(&sample(1_000_000 + i * 2_000, 0));
        }
        assert_eq!(h.len(), 180);
        assert_eq!(h.entries(), 1);
        let points: Vec<_> = h.points().collect();
        assert_eq!(points.len(), 180);
        assert!(points.windows(2).all(|w| w[1].t_ms == w[0].t_ms + 5_000));
        assert!(points.iter().all(|p| p.ready == Some(0)));
        assert_eq!(points.last().unwrap().t_ms, 1_000_000 + 999 * 2_000 - 3_000);

        // A burst in the middle of idle buckets splits the run; the buckets stay in order.
        let t = 1_000_000 + 1_000 * 2_000;
        h.push(&sample(t, 50));
        h.push(&sample(t + 5_000, 0));
        h.push(&sample(t + 10_000, 0));
        let tail: Vec<_> = h
            .points()
            .skip(h.len() - 4)
            .map(|p| (p.t_ms, p.ready))
            .collect();
        assert_eq!(
            tail,
            [
                (t - 5_000, Some(0)),
                (t, Some(50)),
                (t + 5_000, Some(0)),
                (t + 10_000, Some(0))
            ]
        );
        assert_eq!(h.entries(), 3);
        assert_eq!(h.len(), 180);
    }

    #[test]
    fn a_sample_that_changes_the_newest_bucket_of_a_run_takes_it_out_of_the_run() {
        let mut h = History::new(Duration::from_secs(5), Duration::from_secs(60));
        h.push(&sample(0, 1));
        h.push(&sample(5_000, 1));
        h.push(&sample(6_000, 9));
        let points: Vec<_> = h.points().map(|p| (p.t_ms, p.ready)).collect();
        assert_eq!(points, [(0, Some(1)), (5_000, Some(9))]);
        assert_eq!(h.entries(), 2);
    }

    #[test]
    fn a_pause_in_polling_drops_points_older_than_the_window() {
        let mut h = History::new(Duration::from_secs(5), Duration::from_secs(60));
        h.push(&sample(0, 1));
        h.push(&sample(5_000, 2));
        h.push(&sample(120_000, 3));
        assert_eq!(h.points().map(|p| p.ready).collect::<Vec<_>>(), [Some(3)]);
    }

    #[test]
    fn packing_keeps_counts_exact_and_unknowns_unknown() {
        let mut h = History::new(Duration::from_secs(5), Duration::from_secs(60));
        let mut f = sample(0, 4_000_000_123);
        f.oldest_age_s = Some(12.5);
        f.rates.published = Some(1500.25);
        f.replicas.desired = 7;
        h.push(&f);
        h.push(&sample(5_000, u64::MAX));
        let points: Vec<_> = h.points().collect();
        assert_eq!(points[0].ready, Some(4_000_000_123));
        assert_eq!(points[0].unacked, None);
        assert_eq!(points[0].oldest_age_s, Some(12.5));
        assert_eq!(points[0].published, Some(1500.25));
        assert_eq!(points[0].processed, None);
        assert_eq!(points[0].replicas, 7);
        assert_eq!(points[1].ready, Some(u64::from(u32::MAX - 1)), "saturates");
        assert_eq!(std::mem::size_of::<Packed>(), 48);
    }

    #[test]
    fn a_clock_step_back_does_not_reorder_points() {
        let mut h = History::new(Duration::from_secs(5), Duration::from_secs(60));
        h.push(&sample(50_000, 1));
        h.push(&sample(20_000, 2));
        let points: Vec<_> = h.points().map(|p| (p.t_ms, p.ready)).collect();
        assert_eq!(
            points,
            [(50_000, Some(2))],
            "one point, the later sample's figures"
        );
    }
}
