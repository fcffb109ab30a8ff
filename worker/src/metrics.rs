//! The worker's Prometheus metrics, served as OpenMetrics text. Every series carries the labels
//! `pipeline` and `output` (labels of the registry); the Grafana dashboard and the alerts use
//! these names.

use std::{
    borrow::Cow,
    sync::{Mutex, atomic::AtomicU64},
    time::Instant,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use logstream_api::contract::ErrorClass;

/// Buckets of `logstream_processing_seconds`: from a millisecond to half a minute.
const PROCESSING_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets of `logstream_message_age_seconds`: from a tenth of a second to an hour.
const AGE_BUCKETS: [f64; 13] = [
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// How a delivery was settled: the `outcome` label of `logstream_messages_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Settled {
    /// Written, then ACKed.
    Ok,
    /// Republished to a retry step, then ACKed.
    Retried,
    /// Republished to the dead-letter queue, then ACKed.
    DeadLettered,
    /// Already written (same message id or body), ACKed without writing.
    Duplicate,
}

impl Settled {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Retried => "retried",
            Self::DeadLettered => "dead_lettered",
            Self::Duplicate => "duplicate",
        }
    }

    const ALL: [Settled; 4] = [Self::Ok, Self::Retried, Self::DeadLettered, Self::Duplicate];
}

impl EncodeLabelValue for Settled {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// The label set of `logstream_messages_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: Settled,
}

/// Why a delivery was put back in the main queue as a copy: the `reason` label of
/// `logstream_returned_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Returned {
    /// A broker redelivery, restamped as a suspect (charged nothing).
    Suspect,
    /// Held while the sink was down for as long as `holdLimit` allows.
    HoldLimit,
    /// Held while the sink was down when the worker was asked to stop.
    Stopping,
}

impl Returned {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Suspect => "suspect",
            Self::HoldLimit => "hold_limit",
            Self::Stopping => "stopping",
        }
    }

    const ALL: [Returned; 3] = [Self::Suspect, Self::HoldLimit, Self::Stopping];
}

impl EncodeLabelValue for Returned {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// The label set of `logstream_returned_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: Returned,
}

/// The label set of `logstream_sink_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: &'static str,
}

impl ClassLabel {
    fn of(class: ErrorClass) -> Self {
        Self {
            class: class.as_str(),
        }
    }
}

/// The worker's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    messages: Family<OutcomeLabel, Counter>,
    /// Seconds from delivery to settlement.
    pub processing_seconds: Histogram,
    /// Seconds from the producer's AMQP `timestamp` to delivery.
    pub message_age_seconds: Histogram,
    /// Deliveries received and not yet settled.
    pub in_flight: Gauge,
    sink_errors: Family<ClassLabel, Counter>,
    /// Copies the broker refused (the original went back to the queue instead of being ACKed).
    pub settle_refused: Counter,
    /// Deliveries the broker flagged as redelivered.
    pub redelivered: Counter,
    /// Connections re-established after the broker connection was lost.
    pub reconnects: Counter,
    /// 1 while the sink takes writes, 0 while it is down.
    pub sink_up: Gauge,
    sink_down_seconds: Gauge<f64, AtomicU64>,
    /// When the current outage began; `logstream_sink_down_seconds` is read from it.
    down_since: Mutex<Option<Instant>>,
    /// Outages of the sink (each counted when it begins).
    pub sink_outages: Counter,
    /// Probes of a sink that was down (rewrites of held deliveries).
    pub sink_probes: Counter,
    returned: Family<ReasonLabel, Counter>,
    /// 1 while the shared dedup store answers (or none is configured), 0 while it does not.
    pub dedup_store_up: Gauge,
    /// Failed requests to the shared dedup store.
    pub dedup_store_errors: Counter,
}

impl Metrics {
    /// Metrics of output `output` of pipeline `pipeline`.
    pub fn new(pipeline: &str, output: &str) -> Self {
        let labels = [
            (Cow::Borrowed("pipeline"), Cow::Owned(pipeline.to_owned())),
            (Cow::Borrowed("output"), Cow::Owned(output.to_owned())),
        ];
        let mut metrics = Self {
            registry: Registry::with_labels(labels.into_iter()),
            messages: Family::default(),
            processing_seconds: Histogram::new(PROCESSING_BUCKETS),
            message_age_seconds: Histogram::new(AGE_BUCKETS),
            in_flight: Gauge::default(),
            sink_errors: Family::default(),
            settle_refused: Counter::default(),
            redelivered: Counter::default(),
            reconnects: Counter::default(),
            sink_up: Gauge::default(),
            sink_down_seconds: Gauge::default(),
            down_since: Mutex::new(None),
            sink_outages: Counter::default(),
            sink_probes: Counter::default(),
            returned: Family::default(),
            dedup_store_up: Gauge::default(),
            dedup_store_errors: Counter::default(),
        };
        metrics.sink_up.set(1);
        metrics.dedup_store_up.set(1);
        let registry = &mut metrics.registry;
        // prometheus-client appends `_total` to counter names and `.` to help texts.
        registry.register(
            "logstream_messages",
            "Deliveries settled, by outcome: ok, retried, dead_lettered, duplicate",
            metrics.messages.clone(),
        );
        registry.register(
            "logstream_processing_seconds",
            "Seconds from delivery to settlement (ACK, or the decision to requeue)",
            metrics.processing_seconds.clone(),
        );
        registry.register(
            "logstream_message_age_seconds",
            "Seconds from the message's AMQP timestamp to its delivery to this worker",
            metrics.message_age_seconds.clone(),
        );
        registry.register(
            "logstream_in_flight",
            "Deliveries received and not yet settled",
            metrics.in_flight.clone(),
        );
        registry.register(
            "logstream_sink_errors",
            "Failed sink writes (one per failed request, one per failed bulk item), by class",
            metrics.sink_errors.clone(),
        );
        registry.register(
            "logstream_settle_refused",
            "Retry or dead-letter copies the broker refused; their originals were requeued, not ACKed",
            metrics.settle_refused.clone(),
        );
        registry.register(
            "logstream_redelivered",
            "Deliveries the broker flagged as redelivered (a worker died or lost its connection holding them)",
            metrics.redelivered.clone(),
        );
        registry.register(
            "logstream_reconnects",
            "Broker connections re-established after a loss",
            metrics.reconnects.clone(),
        );
        registry.register(
            "logstream_sink_up",
            "1 while the sink takes writes, 0 while it is down (the worker then holds what it has, takes nothing new and probes)",
            metrics.sink_up.clone(),
        );
        registry.register(
            "logstream_sink_down_seconds",
            "Seconds the current sink outage has lasted (0 while the sink is up)",
            metrics.sink_down_seconds.clone(),
        );
        registry.register(
            "logstream_sink_outages",
            "Sink outages (every write failing), counted when each begins",
            metrics.sink_outages.clone(),
        );
        registry.register(
            "logstream_sink_probes",
            "Rewrites of held deliveries to a sink that was down",
            metrics.sink_probes.clone(),
        );
        registry.register(
            "logstream_returned",
            "Deliveries put back in the main queue as copies, by reason: suspect (a broker redelivery, charged nothing), hold_limit, stopping (held while the sink was down)",
            metrics.returned.clone(),
        );
        registry.register(
            "logstream_dedup_store_up",
            "1 while the shared dedup store answers or none is configured, 0 while the worker falls back to its own cache",
            metrics.dedup_store_up.clone(),
        );
        registry.register(
            "logstream_dedup_store_errors",
            "Requests to the shared dedup store that failed or timed out",
            metrics.dedup_store_errors.clone(),
        );
        // Every label value exists from the start, so rates and alerts see zeros, not gaps.
        for reason in Returned::ALL {
            metrics
                .returned
                .get_or_create_owned(&ReasonLabel { reason });
        }
        for outcome in Settled::ALL {
            metrics
                .messages
                .get_or_create_owned(&OutcomeLabel { outcome });
        }
        for class in [ErrorClass::Transient, ErrorClass::Permanent] {
            metrics
                .sink_errors
                .get_or_create_owned(&ClassLabel::of(class));
        }
        metrics
    }

    /// Counts one delivery settled as `outcome`.
    pub fn count_settled(&self, outcome: Settled) {
        self.messages.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Deliveries settled as `outcome` so far.
    pub fn settled_count(&self, outcome: Settled) -> u64 {
        self.messages.get_or_create(&OutcomeLabel { outcome }).get()
    }

    /// Counts a delivery put back in the main queue for `reason`.
    pub fn count_returned(&self, reason: Returned) {
        self.returned.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Records that the sink went down at `since`, or (`None`) came back.
    pub fn set_sink_down(&self, since: Option<Instant>) {
        self.sink_up.set(i64::from(since.is_none()));
        if let Ok(mut down) = self.down_since.lock() {
            *down = since;
        }
        if since.is_none() {
            self.sink_down_seconds.set(0.0);
        }
    }

    /// Counts a failed sink write of `class`.
    pub fn sink_error(&self, class: ErrorClass) {
        self.sink_errors.get_or_create(&ClassLabel::of(class)).inc();
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn render(&self) -> String {
        if let Ok(down) = self.down_since.lock() {
            self.sink_down_seconds
                .set(down.map_or(0.0, |since| since.elapsed().as_secs_f64()));
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// The value of sample `name` whose labels include `labels`, in an exposition such as
/// [`Metrics::render`] writes (what a worker's `/metrics` answers). Labels are matched as a
/// set: their order in the text is not fixed. Tests and the benchmark read the worker with it.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_carries_pipeline_and_output_and_starts_at_zero() {
        let m = Metrics::new("app", "sec");
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
            "logstream_sink_down_seconds",
            "logstream_sink_outages_total",
            "logstream_sink_probes_total",
            "logstream_dedup_store_errors_total",
            "logstream_processing_seconds_count",
            "logstream_message_age_seconds_count",
        ] {
            assert_eq!(sample(&text, name, &base), Some(0.0), "{name} in\n{text}");
        }
        for name in ["logstream_sink_up", "logstream_dedup_store_up"] {
            assert_eq!(sample(&text, name, &base), Some(1.0), "{name} in\n{text}");
        }
        for reason in ["suspect", "hold_limit", "stopping"] {
            assert_eq!(
                sample(&text, "logstream_returned_total", &with(("reason", reason))),
                Some(0.0),
                "{reason} in\n{text}"
            );
        }
        // Every sample line carries both labels (bucket lines included).
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                line.contains("pipeline=\"app\"") && line.contains("output=\"sec\""),
                "{line}"
            );
        }
    }

    #[test]
    fn help_texts_are_sentences_and_counters_end_in_total() {
        let text = Metrics::new("app", "sec").render();
        assert!(
            text.contains("# HELP logstream_in_flight Deliveries received and not yet settled.\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE logstream_messages counter\n"),
            "{text}"
        );
        assert!(!text.contains(".."), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn the_sink_outage_shows_as_down_with_its_duration() {
        let m = Metrics::new("app", "sec");
        m.set_sink_down(Some(Instant::now() - std::time::Duration::from_secs(5)));
        let text = m.render();
        assert_eq!(sample(&text, "logstream_sink_up", &[]), Some(0.0));
        let down = sample(&text, "logstream_sink_down_seconds", &[]).unwrap();
        assert!((5.0..6.0).contains(&down), "{down}");
        m.set_sink_down(None);
        let text = m.render();
        assert_eq!(sample(&text, "logstream_sink_up", &[]), Some(1.0));
        assert_eq!(sample(&text, "logstream_sink_down_seconds", &[]), Some(0.0));
    }

    #[test]
    fn counts_settlements_by_outcome() {
        let m = Metrics::new("app", "sec");
        m.count_settled(Settled::Duplicate);
        for _ in 0..3 {
            m.count_settled(Settled::Ok);
        }
        assert_eq!(m.settled_count(Settled::Ok), 3);
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
