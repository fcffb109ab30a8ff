//! The operator's Prometheus metrics (all named `logstream_…`): reconciles by result and
//! reason, reconcile durations, and per output the figures the status shows.

use std::{sync::atomic::AtomicU64, time::Duration};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use logstream_api::pipeline::OutputStatus;

use crate::scaling::ScaleRecord;

/// Labels of a reconcile outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `ok` or `error`.
    pub result: String,
    /// The error's category (`InvalidSpec`, `BrokerUnreachable`, …), empty on success.
    pub reason: String,
}

/// Labels of one output.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutputLabels {
    /// Namespace of the LogPipeline.
    pub namespace: String,
    /// Name of the LogPipeline.
    pub pipeline: String,
    /// Output name.
    pub output: String,
}

/// Every metric the operator exports, registered in one registry.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_seconds: Histogram,
    depth: Family<OutputLabels, Gauge>,
    oldest_age: Family<OutputLabels, Gauge<f64, AtomicU64>>,
    dead_lettered: Family<OutputLabels, Gauge>,
    replicas: Family<OutputLabels, Gauge>,
    desired_replicas: Family<OutputLabels, Gauge>,
    scalings: Family<ScalingLabels, Counter>,
    metrics_missing: Family<OutputLabels, Gauge>,
    leader: Gauge,
}

/// Labels of one replica-count change.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScalingLabels {
    /// Namespace of the LogPipeline.
    pub namespace: String,
    /// Name of the LogPipeline.
    pub pipeline: String,
    /// Output name.
    pub output: String,
    /// `up` or `down`.
    pub direction: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "logstream_reconciles",
            "Reconciles of LogPipelines by result and error reason",
            reconciles.clone(),
        );
        let reconcile_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "logstream_reconcile_duration_seconds",
            "Time one reconcile of a LogPipeline took",
            reconcile_seconds.clone(),
        );
        let depth = Family::<OutputLabels, Gauge>::default();
        registry.register(
            "logstream_output_depth",
            "Messages ready in an output's main queue",
            depth.clone(),
        );
        let oldest_age = Family::<OutputLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "logstream_output_oldest_message_age_seconds",
            "Age of the oldest message waiting in an output's main queue",
            oldest_age.clone(),
        );
        let dead_lettered = Family::<OutputLabels, Gauge>::default();
        registry.register(
            "logstream_output_dead_lettered",
            "Messages in an output's dead-letter queue",
            dead_lettered.clone(),
        );
        let replicas = Family::<OutputLabels, Gauge>::default();
        registry.register(
            "logstream_output_replicas",
            "Ready worker replicas of an output",
            replicas.clone(),
        );
        let desired_replicas = Family::<OutputLabels, Gauge>::default();
        registry.register(
            "logstream_output_desired_replicas",
            "Worker replicas the autoscaler wants for an output",
            desired_replicas.clone(),
        );
        let scalings = Family::<ScalingLabels, Counter>::default();
        registry.register(
            "logstream_scalings",
            "Replica-count changes the autoscaler applied, by direction",
            scalings.clone(),
        );
        let metrics_missing = Family::<OutputLabels, Gauge>::default();
        registry.register(
            "logstream_scaling_metrics_missing",
            "1 while the autoscaler holds an output's replicas because its queue could not be read",
            metrics_missing.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "logstream_operator_leader",
            "1 while this operator replica holds the leader Lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_seconds,
            depth,
            oldest_age,
            dead_lettered,
            replicas,
            desired_replicas,
            scalings,
            metrics_missing,
            leader,
        }
    }
}

impl Metrics {
    /// Counts one reconcile; `error` is the failure's category, `None` on success.
    pub fn reconciled(&self, error: Option<&str>, took: Duration) {
        let labels = ReconcileLabels {
            result: if error.is_some() { "error" } else { "ok" }.to_owned(),
            reason: error.unwrap_or_default().to_owned(),
        };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_seconds.observe(took.as_secs_f64());
    }

    /// Records the figures of one output; absent figures leave their series out (a gap is
    /// not a zero).
    pub fn output(&self, namespace: &str, pipeline: &str, output: &OutputStatus) {
        let labels = OutputLabels {
            namespace: namespace.to_owned(),
            pipeline: pipeline.to_owned(),
            output: output.name.clone(),
        };
        let int = |v: Option<u64>| v.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        set_or_remove(&self.depth, &labels, int(output.ready));
        set_or_remove(&self.dead_lettered, &labels, int(output.dead_lettered));
        set_or_remove(&self.replicas, &labels, int(output.replicas.map(u64::from)));
        match output.oldest_message_age_seconds {
            Some(age) => {
                self.oldest_age.get_or_create(&labels).set(age);
            }
            None => {
                self.oldest_age.remove(&labels);
            }
        }
    }

    /// Records the replicas the autoscaler wants for one output (the reconcile never does:
    /// the figure is the autoscaler's).
    pub fn desired_replicas(&self, namespace: &str, pipeline: &str, output: &str, desired: u32) {
        let labels = OutputLabels {
            namespace: namespace.to_owned(),
            pipeline: pipeline.to_owned(),
            output: output.to_owned(),
        };
        self.desired_replicas
            .get_or_create(&labels)
            .set(i64::from(desired));
    }

    /// Counts one applied replica-count change of an output.
    pub fn scaled(&self, namespace: &str, pipeline: &str, output: &str, up: bool) {
        let labels = ScalingLabels {
            namespace: namespace.to_owned(),
            pipeline: pipeline.to_owned(),
            output: output.to_owned(),
            direction: if up { "up" } else { "down" }.to_owned(),
        };
        self.scalings.get_or_create(&labels).inc();
    }

    /// Whether the autoscaler of an output holds because its queue could not be read.
    pub fn set_metrics_missing(
        &self,
        namespace: &str,
        pipeline: &str,
        output: &str,
        missing: bool,
    ) {
        let labels = OutputLabels {
            namespace: namespace.to_owned(),
            pipeline: pipeline.to_owned(),
            output: output.to_owned(),
        };
        self.metrics_missing
            .get_or_create(&labels)
            .set(i64::from(missing));
    }

    /// Records one autoscaler poll of an output: whether its readings are missing (a reading
    /// or the target could not be read), the replicas it wants (when the target answered),
    /// and the change it applied. Returns whether readings are missing.
    pub fn autoscaled(&self, record: &ScaleRecord) -> bool {
        let (namespace, pipeline) = record
            .pipeline
            .split_once('/')
            .unwrap_or(("", &record.pipeline));
        let missing = record.decision.metrics_missing || record.error.is_some();
        self.set_metrics_missing(namespace, pipeline, &record.output, missing);
        if record.error.is_none() {
            self.desired_replicas(namespace, pipeline, &record.output, record.decision.desired);
        }
        if record.scaled() {
            let up = record.decision.desired > record.decision.current;
            self.scaled(namespace, pipeline, &record.output, up);
        }
        missing
    }

    /// Drops the series of an output that no longer exists.
    pub fn forget_output(&self, namespace: &str, pipeline: &str, output: &str) {
        let labels = OutputLabels {
            namespace: namespace.to_owned(),
            pipeline: pipeline.to_owned(),
            output: output.to_owned(),
        };
        self.depth.remove(&labels);
        self.oldest_age.remove(&labels);
        self.dead_lettered.remove(&labels);
        self.replicas.remove(&labels);
        self.desired_replicas.remove(&labels);
        self.metrics_missing.remove(&labels);
    }

    /// Whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

fn set_or_remove(family: &Family<OutputLabels, Gauge>, labels: &OutputLabels, v: Option<i64>) {
    match v {
        Some(v) => {
            family.get_or_create(labels).set(v);
        }
        None => {
            family.remove(labels);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_reconciles_and_output_figures_under_logstream_names() {
        let m = Metrics::default();
        m.reconciled(None, Duration::from_millis(20));
        m.reconciled(Some("BrokerUnreachable"), Duration::from_millis(20));
        let figures = OutputStatus {
            name: "security".into(),
            ready: Some(12),
            oldest_message_age_seconds: Some(4.5),
            dead_lettered: Some(3),
            replicas: Some(2),
            ..OutputStatus::default()
        };
        m.output("games", "game-logs", &figures);
        m.set_leader(true);
        let text = m.render();
        assert!(
            !text.contains("logstream_output_desired_replicas{"),
            "{text}"
        );
        m.desired_replicas("games", "game-logs", "security", 5);
        let text = m.render();
        for line in [
            "logstream_reconciles_total{result=\"ok\",reason=\"\"} 1",
            "logstream_reconciles_total{result=\"error\",reason=\"BrokerUnreachable\"} 1",
            "logstream_reconcile_duration_seconds_count 2",
            "logstream_output_depth{namespace=\"games\",pipeline=\"game-logs\",output=\"security\"} 12",
            "logstream_output_oldest_message_age_seconds{namespace=\"games\",pipeline=\"game-logs\",output=\"security\"} 4.5",
            "logstream_output_dead_lettered{namespace=\"games\",pipeline=\"game-logs\",output=\"security\"} 3",
            "logstream_output_replicas{namespace=\"games\",pipeline=\"game-logs\",output=\"security\"} 2",
            "logstream_operator_leader 1",
            "logstream_output_desired_replicas{namespace=\"games\",pipeline=\"game-logs\",output=\"security\"} 5",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        m.forget_output("games", "game-logs", "security");
        assert!(!m.render().contains("output=\"security\""));
    }
}
