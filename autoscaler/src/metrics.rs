//! The per-output Prometheus metrics: the figures of each output (depth, age of the oldest
//! message, dead letters, replicas) and the autoscaler's decisions (desired replicas, changes,
//! missing readings), registered into the registry of the process that runs the autoscaler:
//! the operator's, or `logstream dev`'s.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::pipeline::ScaleRecord;

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

impl OutputLabels {
    /// The labels of output `output` of pipeline `namespace/pipeline`.
    pub fn new(namespace: &str, pipeline: &str, output: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            pipeline: pipeline.to_owned(),
            output: output.to_owned(),
        }
    }

    /// The labels of the output a record is about (its pipeline is `namespace/name`).
    pub fn of(record: &ScaleRecord) -> Self {
        let (namespace, pipeline) = record
            .pipeline
            .split_once('/')
            .unwrap_or(("", &record.pipeline));
        Self::new(namespace, pipeline, &record.output)
    }
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

/// One output's figures, as the metrics show them; `None` leaves the series out (a gap is not
/// a zero).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OutputGauges {
    /// Messages ready in the main queue.
    pub ready: Option<u64>,
    /// Age of the oldest waiting message, seconds.
    pub oldest_age_s: Option<f64>,
    /// Messages in the dead-letter queue.
    pub dead_lettered: Option<u64>,
    /// Ready worker replicas.
    pub replicas: Option<u32>,
}

/// The per-output metrics.
#[derive(Clone, Debug, Default)]
pub struct OutputMetrics {
    depth: Family<OutputLabels, Gauge>,
    oldest_age: Family<OutputLabels, Gauge<f64, AtomicU64>>,
    dead_lettered: Family<OutputLabels, Gauge>,
    replicas: Family<OutputLabels, Gauge>,
    desired_replicas: Family<OutputLabels, Gauge>,
    scalings: Family<ScalingLabels, Counter>,
    metrics_missing: Family<OutputLabels, Gauge>,
}

impl OutputMetrics {
    /// The metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "logstream_output_depth",
            "Messages ready in an output's main queue",
            metrics.depth.clone(),
        );
        registry.register(
            "logstream_output_oldest_message_age_seconds",
            "Age of the oldest message waiting in an output's main queue",
            metrics.oldest_age.clone(),
        );
        registry.register(
            "logstream_output_dead_lettered",
            "Messages in an output's dead-letter queue",
            metrics.dead_lettered.clone(),
        );
        registry.register(
            "logstream_output_replicas",
            "Ready worker replicas of an output",
            metrics.replicas.clone(),
        );
        registry.register(
            "logstream_output_desired_replicas",
            "Worker replicas the autoscaler wants for an output",
            metrics.desired_replicas.clone(),
        );
        registry.register(
            "logstream_scalings",
            "Replica-count changes the autoscaler applied, by direction",
            metrics.scalings.clone(),
        );
        registry.register(
            "logstream_scaling_metrics_missing",
            "1 while the autoscaler holds an output's replicas because its queue could not be read",
            metrics.metrics_missing.clone(),
        );
        metrics
    }

    /// Sets the gauges of one output.
    pub fn gauges(&self, labels: &OutputLabels, figures: &OutputGauges) {
        let int = |v: Option<u64>| v.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        set_or_remove(&self.depth, labels, int(figures.ready));
        set_or_remove(&self.dead_lettered, labels, int(figures.dead_lettered));
        set_or_remove(&self.replicas, labels, figures.replicas.map(i64::from));
        match figures.oldest_age_s {
            Some(age) => {
                self.oldest_age.get_or_create(labels).set(age);
            }
            None => {
                self.oldest_age.remove(labels);
            }
        }
    }

    /// Records one poll of an output: whether its readings are missing (a reading or the
    /// target could not be read), the replicas it wants (when the target answered), and the
    /// change it applied. Returns whether readings are missing.
    pub fn autoscaled(&self, record: &ScaleRecord) -> bool {
        let labels = OutputLabels::of(record);
        let missing = record.decision.metrics_missing || record.error.is_some();
        self.metrics_missing
            .get_or_create(&labels)
            .set(i64::from(missing));
        if record.error.is_none() {
            self.desired_replicas
                .get_or_create(&labels)
                .set(i64::from(record.decision.desired));
        }
        if record.scaled() {
            let up = record.decision.desired > record.decision.current;
            self.scalings
                .get_or_create(&ScalingLabels {
                    namespace: labels.namespace,
                    pipeline: labels.pipeline,
                    output: labels.output,
                    direction: if up { "up" } else { "down" }.to_owned(),
                })
                .inc();
        }
        missing
    }

    /// Drops the series of an output that no longer exists.
    pub fn forget_output(&self, labels: &OutputLabels) {
        self.depth.remove(labels);
        self.oldest_age.remove(labels);
        self.dead_lettered.remove(labels);
        self.replicas.remove(labels);
        self.desired_replicas.remove(labels);
        self.metrics_missing.remove(labels);
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
