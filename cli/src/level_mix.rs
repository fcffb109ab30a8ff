//! The level mix of a load run (`--levels info=90,warn=7,error=2.9,critical=0.1`) and the
//! order in which levels are handed out.
//!
//! Levels are interleaved by smooth weighted round-robin instead of drawn at random: after
//! any number of logs, each level's count is within one of its exact share. A load run of 100k
//! logs therefore matches the requested percentages exactly (a random draw of a 0.1 % level
//! would be off by several percent of that level), and the interleaving still spreads rare
//! levels evenly through the run instead of sending them in a block.

use std::{fmt, str::FromStr};

use logstream_api::contract::Level;

/// Largest weight of one level.
pub const MAX_WEIGHT: f64 = 1_000_000.0;

/// Weights per level, in the order the user wrote them.
#[derive(Clone, Debug, PartialEq)]
pub struct LevelMix {
    weights: Vec<(Level, f64)>,
}

/// Why a `--levels` value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid level mix {input:?}: {reason} (expected e.g. info=90,warn=7,error=2.9,critical=0.1)"
)]
pub struct LevelMixError {
    input: String,
    reason: String,
}

impl FromStr for LevelMix {
    type Err = LevelMixError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| LevelMixError {
            input: input.to_owned(),
            reason,
        };
        let mut weights: Vec<(Level, f64)> = Vec::new();
        for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (level, weight) = part
                .split_once('=')
                .ok_or_else(|| fail(format!("{part:?} is not LEVEL=WEIGHT")))?;
            let level = Level::parse_lenient(level)
                .ok_or_else(|| fail(format!("unknown log level {:?}", level.trim())))?;
            let weight: f64 = weight
                .trim()
                .parse()
                .ok()
                .filter(|w: &f64| (0.0..=MAX_WEIGHT).contains(w))
                .ok_or_else(|| {
                    fail(format!(
                        "weight of {level} must be a number from 0 to {MAX_WEIGHT}"
                    ))
                })?;
            if weights.iter().any(|(l, _)| *l == level) {
                return Err(fail(format!("{level} is given twice")));
            }
            weights.push((level, weight));
        }
        weights.retain(|(_, w)| *w > 0.0);
        if weights.is_empty() {
            return Err(fail("no level has a weight above 0".into()));
        }
        Ok(Self { weights })
    }
}

impl fmt::Display for LevelMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .weights
            .iter()
            .map(|(level, weight)| format!("{level}={weight}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl LevelMix {
    /// Each level's share of the whole, between 0 and 1.
    pub fn shares(&self) -> Vec<(Level, f64)> {
        let total: f64 = self.weights.iter().map(|(_, w)| w).sum();
        self.weights.iter().map(|(l, w)| (*l, w / total)).collect()
    }

    /// An endless sequence of levels in these proportions.
    pub fn schedule(&self) -> LevelSchedule {
        // Integer weights (millionths) keep the round-robin exact over any run length.
        let weights: Vec<(Level, i64)> = self
            .weights
            .iter()
            .map(|(l, w)| (*l, ((w * WEIGHT_SCALE).round() as i64).max(1)))
            .collect();
        LevelSchedule {
            total: weights.iter().map(|(_, w)| w).sum(),
            current: vec![0; weights.len()],
            weights,
        }
    }
}

/// Resolution of weights in the schedule: a millionth.
const WEIGHT_SCALE: f64 = 1_000_000.0;

/// Hands out levels by smooth weighted round-robin (the nginx upstream algorithm).
#[derive(Clone, Debug)]
pub struct LevelSchedule {
    weights: Vec<(Level, i64)>,
    current: Vec<i64>,
    total: i64,
}

impl Iterator for LevelSchedule {
    type Item = Level;

    fn next(&mut self) -> Option<Level> {
        let mut best = 0;
        for (i, (_, weight)) in self.weights.iter().enumerate() {
            self.current[i] += weight;
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= self.total;
        Some(self.weights[best].0)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn the_default_mix_parses_and_prints_back() {
        let mix: LevelMix = "info=90,warn=7,error=2.9,critical=0.1".parse().unwrap();
        assert_eq!(mix.to_string(), "info=90,warn=7,error=2.9,critical=0.1");
        let shares = mix.shares();
        assert!((shares[3].1 - 0.001).abs() < 1e-12);
    }

    #[test]
    fn every_prefix_of_the_schedule_is_within_one_log_of_the_exact_share() {
        let mix: LevelMix = "info=90,warn=7,error=2.9,critical=0.1".parse().unwrap();
        let shares = mix.shares();
        let mut counts: BTreeMap<Level, u64> = BTreeMap::new();
        for (n, level) in mix.schedule().take(100_000).enumerate() {
            *counts.entry(level).or_default() += 1;
            let sent = (n + 1) as f64;
            for (level, share) in &shares {
                let count = counts.get(level).copied().unwrap_or(0) as f64;
                assert!((count - share * sent).abs() <= 1.0, "{level} after {sent}");
            }
        }
        assert_eq!(counts[&Level::Info], 90_000);
        assert_eq!(counts[&Level::Warn], 7_000);
        assert_eq!(counts[&Level::Error], 2_900);
        assert_eq!(counts[&Level::Critical], 100);
    }

    #[test]
    fn rare_levels_are_spread_through_the_run_not_sent_in_a_block() {
        let mix: LevelMix = "info=99,critical=1".parse().unwrap();
        let positions: Vec<usize> = mix
            .schedule()
            .take(1000)
            .enumerate()
            .filter(|(_, l)| *l == Level::Critical)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(positions.len(), 10);
        assert!(
            positions.windows(2).all(|w| w[1] - w[0] == 100),
            "{positions:?}"
        );
    }

    #[test]
    fn bad_mixes_are_refused_with_the_reason() {
        for (input, reason) in [
            ("info", "not LEVEL=WEIGHT"),
            ("loud=3", "unknown log level"),
            ("info=-1", "must be a number"),
            ("info=1,info=2", "given twice"),
            ("info=0", "no level has a weight"),
            ("", "no level has a weight"),
        ] {
            let err = input.parse::<LevelMix>().unwrap_err().to_string();
            assert!(err.contains(reason), "{input}: {err}");
        }
        let lenient: LevelMix = "WARNING=1, fatal=1".parse().unwrap();
        assert_eq!(lenient.to_string(), "warn=1,critical=1");
    }
}
