//! The scaling policy: from one output's queue readings to a replica count with a reason.
//!
//! Pure: no clock, no I/O. The caller passes the time and the reading; the operator, `logstream
//! dev` and the simulator drive this same code.
//!
//! ```text
//! N = max( ceil(B / targetBacklogPerReplica),
//!          ceil((λ + B / max(maxMessageAge - age, floor)) / μ) )   clamped to [min, max]
//! ```
//!
//! B is the backlog (ready messages), λ the arrival rate, μ the drain rate of one replica,
//! learned while the workers are busy, and the age that of the oldest waiting message as the
//! reading gives it (tracked across polls by [`crate::age`]; measured or estimated, and the
//! reason says which). Scale-up happens at once, in one step; scale-down only after the lower
//! count held for `scaleDownDelay` (to the highest count asked for meanwhile); scale to zero
//! only after the queue stayed empty and idle that long. A missing reading holds the current
//! count, and so does a sink that is down (every worker paused, holding its deliveries): more
//! workers would only wait on it too.

use logstream_api::resolved::ScalingSettings;
use logstream_broker::{Age, OutputReading};

use crate::{age::STATS_LAG_S, rate::Ewma};

/// Time constant of the arrival-rate average.
const ARRIVAL_TIME_CONSTANT_S: f64 = 10.0;
/// Time constant of the per-replica drain-rate average.
const DRAIN_TIME_CONSTANT_S: f64 = 30.0;
/// Publish and ack rates below this count as idle.
const IDLE_RATE: f64 = 0.01;
/// The shortest time budget the formula gives a backlog to drain in, whatever its age.
const MIN_DRAIN_BUDGET_S: f64 = 1.0;
/// How long the workers must have been saturated with an unchanged consumer count before
/// their ack rate is taken as their capacity: the broker averages rates over its statistics
/// interval (5 s by default), so a shorter span would mix in idle or absent workers.
const RATE_SETTLE_S: f64 = 5.0;

/// What the policy reads of an output, with the gaps of a reading filled: figures the broker
/// did not report are 0, except the rates, whose absence makes the decision hold.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Observed {
    ready: u64,
    unacked: u64,
    consumers: u64,
    /// Publish and ack rates, when the management API answered.
    rates: Option<(f64, f64)>,
    /// The age of the oldest waiting message, as the reading gives it.
    age: Option<Age>,
    /// Every worker paused: the sink is down.
    sink_down: bool,
    /// Consumers the queue counts while the consumer listing shows none of them consuming
    /// (a quorum queue counts paused workers; a new consumer reaches the listing within a
    /// statistics interval).
    paused: Option<u64>,
    /// Whether the sample reported unacknowledged messages at all.
    unacked_known: bool,
}

impl Observed {
    fn of(reading: &OutputReading) -> Self {
        Self {
            ready: reading.ready.unwrap_or(0),
            unacked: reading.unacked.unwrap_or(0),
            consumers: reading.consumers.unwrap_or(0),
            rates: reading.publish_rate.zip(reading.ack_rate),
            age: reading.oldest_age,
            sink_down: reading.sink_down(),
            paused: reading.paused_consumers(),
            unacked_known: reading.unacked.is_some(),
        }
    }
}

/// What the policy decided, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Replicas before the decision.
    pub current: u32,
    /// Replicas after it (equal to `current` when holding).
    pub desired: u32,
    /// What the formula asks for right now, before the scale-down delay.
    pub recommended: u32,
    /// Why, in words: `age 41s > 30s: 3 → 7`.
    pub reason: String,
    /// The figures the decision used.
    pub signals: Signals,
    /// True when a reading (or its rates) was missing: the caller raises a condition.
    pub metrics_missing: bool,
}

impl Decision {
    /// True when the replica count changes.
    pub fn is_change(&self) -> bool {
        self.desired != self.current
    }
}

/// The figures behind a decision.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Signals {
    /// Backlog B (ready messages).
    pub backlog: u64,
    /// Age of the oldest waiting message.
    pub age_s: f64,
    /// True when that age is estimated rather than measured.
    pub age_estimated: bool,
    /// Arrival rate λ used.
    pub arrival_rate: f64,
    /// Per-replica drain rate μ, once learned.
    pub replica_rate: Option<f64>,
}

/// The state one output's autoscaler keeps between readings.
#[derive(Clone, Debug)]
pub struct ScalingPolicy {
    settings: ScalingSettings,
    arrivals: Ewma,
    replica_rate: Ewma,
    /// Since when the recommendation stayed below the current count, and the highest
    /// recommendation meanwhile.
    lower_since: Option<(f64, u32)>,
    /// Since when the queue holds messages (to age a backlog without timestamps or drain).
    nonempty_since: Option<f64>,
    /// Since when a backlog waits with this many consumers (the workers are saturated).
    saturated_since: Option<(f64, u64)>,
    /// The consumers of the last reading, and since when none consume though some did.
    consumers_before: u64,
    consumers_gone_since: Option<(f64, u64)>,
    /// Since when the queue counts consumers of which the listing shows none consuming.
    paused_since: Option<f64>,
}

impl ScalingPolicy {
    /// A policy with nothing learned yet.
    pub fn new(settings: ScalingSettings) -> Self {
        Self {
            settings,
            arrivals: Ewma::new(ARRIVAL_TIME_CONSTANT_S),
            replica_rate: Ewma::new(DRAIN_TIME_CONSTANT_S),
            lower_since: None,
            nonempty_since: None,
            saturated_since: None,
            consumers_before: 0,
            consumers_gone_since: None,
            paused_since: None,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &ScalingSettings {
        &self.settings
    }

    /// Takes new settings (the spec changed) and keeps what was learned.
    pub fn update_settings(&mut self, settings: ScalingSettings) {
        self.settings = settings;
    }

    /// The per-replica drain rate learned so far.
    pub fn replica_rate(&self) -> Option<f64> {
        self.replica_rate.value()
    }

    /// Decides the replica count at `now_s` (seconds on any monotonic clock) for a Deployment
    /// at `current` replicas, from `reading` (`None`: no reading could be taken).
    pub fn decide(
        &mut self,
        now_s: f64,
        current: u32,
        reading: Option<&OutputReading>,
    ) -> Decision {
        let Some(obs) = reading.map(Observed::of) else {
            // A gap never reads as "empty": hold, and restart any scale-down wait.
            self.lower_since = None;
            return Decision {
                current,
                desired: current,
                recommended: current,
                reason: format!("queue statistics unavailable: holding {current}"),
                signals: Signals::default(),
                metrics_missing: true,
            };
        };
        let signals = self.learn(now_s, &obs);
        self.consumers_gone_since = match (obs.consumers, self.consumers_gone_since) {
            (0, Some(gone)) => Some(gone),
            (0, None) if self.consumers_before > 0 => Some((now_s, self.consumers_before)),
            _ => None,
        };
        self.consumers_before = obs.consumers;
        self.paused_since = obs.paused.map(|_| self.paused_since.unwrap_or(now_s));
        let s = self.settings;
        // Every worker waits on the sink: more would wait too, fewer would drop what they
        // hold; scale for the backlog once they consume again. Or every worker stopped
        // consuming since an earlier reading: a sink that just went down (the statistics show
        // the held deliveries within their lag), or workers that just went (the statistics
        // then show nothing held); more workers for a backlog that grows because nobody
        // consumes would only wait too.
        let hold = if obs.sink_down {
            let consumers = match obs.paused {
                Some(paused) => format!("{paused} consumers paused"),
                None => format!("{} consumers", obs.consumers),
            };
            Some(format!(
                "sink down ({consumers}, {} held): holding {current}",
                obs.unacked
            ))
        } else if let Some((since, before)) = self
            .consumers_gone_since
            .filter(|(since, _)| now_s - since < STATS_LAG_S)
        {
            Some(format!(
                "no consumer for {:.0}s ({before} before): holding {current} until the statistics say why",
                now_s - since
            ))
        } else {
            // A quorum queue counts a paused worker as a consumer: consumers that the listing
            // does not show consuming have paused (the sample shows what they hold within its
            // lag), or are new (the listing shows them within a statistics interval).
            self.paused_since
                .zip(obs.paused)
                .filter(|(since, _)| now_s - since < STATS_LAG_S || !obs.unacked_known)
                .map(|(since, paused)| {
                    format!(
                        "{paused} consumers not consuming for {:.0}s: holding {current} until the statistics say why",
                        now_s - since
                    )
                })
        };
        if let Some(reason) = hold
            && current > 0
        {
            self.lower_since = None;
            return Decision {
                current,
                desired: current,
                recommended: current,
                reason,
                signals,
                metrics_missing: obs.rates.is_none(),
            };
        }
        let busy = obs.ready > 0 || obs.unacked > 0;
        let idle = !busy
            && obs
                .rates
                .is_some_and(|(publish, ack)| publish < IDLE_RATE && ack < IDLE_RATE);
        let (raw, term) = if idle {
            (0, Term::Idle)
        } else {
            self.formula(&signals)
        };
        let mut recommended = raw.clamp(s.min_replicas, s.max_replicas);
        if busy || !idle {
            // Work waiting, in flight or arriving: never zero, whatever minReplicas says.
            recommended = recommended.max(1).min(s.max_replicas.max(1));
        }
        let clamp_note = if raw > s.max_replicas {
            format!(" (capped at maxReplicas {})", s.max_replicas)
        } else if raw < recommended && recommended == s.min_replicas {
            format!(" (minReplicas {})", s.min_replicas)
        } else {
            String::new()
        };
        let metrics_missing = obs.rates.is_none();
        let decision = |desired: u32, reason: String| Decision {
            current,
            desired,
            recommended,
            reason,
            signals,
            metrics_missing,
        };

        if recommended > current {
            self.lower_since = None;
            let why = if current == 0 {
                format!("{} messages waiting", obs.ready + obs.unacked)
            } else {
                term.describe(&signals, &s)
            };
            return decision(
                recommended,
                format!("{why}: {current} → {recommended}{clamp_note}"),
            );
        }
        if recommended == current || metrics_missing {
            self.lower_since = None;
            let reason = if metrics_missing && recommended < current {
                format!("rates unavailable: holding {current}")
            } else {
                format!("{}: steady at {current}", term.describe(&signals, &s))
            };
            return decision(current, reason);
        }

        let delay = s.scale_down_delay.as_secs_f64();
        let (since, highest) = match self.lower_since {
            Some((since, highest)) => (since, highest.max(recommended)),
            None => (now_s, recommended),
        };
        if now_s - since < delay {
            self.lower_since = Some((since, highest));
            return decision(
                current,
                format!(
                    "wants {recommended}, waiting {}s of {} before scaling down: holding {current}",
                    secs(delay - (now_s - since)),
                    s.scale_down_delay
                ),
            );
        }
        self.lower_since = None;
        let reason = if highest == 0 {
            format!("empty and idle for {}: {current} → 0", s.scale_down_delay)
        } else {
            format!(
                "below {current} for {} (backlog {}, arrivals {}/s): {current} → {highest}",
                s.scale_down_delay,
                signals.backlog,
                rate(signals.arrival_rate)
            )
        };
        decision(highest, reason)
    }

    /// Updates the learned rates from `obs` and returns the figures the formula uses.
    fn learn(&mut self, now_s: f64, obs: &Observed) -> Signals {
        let backlog = obs.ready;
        if backlog == 0 {
            self.nonempty_since = None;
        } else if self.nonempty_since.is_none() {
            self.nonempty_since = Some(now_s);
        }
        self.saturated_since = match self.saturated_since {
            _ if backlog == 0 || obs.consumers == 0 => None,
            Some((since, consumers)) if consumers == obs.consumers => Some((since, consumers)),
            _ => Some((now_s, obs.consumers)),
        };
        let mut arrival_rate = self.arrivals.value().unwrap_or(0.0);
        if let Some((publish, ack)) = obs.rates {
            self.arrivals.observe(publish, now_s);
            // Fast attack, slow release: a rising rate counts at once, a falling one decays.
            arrival_rate = publish.max(self.arrivals.value().unwrap_or(publish));
            // Workers saturated by a backlog, with the same count for a whole statistics
            // interval: their ack rate is their capacity.
            if let Some((since, _)) = self.saturated_since
                && now_s - since >= RATE_SETTLE_S
                && ack > 0.0
            {
                self.replica_rate.observe(ack / obs.consumers as f64, now_s);
            }
        }
        let drain = obs
            .rates
            .map(|(_, ack)| ack)
            .filter(|a| *a > 0.0)
            .or_else(|| {
                self.replica_rate
                    .value()
                    .map(|mu| mu * obs.consumers as f64)
            })
            .filter(|d| *d > 0.0);
        let age = match (obs.age, backlog, drain) {
            (Some(age), _, _) => age,
            (None, 0, _) => Age::measured(0.0),
            // Little's law: what waits drains at the ack rate.
            (None, b, Some(d)) => Age::estimated(b as f64 / d),
            // Nothing drains: the backlog is at least as old as our first sight of it.
            (None, _, None) => Age::estimated(self.nonempty_since.map_or(0.0, |t| now_s - t)),
        };
        Signals {
            backlog,
            age_s: age.seconds,
            age_estimated: age.estimated,
            arrival_rate,
            replica_rate: self.replica_rate.value(),
        }
    }

    /// The raw replica count of the formula, and which term set it.
    fn formula(&self, sig: &Signals) -> (u32, Term) {
        let s = &self.settings;
        let by_backlog =
            ceil_u32(sig.backlog as f64 / f64::from(s.target_backlog_per_replica.max(1)));
        let Some(mu) = sig.replica_rate.filter(|mu| *mu > 0.0) else {
            return (by_backlog, Term::Backlog);
        };
        let floor = s.poll_interval.as_secs_f64().max(MIN_DRAIN_BUDGET_S);
        let budget = (s.max_message_age.as_secs_f64() - sig.age_s).max(floor);
        let by_rate = ceil_u32((sig.arrival_rate + sig.backlog as f64 / budget) / mu);
        if by_backlog >= by_rate {
            (by_backlog, Term::Backlog)
        } else if sig.age_s > s.max_message_age.as_secs_f64() {
            (by_rate, Term::Age)
        } else {
            (by_rate, Term::Rate)
        }
    }
}

/// The term of the formula that set the count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Term {
    Backlog,
    Age,
    Rate,
    Idle,
}

impl Term {
    fn describe(self, sig: &Signals, s: &ScalingSettings) -> String {
        match self {
            Self::Idle => "empty and idle".to_owned(),
            Self::Backlog => format!(
                "backlog {} at {}/replica",
                sig.backlog, s.target_backlog_per_replica
            ),
            Self::Age => format!("age {} > {}", age(sig), s.max_message_age),
            Self::Rate => {
                let mu = rate(sig.replica_rate.unwrap_or_default());
                if sig.backlog > 0 {
                    format!(
                        "arrivals {}/s + backlog {} (age {} of {}) at {mu}/s per replica",
                        rate(sig.arrival_rate),
                        sig.backlog,
                        age(sig),
                        s.max_message_age
                    )
                } else {
                    format!(
                        "arrivals {}/s at {mu}/s per replica",
                        rate(sig.arrival_rate)
                    )
                }
            }
        }
    }
}

/// The age as a reason says it: `41s (measured)`, `~12s (estimated)`.
fn age(sig: &Signals) -> String {
    if sig.age_estimated {
        format!("~{}s (estimated)", secs(sig.age_s))
    } else {
        format!("{}s (measured)", secs(sig.age_s))
    }
}

fn ceil_u32(x: f64) -> u32 {
    if x.is_finite() && x > 0.0 {
        x.ceil().min(f64::from(u32::MAX)) as u32
    } else {
        0
    }
}

/// Seconds for people: whole above 10 s, one decimal below.
fn secs(s: f64) -> String {
    if s >= 10.0 {
        format!("{}", s.round() as u64)
    } else {
        format!("{:.1}", s.max(0.0))
    }
}

fn rate(r: f64) -> String {
    if r >= 10.0 {
        format!("{}", r.round() as u64)
    } else {
        format!("{r:.1}")
    }
}

#[cfg(test)]
mod tests {
    use logstream_api::duration::Duration;

    use super::*;

    fn settings(min: u32, max: u32) -> ScalingSettings {
        ScalingSettings {
            min_replicas: min,
            max_replicas: max,
            target_backlog_per_replica: 1_000,
            max_message_age: Duration::from_secs(30),
            scale_down_delay: Duration::from_secs(60),
            poll_interval: Duration::from_secs(2),
        }
    }

    fn reading(ready: u64, consumers: u64, publish: f64, ack: f64) -> OutputReading {
        OutputReading {
            ready: Some(ready),
            unacked: Some(ready.min(consumers * 200)),
            consumers: Some(consumers),
            publish_rate: Some(publish),
            ack_rate: Some(ack),
            ..OutputReading::default()
        }
    }

    /// A policy that has learned μ = 100/s per replica from saturated workers.
    fn learned(settings: ScalingSettings) -> ScalingPolicy {
        let mut p = ScalingPolicy::new(settings);
        let busy = reading(500, 2, 200.0, 200.0);
        p.decide(0.0, 2, Some(&busy));
        p.decide(6.0, 2, Some(&busy));
        assert_eq!(p.replica_rate(), Some(100.0));
        p
    }

    #[test]
    fn a_large_backlog_scales_up_in_one_step() {
        let mut p = ScalingPolicy::new(settings(1, 20));
        let d = p.decide(0.0, 1, Some(&reading(12_000, 1, 50.0, 50.0)));
        assert_eq!(d.desired, 12, "{d:?}");
        assert_eq!(d.reason, "backlog 12000 at 1000/replica: 1 → 12");
        assert!(d.is_change() && !d.metrics_missing);
    }

    #[test]
    fn an_old_backlog_scales_on_age_with_the_learned_rate() {
        let mut p = learned(settings(1, 20));
        let mut old = reading(900, 3, 300.0, 300.0);
        old.oldest_age = Some(logstream_broker::Age::measured(41.0));
        let d = p.decide(10.0, 3, Some(&old));
        // (λ 300 + B 900 / max(30 - 41, 2)) / μ 100 = 7.5 → 8
        assert_eq!(d.desired, 8, "{d:?}");
        assert_eq!(d.reason, "age 41s (measured) > 30s: 3 → 8");
        assert_eq!(d.signals.age_s, 41.0);
        assert!(!d.signals.age_estimated);

        old.oldest_age = Some(logstream_broker::Age::estimated(41.0));
        let d = p.decide(12.0, 3, Some(&old));
        assert_eq!(d.reason, "age ~41s (estimated) > 30s: 3 → 8");
        assert!(d.signals.age_estimated);
    }

    fn paused(ready: u64, held: u64) -> OutputReading {
        OutputReading {
            ready: Some(ready),
            unacked: Some(held),
            consumers: Some(0),
            sampled_consumers: Some(0),
            publish_rate: Some(300.0),
            ack_rate: Some(0.0),
            ..OutputReading::default()
        }
    }

    #[test]
    fn a_sink_that_is_down_holds_the_count_and_says_so() {
        let mut p = learned(settings(1, 20));
        // The backlog grows behind workers that all paused: no scaling up into a dead sink.
        let d = p.decide(10.0, 2, Some(&paused(50_000, 200)));
        assert_eq!((d.desired, d.recommended), (2, 2), "{d:?}");
        assert_eq!(d.reason, "sink down (0 consumers, 200 held): holding 2");
        assert!(!d.is_change() && !d.metrics_missing);
        // Nor down, however long it lasts.
        let d = p.decide(200.0, 2, Some(&paused(90_000, 200)));
        assert_eq!(d.desired, 2, "{d:?}");

        // The sink answers: the workers consume again, and the backlog (90,000 waiting, at the
        // 200/s two replicas drain: ~450 s old) sizes the deployment.
        let back = OutputReading {
            consumers: Some(2),
            ..reading(90_000, 2, 300.0, 0.0)
        };
        let d = p.decide(202.0, 2, Some(&back));
        assert_eq!(d.desired, 20, "{d:?}");
        assert_eq!(
            d.reason,
            "age ~450s (estimated) > 30s: 2 → 20 (capped at maxReplicas 20)"
        );
    }

    #[test]
    fn paused_workers_a_quorum_queue_still_counts_hold_the_count_too() {
        let mut p = learned(settings(1, 20));
        // Two paused workers holding 400: the queue counts them, the consumer listing does not.
        let paused = OutputReading {
            consumers: Some(2),
            sampled_consumers: Some(2),
            consuming: Some(0),
            ..paused(50_000, 400)
        };
        let d = p.decide(10.0, 2, Some(&paused));
        assert_eq!((d.desired, d.recommended), (2, 2), "{d:?}");
        assert_eq!(
            d.reason,
            "sink down (2 consumers paused, 400 held): holding 2"
        );
        // One consumes again: the backlog decides.
        let back = OutputReading {
            consuming: Some(1),
            ..paused
        };
        let d = p.decide(12.0, 2, Some(&back));
        assert!(d.desired > 2, "{d:?}");
    }

    #[test]
    fn a_quorum_queue_whose_workers_just_paused_holds_the_count_before_its_sample_shows_it() {
        let mut p = learned(settings(1, 20));
        let idle = OutputReading {
            consumers: Some(1),
            sampled_consumers: Some(1),
            consuming: Some(1),
            ..reading(0, 1, 0.0, 0.0)
        };
        assert_eq!(p.decide(10.0, 1, Some(&idle)).desired, 1);
        // The sink went down: the worker cancelled its consumer (the listing no longer shows
        // it, the queue still counts it) and the backlog grows, while the sample, taken before,
        // still shows nothing held.
        let just_paused = OutputReading {
            unacked: Some(0),
            consuming: Some(0),
            ..reading(2_000, 1, 200.0, 0.0)
        };
        let d = p.decide(11.0, 1, Some(&just_paused));
        assert_eq!(d.desired, 1, "{d:?}");
        assert_eq!(
            d.reason,
            "1 consumers not consuming for 0s: holding 1 until the statistics say why"
        );
        // A fresh quorum queue's sample may report nothing yet: held on until it does.
        let unsampled = OutputReading {
            unacked: None,
            ..just_paused
        };
        let d = p.decide(25.0, 1, Some(&unsampled));
        assert_eq!(
            d.reason,
            "1 consumers not consuming for 14s: holding 1 until the statistics say why"
        );
        // The sample shows the held deliveries: the sink is down.
        let paused = OutputReading {
            unacked: Some(12),
            consuming: Some(0),
            ..reading(4_000, 1, 200.0, 0.0)
        };
        let d = p.decide(26.0, 1, Some(&paused));
        assert_eq!(
            d.reason,
            "sink down (1 consumers paused, 12 held): holding 1"
        );
    }

    #[test]
    fn a_new_quorum_consumer_missing_from_the_listing_delays_scaling_by_one_statistics_lag() {
        let mut p = learned(settings(1, 20));
        // A new worker consumes (its prefetch not yet in the sample), the listing does not
        // show it yet.
        let new = OutputReading {
            unacked: Some(0),
            consuming: Some(0),
            ..reading(20_000, 1, 300.0, 0.0)
        };
        assert_eq!(p.decide(10.0, 1, Some(&new)).desired, 1);
        // Still not listed a statistics lag later, nothing held: the backlog decides.
        let d = p.decide(10.0 + STATS_LAG_S, 1, Some(&new));
        assert!(d.desired > 1, "{d:?}");
        // Listed: the backlog decides at once.
        let mut p = learned(settings(1, 20));
        let listed = OutputReading {
            consuming: Some(1),
            ..new
        };
        assert!(p.decide(10.0, 1, Some(&listed)).desired > 1);
    }

    #[test]
    fn workers_that_just_stopped_consuming_hold_the_count_until_the_sample_says_why() {
        let mut p = ScalingPolicy::new(settings(1, 10));
        let consuming = OutputReading {
            ready: Some(100),
            unacked: Some(20),
            consumers: Some(2),
            sampled_consumers: Some(2),
            publish_rate: Some(10.0),
            ack_rate: Some(10.0),
            ..OutputReading::default()
        };
        assert_eq!(p.decide(0.0, 2, Some(&consuming)).desired, 2);
        // The workers paused (or went): nobody consumes, the backlog grows, and the sample
        // does not show why yet.
        let gone = OutputReading {
            ready: Some(5_000),
            consumers: Some(0),
            ..consuming
        };
        let d = p.decide(1.0, 2, Some(&gone));
        assert_eq!(d.desired, 2, "{d:?}");
        assert_eq!(
            d.reason,
            "no consumer for 0s (2 before): holding 2 until the statistics say why"
        );
        assert_eq!(p.decide(9.0, 2, Some(&gone)).desired, 2);
        // A statistics lag later, nothing held: they went; the backlog decides again.
        let gone_for_good = OutputReading {
            unacked: Some(0),
            sampled_consumers: Some(0),
            ..gone
        };
        let d = p.decide(12.0, 2, Some(&gone_for_good));
        assert_eq!(d.desired, 5, "{d:?}");
        // Scaled to zero, there is nothing to hold.
        let mut p = ScalingPolicy::new(settings(0, 10));
        p.decide(0.0, 1, Some(&consuming));
        assert!(p.decide(1.0, 0, Some(&gone)).desired > 0);
    }

    #[test]
    fn arrivals_alone_size_the_deployment_once_the_rate_is_known() {
        let mut p = learned(settings(1, 20));
        let d = p.decide(10.0, 2, Some(&reading(0, 2, 450.0, 450.0)));
        assert_eq!(d.desired, 5, "{d:?}");
        assert_eq!(d.reason, "arrivals 450/s at 100/s per replica: 2 → 5");
    }

    #[test]
    fn scale_down_waits_for_the_delay_and_keeps_the_highest_recent_count() {
        let mut p = learned(settings(1, 20));
        let current = 8;
        let d = p.decide(10.0, current, Some(&reading(0, 8, 150.0, 150.0)));
        assert_eq!((d.desired, d.recommended), (8, 2));
        assert_eq!(
            d.reason,
            "wants 2, waiting 60s of 1m before scaling down: holding 8"
        );
        let d = p.decide(40.0, current, Some(&reading(0, 8, 250.0, 250.0)));
        assert_eq!((d.desired, d.recommended), (8, 3), "still waiting: {d:?}");
        let d = p.decide(69.0, current, Some(&reading(0, 8, 150.0, 150.0)));
        assert_eq!(d.desired, 8, "59 s is not 60 s");
        let d = p.decide(70.0, current, Some(&reading(0, 8, 150.0, 150.0)));
        assert_eq!(
            d.desired, 3,
            "the highest count asked for during the wait: {d:?}"
        );
        // The arrival rate decays from the 250/s seen meanwhile (slow release).
        assert_eq!(
            d.reason,
            "below 8 for 1m (backlog 0, arrivals 155/s): 8 → 3"
        );
    }

    #[test]
    fn a_higher_reading_during_the_wait_restarts_it() {
        let mut p = learned(settings(1, 20));
        p.decide(10.0, 6, Some(&reading(0, 6, 100.0, 100.0)));
        let d = p.decide(30.0, 6, Some(&reading(0, 6, 600.0, 600.0)));
        assert_eq!(d.desired, 6);
        let d = p.decide(75.0, 6, Some(&reading(0, 6, 100.0, 100.0)));
        assert_eq!(d.desired, 6, "the wait restarted at t=75: {d:?}");
    }

    #[test]
    fn scales_to_zero_only_after_staying_empty_and_idle_then_wakes_at_once() {
        let mut p = ScalingPolicy::new(settings(0, 5));
        let idle = reading(0, 1, 0.0, 0.0);
        let d = p.decide(0.0, 1, Some(&idle));
        assert_eq!((d.desired, d.recommended), (1, 0));
        // A message in flight interrupts the idle spell.
        let in_flight = OutputReading {
            unacked: Some(1),
            ..idle
        };
        assert_eq!(p.decide(30.0, 1, Some(&in_flight)).recommended, 1);
        assert_eq!(p.decide(60.0, 1, Some(&idle)).desired, 1);
        let d = p.decide(120.0, 1, Some(&idle));
        assert_eq!(d.desired, 0, "{d:?}");
        assert_eq!(d.reason, "empty and idle for 1m: 1 → 0");

        let d = p.decide(121.0, 0, Some(&reading(3, 0, 1.5, 0.0)));
        assert_eq!(d.desired, 1);
        assert_eq!(d.reason, "3 messages waiting: 0 → 1");
    }

    #[test]
    fn publishing_into_an_empty_queue_is_not_idle() {
        let mut p = ScalingPolicy::new(settings(0, 5));
        let d = p.decide(0.0, 1, Some(&reading(0, 1, 0.5, 0.5)));
        assert_eq!(d.recommended, 1, "{d:?}");
    }

    #[test]
    fn a_missing_reading_holds_the_count_and_is_never_read_as_empty() {
        let mut p = ScalingPolicy::new(settings(0, 5));
        p.decide(0.0, 3, Some(&reading(0, 3, 0.0, 0.0)));
        let d = p.decide(30.0, 3, None);
        assert_eq!(d.desired, 3);
        assert!(d.metrics_missing);
        assert_eq!(d.reason, "queue statistics unavailable: holding 3");
        // The gap restarted the scale-down wait.
        assert_eq!(p.decide(61.0, 3, Some(&reading(0, 3, 0.0, 0.0))).desired, 3);

        // Depth without rates (management API down): up is fine, down is not.
        let mut p = ScalingPolicy::new(settings(0, 10));
        let no_rates = OutputReading {
            publish_rate: None,
            ack_rate: None,
            ..reading(5_000, 2, 0.0, 0.0)
        };
        let d = p.decide(0.0, 2, Some(&no_rates));
        assert_eq!(d.desired, 5);
        assert!(d.metrics_missing);
        let empty_no_rates = OutputReading {
            publish_rate: None,
            ack_rate: None,
            ..reading(0, 5, 0.0, 0.0)
        };
        let d = p.decide(100.0, 5, Some(&empty_no_rates));
        assert_eq!(d.desired, 5);
        assert_eq!(d.reason, "rates unavailable: holding 5");
    }

    #[test]
    fn counts_are_clamped_to_min_and_max_and_say_so() {
        let mut p = ScalingPolicy::new(settings(2, 10));
        let d = p.decide(0.0, 2, Some(&reading(50_000, 2, 10.0, 10.0)));
        assert_eq!(d.desired, 10);
        assert_eq!(
            d.reason,
            "backlog 50000 at 1000/replica: 2 → 10 (capped at maxReplicas 10)"
        );
        let mut p = ScalingPolicy::new(settings(3, 10));
        let d = p.decide(0.0, 1, Some(&reading(10, 1, 10.0, 10.0)));
        assert_eq!(d.desired, 3);
        assert_eq!(
            d.reason,
            "backlog 10 at 1000/replica: 1 → 3 (minReplicas 3)"
        );
    }

    #[test]
    fn drain_rate_is_learned_only_from_saturated_steady_workers() {
        let mut p = ScalingPolicy::new(settings(1, 10));
        // Not busy: the ack rate is the arrival rate, not the capacity.
        p.decide(0.0, 2, Some(&reading(0, 2, 50.0, 50.0)));
        p.decide(10.0, 2, Some(&reading(0, 2, 50.0, 50.0)));
        assert_eq!(p.replica_rate(), None);
        // Busy, but the consumer count just changed: not yet.
        p.decide(12.0, 2, Some(&reading(400, 2, 500.0, 300.0)));
        p.decide(14.0, 3, Some(&reading(400, 3, 500.0, 300.0)));
        p.decide(16.0, 3, Some(&reading(400, 3, 500.0, 300.0)));
        assert_eq!(p.replica_rate(), None);
        p.decide(19.0, 3, Some(&reading(400, 3, 500.0, 330.0)));
        assert_eq!(p.replica_rate(), Some(110.0));
    }

    #[test]
    fn without_an_age_in_the_reading_it_is_estimated_from_backlog_and_drain() {
        let mut p = ScalingPolicy::new(settings(1, 10));
        let d = p.decide(0.0, 2, Some(&reading(600, 2, 100.0, 200.0)));
        assert_eq!(d.signals.age_s, 3.0, "600 waiting / 200 per second");
        assert!(d.signals.age_estimated);
        // Nothing drains: the backlog is as old as our first sight of it.
        let stuck = reading(600, 0, 0.0, 0.0);
        p.decide(10.0, 0, Some(&stuck));
        assert_eq!(p.decide(25.0, 0, Some(&stuck)).signals.age_s, 25.0);
    }
}
