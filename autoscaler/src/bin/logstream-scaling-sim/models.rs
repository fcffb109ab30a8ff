//! The three autoscalers the simulator compares: LogStream's own policy, a model of KEDA's
//! RabbitMQ scaler driving a Kubernetes HPA, and an oracle that knows the future.

use std::collections::VecDeque;

use logstream_autoscaler::policy::ScalingPolicy;
use logstream_broker::{Age, OutputReading};

use crate::simulate::{Autoscaler, SimConfig, World};

/// LogStream: its own [`ScalingPolicy`], polled every `pollInterval`, with real-time depth
/// (passive declare) and the management API's rates, consumers and head timestamp.
pub struct LogStreamModel {
    policy: ScalingPolicy,
    next_poll: Option<f64>,
}

impl LogStreamModel {
    /// A fresh LogStream autoscaler.
    pub fn new(config: &SimConfig) -> Self {
        Self {
            policy: ScalingPolicy::new(config.scaling),
            next_poll: None,
        }
    }
}

impl Autoscaler for LogStreamModel {
    fn name(&self) -> &'static str {
        "LogStream"
    }

    fn tick(&mut self, w: &World<'_>) -> Option<u32> {
        let poll = w.config.scaling.poll_interval.as_secs_f64();
        let next = *self.next_poll.get_or_insert(poll / 2.0);
        if w.t < next {
            return None;
        }
        self.next_poll = Some(next + poll);
        let s = w.stats;
        let reading = OutputReading {
            ready: Some(w.ready_now.round() as u64),
            unacked: Some(s.unacked.round() as u64),
            consumers: Some(u64::from(s.consumers)),
            publish_rate: Some(s.publish_rate),
            ack_rate: Some(s.ack_rate),
            oldest_age: s.head_arrival_s.map(|a| Age::measured(w.t - a)),
            ..OutputReading::default()
        };
        let decision = self.policy.decide(w.t, w.requested, Some(&reading));
        decision.is_change().then_some(decision.desired)
    }
}

/// KEDA's RabbitMQ scaler (mode QueueLength, value = targetBacklogPerReplica) feeding a
/// Kubernetes HPA with its defaults: sync every 15 s, tolerance 0.1, scale-up at most
/// max(+100 %, +4 pods) per 15 s, scale-down to the highest recommendation of the last 300 s;
/// at zero replicas KEDA polls every 30 s and scales 0 → 1 on any message, and back to zero
/// after 300 s without one.
pub struct KedaHpaModel {
    next_sync: Option<f64>,
    next_keda_poll: Option<f64>,
    recommendations: VecDeque<(f64, u32)>,
    inactive_since: Option<f64>,
}

/// HPA controller sync period.
const HPA_SYNC_S: f64 = 15.0;
/// HPA tolerance around the target.
const HPA_TOLERANCE: f64 = 0.1;
/// HPA scale-down stabilization window.
const HPA_DOWN_WINDOW_S: f64 = 300.0;
/// KEDA polling interval (activation at zero replicas).
const KEDA_POLL_S: f64 = 30.0;
/// KEDA cooldown before scaling to zero.
const KEDA_COOLDOWN_S: f64 = 300.0;

impl KedaHpaModel {
    /// A fresh KEDA + HPA pair.
    pub fn new() -> Self {
        Self {
            next_sync: None,
            next_keda_poll: None,
            recommendations: VecDeque::new(),
            inactive_since: None,
        }
    }
}

impl Default for KedaHpaModel {
    fn default() -> Self {
        Self::new()
    }
}

impl Autoscaler for KedaHpaModel {
    fn name(&self) -> &'static str {
        "KEDA+HPA"
    }

    fn tick(&mut self, w: &World<'_>) -> Option<u32> {
        let s = &w.config.scaling;
        // KEDA's queue length is the management API's `messages` (ready + unacked).
        let metric = w.stats.ready + w.stats.unacked;
        let keda_next = *self.next_keda_poll.get_or_insert(KEDA_POLL_S / 2.0);
        if w.t >= keda_next {
            self.next_keda_poll = Some(keda_next + KEDA_POLL_S);
            if metric > 0.0 {
                self.inactive_since = None;
                if w.requested == 0 {
                    return Some(1);
                }
            } else {
                let since = *self.inactive_since.get_or_insert(w.t);
                if s.min_replicas == 0 && w.requested > 0 && w.t - since >= KEDA_COOLDOWN_S {
                    return Some(0);
                }
            }
        }
        if w.requested == 0 {
            return None;
        }
        let sync = *self.next_sync.get_or_insert(HPA_SYNC_S / 2.0);
        if w.t < sync {
            return None;
        }
        self.next_sync = Some(sync + HPA_SYNC_S);
        let current = w.requested;
        let target = f64::from(s.target_backlog_per_replica);
        let ratio = metric / (target * f64::from(current));
        let raw = if (ratio - 1.0).abs() <= HPA_TOLERANCE {
            current
        } else {
            (metric / target).ceil() as u32
        };
        let floor = s.min_replicas.max(1);
        let raw = raw.clamp(floor, s.max_replicas);
        self.recommendations.push_back((w.t, raw));
        while self
            .recommendations
            .front()
            .is_some_and(|(at, _)| w.t - at > HPA_DOWN_WINDOW_S)
        {
            self.recommendations.pop_front();
        }
        let mut desired = raw;
        if desired < current {
            desired = self
                .recommendations
                .iter()
                .map(|(_, r)| *r)
                .max()
                .unwrap_or(raw)
                .min(current);
        }
        if desired > current {
            desired = desired.min((current * 2).max(current + 4));
        }
        (desired != current).then_some(desired)
    }
}

/// An oracle that knows the future arrivals: it asks for pods `startup_s` before they are
/// needed, sizes them to the arrivals then plus the backlog now (drained as fast as
/// `maxReplicas` allows), and releases them the moment they are no longer needed.
pub struct OracleModel;

impl Autoscaler for OracleModel {
    fn name(&self) -> &'static str {
        "oracle"
    }

    fn tick(&mut self, w: &World<'_>) -> Option<u32> {
        let c = w.config;
        let s = &c.scaling;
        let mu = c.replica_rate;
        // Pods asked for now serve from t + startup on; keep those needed anywhere in that span.
        let horizon = c.startup_s;
        let mut need = 0.0f64;
        let mut u = w.t;
        while u <= w.t + horizon {
            need = need.max((w.trace.arrivals)(u) / mu);
            u += c.dt_s;
        }
        let backlog_pods = if w.queued_now > (w.trace.arrivals)(w.t) * c.dt_s * 2.0 {
            // Drain the backlog as fast as allowed.
            f64::from(s.max_replicas)
        } else {
            0.0
        };
        let desired =
            (need.ceil().max(backlog_pods) as u32).clamp(s.min_replicas.max(1), s.max_replicas);
        (desired != w.requested).then_some(desired)
    }
}
