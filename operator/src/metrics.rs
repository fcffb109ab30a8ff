//! The operator's Prometheus metrics (all named `logstream_…`): reconciles by result and
//! reason, reconcile durations, per output the figures the status shows, and the
//! autoscaler's ([`ScalingMetrics`]) in the same registry.

use std::time::Duration;

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
use logstream_autoscaler::{
    ScaleRecord,
    metrics::{OutputGauges, OutputLabels, OutputMetrics},
    serve::MetricsText,
};

/// Labels of a reconcile outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `ok` or `error`.
    pub result: String,
    /// The error's category (`InvalidSpec`, `BrokerUnreachable`, …), empty on success.
    pub reason: String,
}

/// Every metric the operator exports, registered in one registry.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_seconds: Histogram,
    outputs: OutputMetrics,
    leader: Gauge,
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
        let outputs = OutputMetrics::register(&mut registry);
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
            outputs,
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

    /// Records the figures of one output as the reconcile read them.
    pub fn output(&self, namespace: &str, pipeline: &str, output: &OutputStatus) {
        self.outputs.gauges(
            &OutputLabels::new(namespace, pipeline, &output.name),
            &OutputGauges {
                ready: output.ready,
                oldest_age_s: output.oldest_message_age_seconds,
                dead_lettered: output.dead_lettered,
                replicas: output.replicas,
            },
        );
    }

    /// Records one autoscaler poll of an output (see [`OutputMetrics::autoscaled`]).
    pub fn autoscaled(&self, record: &ScaleRecord) -> bool {
        self.outputs.autoscaled(record)
    }

    /// Drops the series of an output that no longer exists.
    pub fn forget_output(&self, namespace: &str, pipeline: &str, output: &str) {
        self.outputs
            .forget_output(&OutputLabels::new(namespace, pipeline, output));
    }

    /// Whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }
}

impl MetricsText for Metrics {
    fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
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
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        m.forget_output("games", "game-logs", "security");
        assert!(!m.render().contains("output=\"security\""));
    }
}
