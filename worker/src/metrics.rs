//! The worker's Prometheus metrics. Every series carries the labels `pipeline` and `output`
//! (constant labels of the registry); the Grafana dashboard and the alerts use these names.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use logstream_api::contract::ErrorClass;

/// How a delivery was settled, the `outcome` label of `logstream_messages_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Written, then ACKed.
    Ok,
    /// Republished to a retry step, then ACKed.
    Retried,
    /// Republished to the dead-letter queue, then ACKed.
    DeadLettered,
    /// Already written (same message id or body), ACKed without writing.
    Duplicate,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Retried => "retried",
            Self::DeadLettered => "dead_lettered",
            Self::Duplicate => "duplicate",
        }
    }

    const ALL: [Outcome; 4] = [Self::Ok, Self::Retried, Self::DeadLettered, Self::Duplicate];
}

/// The worker's metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    messages: IntCounterVec,
    /// Seconds from delivery to settlement.
    pub processing_seconds: Histogram,
    /// Seconds from the producer's AMQP `timestamp` to delivery.
    pub message_age_seconds: Histogram,
    /// Deliveries received and not yet settled.
    pub in_flight: IntGauge,
    sink_errors: IntCounterVec,
    /// Copies the broker refused (the original went back to the queue instead of being ACKed).
    pub settle_refused: IntCounter,
    /// Deliveries the broker flagged as redelivered.
    pub redelivered: IntCounter,
    /// Connections re-established after the broker connection was lost.
    pub reconnects: IntCounter,
}

/// Why the metrics could not be registered (a programming error: names are constants).
#[derive(Debug, thiserror::Error)]
#[error("failed to register metric: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Metrics of output `output` of pipeline `pipeline`.
    pub fn new(pipeline: &str, output: &str) -> Result<Self, MetricsError> {
        let labels = [
            ("pipeline".to_owned(), pipeline.to_owned()),
            ("output".to_owned(), output.to_owned()),
        ]
        .into_iter()
        .collect();
        let registry = Registry::new_custom(None, Some(labels))?;
        let messages = IntCounterVec::new(
            Opts::new(
                "logstream_messages_total",
                "Deliveries settled, by outcome: ok, retried, dead_lettered, duplicate.",
            ),
            &["outcome"],
        )?;
        let processing_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "logstream_processing_seconds",
                "Seconds from delivery to settlement (ACK, or the decision to requeue).",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )?;
        let message_age_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "logstream_message_age_seconds",
                "Seconds from the message's AMQP timestamp to its delivery to this worker.",
            )
            .buckets(vec![
                0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
            ]),
        )?;
        let in_flight = IntGauge::new(
            "logstream_in_flight",
            "Deliveries received and not yet settled.",
        )?;
        let sink_errors = IntCounterVec::new(
            Opts::new(
                "logstream_sink_errors_total",
                "Failed sink writes (one per failed request, one per failed bulk item), by class.",
            ),
            &["class"],
        )?;
        let settle_refused = IntCounter::new(
            "logstream_settle_refused_total",
            "Retry or dead-letter copies the broker refused; their originals were requeued, not ACKed.",
        )?;
        let redelivered = IntCounter::new(
            "logstream_redelivered_total",
            "Deliveries the broker flagged as redelivered (a worker died or lost its connection holding them).",
        )?;
        let reconnects = IntCounter::new(
            "logstream_reconnects_total",
            "Broker connections re-established after a loss.",
        )?;
        registry.register(Box::new(messages.clone()))?;
        registry.register(Box::new(processing_seconds.clone()))?;
        registry.register(Box::new(message_age_seconds.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(sink_errors.clone()))?;
        registry.register(Box::new(settle_refused.clone()))?;
        registry.register(Box::new(redelivered.clone()))?;
        registry.register(Box::new(reconnects.clone()))?;
        // Every label value exists from the start, so rates and alerts see zeros, not gaps.
        for outcome in Outcome::ALL {
            messages.with_label_values(&[outcome.as_str()]);
        }
        for class in [ErrorClass::Transient, ErrorClass::Permanent] {
            sink_errors.with_label_values(&[class.as_str()]);
        }
        Ok(Self {
            registry,
            messages,
            processing_seconds,
            message_age_seconds,
            in_flight,
            sink_errors,
            settle_refused,
            redelivered,
            reconnects,
        })
    }

    /// Counts `n` deliveries settled with `outcome`.
    pub fn settled(&self, outcome: Outcome, n: u64) {
        self.messages
            .with_label_values(&[outcome.as_str()])
            .inc_by(n);
    }

    /// Deliveries settled with `outcome` so far.
    pub fn settled_count(&self, outcome: Outcome) -> u64 {
        self.messages.with_label_values(&[outcome.as_str()]).get()
    }

    /// Counts a failed sink write of `class`.
    pub fn sink_error(&self, class: ErrorClass) {
        self.sink_errors.with_label_values(&[class.as_str()]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample `name` whose labels include `labels` (label order is not fixed).
    fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (set, value) = rest.strip_prefix('{')?.split_once("} ")?;
            let pairs: Vec<&str> = set.split(',').collect();
            labels
                .iter()
                .all(|(k, v)| pairs.contains(&format!("{k}=\"{v}\"").as_str()))
                .then(|| value.trim().parse().ok())?
        })
    }

    #[test]
    fn every_series_carries_pipeline_and_output_and_starts_at_zero() {
        let m = Metrics::new("app", "sec").unwrap();
        let text = m.render();
        let base = [("pipeline", "app"), ("output", "sec")];
        let with = |extra: (&'static str, &'static str)| [base[0], base[1], extra];
        for outcome in ["ok", "retried", "dead_lettered", "duplicate"] {
            assert_eq!(
                sample(
                    &text,
                    "logstream_messages_total",
                    &with(("outcome", outcome))
                ),
                Some(0.0),
                "{outcome} in\n{text}"
            );
        }
        for class in ["transient", "permanent"] {
            assert_eq!(
                sample(
                    &text,
                    "logstream_sink_errors_total",
                    &with(("class", class))
                ),
                Some(0.0)
            );
        }
        for name in [
            "logstream_in_flight",
            "logstream_settle_refused_total",
            "logstream_redelivered_total",
            "logstream_reconnects_total",
            "logstream_processing_seconds_count",
            "logstream_message_age_seconds_count",
        ] {
            assert_eq!(sample(&text, name, &base), Some(0.0), "{name} in\n{text}");
        }
    }

    #[test]
    fn counts_settlements_by_outcome() {
        let m = Metrics::new("app", "sec").unwrap();
        m.settled(Outcome::Duplicate, 1);
        m.settled(Outcome::Ok, 3);
        assert_eq!(m.settled_count(Outcome::Ok), 3);
        let text = m.render();
        assert_eq!(
            sample(
                &text,
                "logstream_messages_total",
                &[("outcome", "duplicate")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "logstream_messages_total", &[("outcome", "ok")]),
            Some(3.0)
        );
    }
}
