//! A deterministic, discrete-time queue simulator that replays arrival traces through
//! autoscaling policies: LogStream's own [`ScalingPolicy`], a model of KEDA's RabbitMQ scaler
//! driving a Kubernetes HPA with its defaults, and an oracle that knows the future.
//!
//! The queue is a fluid FIFO: each step adds `λ(t)·dt` messages stamped with their arrival
//! time and ready workers remove `replicas·μ·dt` from the head. Pods become ready `startup_s`
//! after they are asked for. Every policy sees the broker as it really would:
//! - the management API's figures (rates, consumers, head timestamp, KEDA's queue length) are
//!   snapshots refreshed every `stats_refresh_s`;
//! - LogStream also reads the depth by AMQP passive declare at each poll, which is real time;
//! - polls and HPA syncs start half an interval into the run (the expected phase of a timer
//!   that is not aligned with the load).

use std::collections::VecDeque;

use logstream_api::{duration::Duration, resolved::ScalingSettings};

use crate::models::{KedaHpaModel, LogStreamModel, OracleModel};

/// The world's parameters, shared by every policy of a run.
#[derive(Clone, Copy, Debug)]
pub struct SimConfig {
    /// Step length, seconds.
    pub dt_s: f64,
    /// Messages one ready replica processes per second (μ).
    pub replica_rate: f64,
    /// Seconds from asking for a pod to its consuming.
    pub startup_s: f64,
    /// Refresh period of the management API's statistics.
    pub stats_refresh_s: f64,
    /// Prefetch of each worker: that many messages per replica are unacked, not ready.
    pub prefetch: f64,
    /// The output's scaling settings (min, max, target backlog, max age, delay, poll).
    pub scaling: ScalingSettings,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            dt_s: 0.25,
            replica_rate: 400.0,
            startup_s: 5.0,
            stats_refresh_s: 5.0,
            prefetch: 200.0,
            scaling: ScalingSettings {
                min_replicas: 1,
                max_replicas: 30,
                target_backlog_per_replica: 1_000,
                max_message_age: Duration::from_secs(30),
                scale_down_delay: Duration::from_secs(60),
                poll_interval: Duration::from_secs(2),
            },
        }
    }
}

/// An arrival pattern.
pub struct Trace {
    /// Short name.
    pub name: &'static str,
    /// What it models.
    pub description: &'static str,
    /// Length of the run, seconds.
    pub duration_s: f64,
    /// Messages waiting at time 0.
    pub initial_backlog: f64,
    /// When the interesting event starts (drain time is measured from here).
    pub event_at_s: f64,
    /// Arrival rate at time t, messages per second.
    pub arrivals: fn(f64) -> f64,
}

/// The traces of the benchmark.
pub fn traces() -> Vec<Trace> {
    vec![
        Trace {
            name: "viral-burst",
            description: "50/s, then 100× (5000/s) within 60 s for 10 min, then back",
            duration_s: 1_200.0,
            initial_backlog: 0.0,
            event_at_s: 120.0,
            arrivals: viral_burst,
        },
        Trace {
            name: "backlog-100k",
            description: "100,000 messages waiting at start, 100/s arriving",
            duration_s: 600.0,
            initial_backlog: 100_000.0,
            event_at_s: 0.0,
            arrivals: |_| 100.0,
        },
        Trace {
            name: "daily-ramp",
            description: "200/s at night to 3000/s at noon, one day",
            duration_s: 86_400.0,
            initial_backlog: 0.0,
            event_at_s: 0.0,
            arrivals: |t| {
                200.0 + 2_800.0 * (1.0 - (2.0 * std::f64::consts::PI * t / 86_400.0).cos()) / 2.0
            },
        },
        Trace {
            name: "flapping",
            description: "400/s and 4000/s alternating every 45 s for 30 min",
            duration_s: 1_800.0,
            initial_backlog: 0.0,
            event_at_s: 0.0,
            arrivals: |t| {
                if ((t / 45.0) as u64).is_multiple_of(2) {
                    400.0
                } else {
                    4_000.0
                }
            },
        },
    ]
}

fn viral_burst(t: f64) -> f64 {
    let (low, high) = (50.0, 5_000.0);
    match t {
        t if t < 120.0 => low,
        t if t < 180.0 => low + (high - low) * (t - 120.0) / 60.0,
        t if t < 780.0 => high,
        t if t < 840.0 => high - (high - low) * (t - 780.0) / 60.0,
        _ => low,
    }
}

/// What the management API last reported.
#[derive(Clone, Copy, Debug, Default)]
pub struct StatsSnapshot {
    /// Ready messages.
    pub ready: f64,
    /// Unacked messages.
    pub unacked: f64,
    /// Consumers (ready replicas).
    pub consumers: u32,
    /// Publishes per second over the last refresh period.
    pub publish_rate: f64,
    /// Acks per second over the last refresh period.
    pub ack_rate: f64,
    /// Arrival time of the head message, if any.
    pub head_arrival_s: Option<f64>,
}

/// What a policy may look at on a step.
pub struct World<'a> {
    /// Now.
    pub t: f64,
    /// Ready messages right now (what a passive declare returns).
    pub ready_now: f64,
    /// The last management API snapshot.
    pub stats: &'a StatsSnapshot,
    /// Replicas currently asked for.
    pub requested: u32,
    /// Messages in the queue right now (ready + unacked).
    pub queued_now: f64,
    /// The trace (only the oracle reads the future).
    pub trace: &'a Trace,
    /// The simulation parameters.
    pub config: &'a SimConfig,
}

/// A policy under test.
pub trait Autoscaler {
    /// Its name in the results.
    fn name(&self) -> &'static str;
    /// Called every step; returns the replica count to ask for when it changes.
    fn tick(&mut self, world: &World<'_>) -> Option<u32>;
}

/// What one policy achieved on one trace.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceResult {
    /// Policy name.
    pub policy: &'static str,
    /// Trace name.
    pub trace: &'static str,
    /// Highest age of the oldest waiting message, seconds.
    pub max_age_s: f64,
    /// Seconds from the trace's event until the backlog last exceeded one second of arrivals
    /// (at least 100 messages).
    pub drain_s: f64,
    /// Integral of the replicas asked for, including pods still starting.
    pub replica_seconds: f64,
    /// Times the replica count changed.
    pub scale_changes: u32,
    /// Most replicas asked for at once.
    pub peak_replicas: u32,
}

/// Replays `trace` through `policy`.
pub fn run(trace: &Trace, config: &SimConfig, policy: &mut dyn Autoscaler) -> TraceResult {
    let dt = config.dt_s;
    let mut queue: VecDeque<(f64, f64)> = VecDeque::new();
    if trace.initial_backlog > 0.0 {
        queue.push_back((0.0, trace.initial_backlog));
    }
    let mut queued = trace.initial_backlog;
    let initial = config.scaling.min_replicas.max(1);
    let mut requested = initial;
    // Ready times of pods asked for and not ready yet; pods ready so far.
    let mut starting: VecDeque<f64> = VecDeque::new();
    let mut ready_pods = initial;
    let mut stats = StatsSnapshot::default();
    let (mut published_since, mut acked_since, mut next_stats) = (0.0, 0.0, 0.0);
    let mut outcome = TraceResult {
        policy: policy.name(),
        trace: trace.name,
        max_age_s: 0.0,
        drain_s: 0.0,
        replica_seconds: 0.0,
        scale_changes: 0,
        peak_replicas: requested,
    };

    let steps = (trace.duration_s / dt).round() as u64;
    for step in 0..steps {
        let t = step as f64 * dt;
        while starting.front().is_some_and(|ready_at| *ready_at <= t) {
            starting.pop_front();
            ready_pods += 1;
        }

        // Arrivals, then service from the head of the queue.
        let arrived = (trace.arrivals)(t) * dt;
        if arrived > 0.0 {
            queue.push_back((t, arrived));
            queued += arrived;
            published_since += arrived;
        }
        let mut capacity = f64::from(ready_pods) * config.replica_rate * dt;
        while capacity > 0.0 {
            let Some(head) = queue.front_mut() else { break };
            let served = head.1.min(capacity);
            head.1 -= served;
            capacity -= served;
            queued -= served;
            acked_since += served;
            if head.1 <= 1e-9 {
                queue.pop_front();
            }
        }
        queued = queued.max(0.0);
        let unacked = queued.min(f64::from(ready_pods) * config.prefetch);

        if t >= next_stats {
            let period = config.stats_refresh_s;
            stats = StatsSnapshot {
                ready: queued - unacked,
                unacked,
                consumers: ready_pods,
                publish_rate: if t > 0.0 {
                    published_since / period
                } else {
                    0.0
                },
                ack_rate: if t > 0.0 { acked_since / period } else { 0.0 },
                head_arrival_s: queue.front().map(|h| h.0),
            };
            published_since = 0.0;
            acked_since = 0.0;
            next_stats = t + period;
        }

        let age = queue.front().map_or(0.0, |h| t - h.0);
        outcome.max_age_s = outcome.max_age_s.max(age);
        let threshold = ((trace.arrivals)(t) * 1.0).max(100.0);
        if queued > threshold && t >= trace.event_at_s {
            outcome.drain_s = t + dt - trace.event_at_s;
        }

        let world = World {
            t,
            ready_now: queued - unacked,
            stats: &stats,
            requested,
            queued_now: queued,
            trace,
            config,
        };
        if let Some(want) = policy.tick(&world)
            && want != requested
        {
            outcome.scale_changes += 1;
            if want > requested {
                for _ in requested..want {
                    starting.push_back(t + config.startup_s);
                }
            } else {
                // Pods still starting go first, then ready ones.
                let mut remove = requested - want;
                while remove > 0 && starting.pop_back().is_some() {
                    remove -= 1;
                }
                ready_pods -= remove.min(ready_pods);
            }
            requested = want;
            outcome.peak_replicas = outcome.peak_replicas.max(want);
        }
        outcome.replica_seconds += f64::from(requested) * dt;
    }
    outcome
}

/// Runs every trace through the three policies.
pub fn benchmark(config: &SimConfig) -> Vec<TraceResult> {
    let mut results = Vec::new();
    for trace in traces() {
        results.push(run(&trace, config, &mut LogStreamModel::new(config)));
        results.push(run(&trace, config, &mut KedaHpaModel::new()));
        results.push(run(&trace, config, &mut OracleModel));
    }
    results
}

/// The results as a Markdown table.
pub fn markdown(config: &SimConfig, results: &[TraceResult]) -> String {
    let s = &config.scaling;
    let mut out = format!(
        "Simulated with μ = {}/s per replica, pod start {} s, management statistics every {} s, \
         step {} s; LogStream and KEDA both at min {} / max {} replicas, {} waiting messages per \
         replica; LogStream with maxMessageAge {}, scaleDownDelay {}, pollInterval {}.\n\n",
        config.replica_rate,
        config.startup_s,
        config.stats_refresh_s,
        config.dt_s,
        s.min_replicas,
        s.max_replicas,
        s.target_backlog_per_replica,
        s.max_message_age,
        s.scale_down_delay,
        s.poll_interval,
    );
    out.push_str("| trace | policy | max oldest age (s) | drain time (s) | replica-seconds | scale changes | peak replicas |\n");
    out.push_str("| --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
    for r in results {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.0} | {} | {} |\n",
            r.trace,
            r.policy,
            r.max_age_s,
            r.drain_s,
            r.replica_seconds,
            r.scale_changes,
            r.peak_replicas
        ));
    }
    out.push_str("\nTraces:\n");
    for t in traces() {
        out.push_str(&format!("- `{}`: {}\n", t.name, t.description));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome<'a>(results: &'a [TraceResult], trace: &str, policy: &str) -> &'a TraceResult {
        results
            .iter()
            .find(|r| r.trace == trace && r.policy == policy)
            .unwrap_or_else(|| panic!("no result for {policy} on {trace}"))
    }

    #[test]
    fn logstream_drains_the_backlog_near_the_oracle_and_twice_as_fast_as_keda() {
        let config = SimConfig::default();
        let results = benchmark(&config);
        let ours = outcome(&results, "backlog-100k", "LogStream").drain_s;
        let oracle = outcome(&results, "backlog-100k", "oracle").drain_s;
        let keda = outcome(&results, "backlog-100k", "KEDA+HPA").drain_s;
        assert!(
            ours <= 1.25 * oracle,
            "LogStream {ours}s vs oracle {oracle}s"
        );
        assert!(2.0 * ours <= keda, "LogStream {ours}s vs KEDA+HPA {keda}s");
    }

    #[test]
    fn logstream_spends_at_most_a_fifth_more_replica_time_than_the_oracle_on_the_viral_burst() {
        let config = SimConfig::default();
        let results = benchmark(&config);
        let ours = outcome(&results, "viral-burst", "LogStream");
        let oracle = outcome(&results, "viral-burst", "oracle");
        assert!(
            ours.replica_seconds <= 1.2 * oracle.replica_seconds,
            "LogStream {} vs oracle {} replica-seconds",
            ours.replica_seconds,
            oracle.replica_seconds
        );
        let keda = outcome(&results, "viral-burst", "KEDA+HPA");
        assert!(ours.max_age_s < keda.max_age_s, "{ours:?} vs {keda:?}");
    }

    #[test]
    fn the_simulation_is_deterministic() {
        let config = SimConfig::default();
        assert_eq!(benchmark(&config), benchmark(&config));
    }

    #[test]
    fn a_fixed_fleet_drains_a_backlog_at_the_rate_of_its_replicas() {
        struct Fixed;
        impl Autoscaler for Fixed {
            fn name(&self) -> &'static str {
                "fixed"
            }
            fn tick(&mut self, _: &World<'_>) -> Option<u32> {
                None
            }
        }
        let trace = Trace {
            name: "t",
            description: "",
            duration_s: 100.0,
            initial_backlog: 4_000.0,
            event_at_s: 0.0,
            arrivals: |_| 0.0,
        };
        let config = SimConfig::default();
        let r = run(&trace, &config, &mut Fixed);
        // One replica at 400/s takes 10 s, i.e. 40 steps of 0.25 s: the backlog last exceeds
        // 100 messages after step 38, and the head is 9.5 s old when the last step starts.
        assert!((r.drain_s - 9.5).abs() < 1e-9, "{r:?}");
        assert!((r.max_age_s - 9.5).abs() < 1e-9, "{r:?}");
        assert_eq!(r.replica_seconds, 100.0);
    }
}
