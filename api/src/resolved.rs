//! The spec with defaults applied: what the operator, the worker and the autoscaler act on.
//!
//! Each accessor reads the user's value or falls back to [`crate::defaults`]; nothing here is
//! ever written back into the stored resource.

use crate::{
    defaults,
    duration::Duration,
    pipeline::{
        DeletionPolicy, ExchangeType, HttpFormat, LogPipelineSpec, OutputSpec, QueueType, SinkSpec,
    },
    worker_config::DedupSettings,
};

/// Default timeout of one HTTP sink request.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

impl LogPipelineSpec {
    /// The exchange type.
    pub fn exchange_type(&self) -> ExchangeType {
        self.exchange
            .as_ref()
            .and_then(|e| e.kind)
            .unwrap_or_default()
    }

    /// The user-chosen exchange name, if any (see [`crate::naming::PipelineNames::exchange`]).
    pub fn exchange_name(&self) -> Option<&str> {
        self.exchange.as_ref().and_then(|e| e.name.as_deref())
    }

    /// The queue type of every queue.
    pub fn queue_type(&self) -> QueueType {
        self.queue_type.unwrap_or_default()
    }

    /// Priority levels of classic main queues.
    pub fn priority_levels(&self) -> u8 {
        self.priority
            .as_ref()
            .and_then(|p| p.levels)
            .unwrap_or(defaults::PRIORITY_LEVELS)
    }

    /// The broker virtual host as far as the spec alone says: `spec.broker.vhost`, else `/`.
    /// Where the broker Secret is at hand, [`Self::vhost_with`] is the one to use.
    pub fn vhost(&self) -> &str {
        self.vhost_with(None)
    }

    /// The broker virtual host: `spec.broker.vhost`, else the vhost of the broker Secret's
    /// `uri` (`secret_vhost`), else `/`.
    pub fn vhost_with<'a>(&'a self, secret_vhost: Option<&'a str>) -> &'a str {
        self.broker
            .vhost
            .as_deref()
            .or(secret_vhost)
            .unwrap_or(defaults::VHOST)
    }

    /// What happens on the broker when the pipeline is deleted.
    pub fn deletion_policy(&self) -> DeletionPolicy {
        self.deletion_policy.unwrap_or_default()
    }

    /// The output called `name`.
    pub fn output(&self, name: &str) -> Option<&OutputSpec> {
        self.outputs.iter().find(|o| o.name == name)
    }
}

impl OutputSpec {
    /// Deliveries before dead-lettering.
    pub fn max_attempts(&self) -> u32 {
        self.retry
            .as_ref()
            .and_then(|r| r.max_attempts)
            .unwrap_or(defaults::MAX_ATTEMPTS)
    }

    /// Delays of the retry steps, one retry queue each.
    pub fn backoff(&self) -> &[Duration] {
        self.retry
            .as_ref()
            .and_then(|r| r.backoff.as_deref())
            .unwrap_or(&defaults::BACKOFF)
    }

    /// Capacity of the dead-letter queue.
    pub fn dlq_max_length(&self) -> u64 {
        self.dead_letter
            .as_ref()
            .and_then(|d| d.max_length)
            .unwrap_or(defaults::DLQ_MAX_LENGTH)
    }

    /// The routing-key patterns (or header matches) of the main queue's bindings, with the
    /// default of the exchange type applied. Empty for a direct exchange without bindings
    /// (which [`crate::validate`] rejects).
    pub fn binding_keys(&self, exchange: ExchangeType) -> Vec<String> {
        match (exchange, &self.bindings) {
            (ExchangeType::Fanout, _) => vec![String::new()],
            (_, Some(keys)) => keys.clone(),
            (ExchangeType::Topic, None) => vec!["#".to_owned()],
            (ExchangeType::Headers, None) => vec![String::new()],
            (ExchangeType::Direct, None) => Vec::new(),
        }
    }

    /// Resolved worker consumption settings.
    pub fn worker_settings(&self) -> WorkerSettings {
        let w = self.worker.clone().unwrap_or_default();
        let batch = w.batch.unwrap_or_default();
        let prefetch = w.prefetch.unwrap_or(defaults::PREFETCH);
        WorkerSettings {
            prefetch,
            concurrency: w.concurrency.unwrap_or(defaults::CONCURRENCY),
            batch_max_messages: batch
                .max_messages
                .unwrap_or(defaults::BATCH_MAX_MESSAGES)
                .min(u32::from(prefetch)),
            batch_linger: batch.linger.unwrap_or(defaults::BATCH_LINGER),
            max_message_bytes: w.max_message_bytes.unwrap_or(defaults::MAX_MESSAGE_BYTES),
        }
    }

    /// The per-process dedup cache's capacity and the ids' window.
    pub fn dedup_settings(&self) -> DedupSettings {
        let d = self.worker.as_ref().and_then(|w| w.dedup.as_ref());
        DedupSettings {
            capacity: d
                .and_then(|d| d.capacity)
                .unwrap_or(defaults::DEDUP_CAPACITY),
            window: d.and_then(|d| d.window).unwrap_or(defaults::DEDUP_WINDOW),
        }
    }

    /// The Secret holding the shared dedup store's `url`, when the output has one.
    pub fn dedup_redis_secret(&self) -> Option<&str> {
        self.worker
            .as_ref()
            .and_then(|w| w.dedup.as_ref())
            .and_then(|d| d.redis.as_ref())
            .map(|r| r.secret_ref.name.as_str())
    }

    /// Resolved autoscaling settings.
    pub fn scaling_settings(&self) -> ScalingSettings {
        let s = self.scaling.clone().unwrap_or_default();
        ScalingSettings {
            min_replicas: s.min_replicas.unwrap_or(defaults::MIN_REPLICAS),
            max_replicas: s.max_replicas.unwrap_or(defaults::MAX_REPLICAS),
            target_backlog_per_replica: s
                .target_backlog_per_replica
                .unwrap_or(defaults::TARGET_BACKLOG_PER_REPLICA),
            max_message_age: s.max_message_age.unwrap_or(defaults::MAX_MESSAGE_AGE),
            scale_down_delay: s.scale_down_delay.unwrap_or(defaults::SCALE_DOWN_DELAY),
            poll_interval: s.poll_interval.unwrap_or(defaults::POLL_INTERVAL),
        }
    }
}

impl SinkSpec {
    /// Short name of the sink kind, for labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Stdout(_) => "stdout",
            Self::File(_) => "file",
            Self::Http(_) => "http",
        }
    }
}

impl crate::pipeline::HttpSink {
    /// The body format.
    pub fn format(&self) -> HttpFormat {
        self.format.unwrap_or_default()
    }

    /// The request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(HTTP_TIMEOUT)
    }

    /// The body compression.
    pub fn compression(&self) -> crate::pipeline::Compression {
        self.compression.unwrap_or_default()
    }

    /// True when server certificates are not checked (`tls.insecureSkipVerify`).
    pub fn insecure_skip_verify(&self) -> bool {
        self.tls
            .as_ref()
            .and_then(|t| t.insecure_skip_verify)
            .unwrap_or(false)
    }
}

/// A worker's consumption settings with defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerSettings {
    /// `basic.qos` prefetch count.
    pub prefetch: u16,
    /// Deliveries processed in parallel.
    pub concurrency: u32,
    /// Most logs per sink write (never more than `prefetch`).
    pub batch_max_messages: u32,
    /// Longest wait for a batch to fill.
    pub batch_linger: Duration,
    /// Largest accepted body.
    pub max_message_bytes: u32,
}

/// An output's autoscaling settings with defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalingSettings {
    /// Fewest replicas.
    pub min_replicas: u32,
    /// Most replicas.
    pub max_replicas: u32,
    /// Waiting messages per replica.
    pub target_backlog_per_replica: u32,
    /// Age the oldest waiting message should stay under.
    pub max_message_age: Duration,
    /// How long a lower count must hold before scaling down.
    pub scale_down_delay: Duration,
    /// How often statistics are read.
    pub poll_interval: Duration,
}

#[cfg(test)]
mod tests {
    use crate::manifest::parse_pipeline;

    fn spec(broker: &str) -> crate::LogPipelineSpec {
        parse_pipeline(&format!(
            "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {{name: app}}\nspec:\n  broker: {broker}\n  outputs:\n    - name: o\n      sink: {{stdout: {{}}}}\n"
        ))
        .unwrap()
        .spec
    }

    #[test]
    fn vhost_prefers_the_spec_then_the_secret_then_the_root() {
        let named = spec("{secretRef: {name: r}, vhost: logs}");
        assert_eq!(named.vhost_with(Some("from-secret")), "logs");
        let unnamed = spec("{secretRef: {name: r}}");
        assert_eq!(unnamed.vhost_with(Some("from-secret")), "from-secret");
        assert_eq!(unnamed.vhost_with(None), "/");
        assert_eq!(unnamed.vhost(), "/");
    }
}
