//! The worker's configuration: one file, rendered by the operator into a ConfigMap (and by
//! `logstream dev` into a local file), read by `logstream-worker --config <file>`.
//!
//! No credential is in it. The worker reads the broker's from the environment variable
//! [`AMQP_URI_ENV`], which the operator fills from the broker Secret, and every other Secret
//! it needs (a sink's password or token, secret headers, certificates, the dedup store's URL)
//! as files: one directory per Secret, one file per key ([`SecretFiles`]). In the cluster the
//! directory is a Secret volume; under `logstream dev` it is written from the manifest's
//! `kind: Secret` documents. The configuration names only the Secret and the directory.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    defaults,
    duration::Duration,
    pipeline::{LocalObjectRef, LogPipelineSpec, OutputSpec, QueueType, SinkSpec},
    resolved::WorkerSettings,
    topology::{QueueRole, TopologyPlan, plan},
    validate::{FieldError, ValidationErrors},
};

/// Environment variable holding the worker's AMQP URI (with credentials).
pub const AMQP_URI_ENV: &str = "LOGSTREAM_AMQP_URI";
/// Environment variable with the worker's broker user name; when it and
/// [`AMQP_PASSWORD_ENV`] are set they replace the user and password of [`AMQP_URI_ENV`]
/// (the operator fills both from a Secret's `username` and `password` keys).
pub const AMQP_USERNAME_ENV: &str = "LOGSTREAM_AMQP_USERNAME";
/// Environment variable with the worker's broker password (see [`AMQP_USERNAME_ENV`]).
pub const AMQP_PASSWORD_ENV: &str = "LOGSTREAM_AMQP_PASSWORD";
/// Key of the configuration file in the worker's ConfigMap.
pub const CONFIG_FILE_NAME: &str = "worker.yaml";
/// Where the worker container mounts its ConfigMap.
pub const CONFIG_DIR: &str = "/etc/logstream";

/// Where the worker container finds the Secrets it reads as files: `<SECRETS_DIR>/<use>`.
pub const SECRETS_DIR: &str = "/var/run/secrets/logstream";

/// What a Secret the worker reads is for; also the name of its directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretUse {
    /// The shared dedup store (key `url`).
    DedupRedis,
    /// An HTTP sink's credentials (`username` + `password`, or `token`).
    SinkAuth,
    /// Headers an HTTP sink sends, one per key.
    SinkHeaders,
    /// The CA an HTTP sink's certificate is checked against (`ca.crt`).
    SinkCa,
    /// The client certificate shown to an HTTP sink (`tls.crt`, `tls.key`).
    SinkClientCert,
    /// The CA the broker's certificate is checked against (`ca.crt`), from
    /// `spec.broker.tls.caSecretRef`.
    BrokerCa,
    /// The client certificate shown to the broker (`tls.crt`, `tls.key`), from
    /// `spec.broker.tls.clientCertSecretRef`.
    BrokerClientCert,
}

impl SecretUse {
    /// The directory name: `dedup-redis`, `sink-auth`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DedupRedis => "dedup-redis",
            Self::SinkAuth => "sink-auth",
            Self::SinkHeaders => "sink-headers",
            Self::SinkCa => "sink-ca",
            Self::SinkClientCert => "sink-client-cert",
            Self::BrokerCa => "broker-ca",
            Self::BrokerClientCert => "broker-client-cert",
        }
    }
}

/// A Secret the worker reads as files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretFiles {
    /// The Secret's name (for messages; never its values).
    pub secret: String,
    /// The directory holding one file per key.
    pub dir: String,
}

impl SecretFiles {
    /// Secret `secret` at its place in the worker container: `<SECRETS_DIR>/<use>`.
    pub fn mounted(secret: &str, use_: SecretUse) -> Self {
        Self {
            secret: secret.to_owned(),
            dir: format!("{SECRETS_DIR}/{}", use_.as_str()),
        }
    }
}

/// The Secrets an output's sink reads, by use: the HTTP sink's `auth`, `headersFrom` and TLS
/// CA and client certificate.
pub fn sink_secrets(sink: &SinkSpec) -> BTreeMap<SecretUse, SecretFiles> {
    let SinkSpec::Http(http) = sink else {
        return BTreeMap::new();
    };
    let tls = http.tls.as_ref();
    mounted([
        (
            SecretUse::SinkAuth,
            http.auth.as_ref().map(|a| &a.secret_ref),
        ),
        (
            SecretUse::SinkHeaders,
            http.headers_from.as_ref().map(|h| &h.secret_ref),
        ),
        (
            SecretUse::SinkCa,
            tls.and_then(|t| t.ca_secret_ref.as_ref()),
        ),
        (
            SecretUse::SinkClientCert,
            tls.and_then(|t| t.client_cert_secret_ref.as_ref()),
        ),
    ])
}

/// The Secrets of `spec.broker.tls` a worker reads, by use: the broker's CA and the client
/// certificate it shows.
fn broker_secrets(spec: &LogPipelineSpec) -> BTreeMap<SecretUse, SecretFiles> {
    let tls = spec.broker.tls.as_ref();
    mounted([
        (
            SecretUse::BrokerCa,
            tls.and_then(|t| t.ca_secret_ref.as_ref()),
        ),
        (
            SecretUse::BrokerClientCert,
            tls.and_then(|t| t.client_cert_secret_ref.as_ref()),
        ),
    ])
}

/// The Secrets that are named, each mounted at its use's directory.
fn mounted<'a>(
    secrets: impl IntoIterator<Item = (SecretUse, Option<&'a LocalObjectRef>)>,
) -> BTreeMap<SecretUse, SecretFiles> {
    secrets
        .into_iter()
        .filter_map(|(use_, secret)| Some((use_, SecretFiles::mounted(&secret?.name, use_))))
        .collect()
}

/// Every Secret the worker of output `o` of `spec` reads as files: the broker's TLS
/// material, its sink's and its dedup store's.
fn worker_secrets(spec: &LogPipelineSpec, o: &OutputSpec) -> BTreeMap<SecretUse, SecretFiles> {
    let mut secrets = broker_secrets(spec);
    secrets.extend(sink_secrets(&o.sink));
    if let Some(secret) = o.dedup_redis_secret() {
        secrets.insert(
            SecretUse::DedupRedis,
            SecretFiles::mounted(secret, SecretUse::DedupRedis),
        );
    }
    secrets
}

/// One step of the retry ladder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryStep {
    /// The retry queue.
    pub queue: String,
    /// Its message TTL.
    pub delay: Duration,
}

/// The worker's dedup cache (the shared store, when there is one, is the Secret of
/// [`SecretUse::DedupRedis`] in [`WorkerConfig::secrets`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DedupSettings {
    /// Message ids the per-process cache remembers at most; 0 turns it off.
    pub capacity: u32,
    /// How long an id is remembered (also the time to live of the ids in the shared store).
    pub window: Duration,
}

/// Everything one output's worker needs to know.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerConfig {
    /// Namespace of the LogPipeline.
    pub namespace: String,
    /// Name of the LogPipeline.
    pub pipeline: String,
    /// Name of the output.
    pub output: String,
    /// Broker virtual host.
    pub vhost: String,
    /// The exchange producers publish to (republished copies keep their origin routing key).
    pub exchange: String,
    /// The main queue the worker consumes.
    pub queue: String,
    /// Queue type of every queue.
    pub queue_type: QueueType,
    /// The retry ladder, step 0 first.
    pub retry: Vec<RetryStep>,
    /// The dead-letter queue.
    pub dead_letter_queue: String,
    /// Deliveries before dead-lettering.
    pub max_attempts: u32,
    /// Prefetch, concurrency, batching and the body size limit.
    pub consume: WorkerSettings,
    /// The dedup cache.
    pub dedup: DedupSettings,
    /// Where logs are written.
    pub sink: SinkSpec,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub listen: String,
    /// Longest time to settle in-flight work after SIGTERM.
    pub shutdown_grace: Duration,
    /// Longest time deliveries are held unacknowledged while the sink is down (then they are
    /// put back in the main queue unchanged). Absent in files of older operators: the default.
    #[serde(default = "default_hold_limit")]
    pub hold_limit: Duration,
    /// The Secrets the worker reads as files, by use.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<SecretUse, SecretFiles>,
}

fn default_hold_limit() -> Duration {
    defaults::SINK_HOLD_LIMIT
}

/// Why a worker configuration could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid worker configuration: {0}")]
pub struct WorkerConfigError(String);

impl WorkerConfig {
    /// The configuration of output `output` of pipeline `name` in `namespace`.
    pub fn for_output(
        namespace: &str,
        name: &str,
        spec: &LogPipelineSpec,
        output: &str,
    ) -> Result<Self, ValidationErrors> {
        let plan = plan(namespace, name, spec)?;
        Self::from_plan(&plan, namespace, name, spec, output).ok_or_else(|| {
            ValidationErrors(vec![FieldError {
                path: "spec.outputs".into(),
                message: format!("no output named {output:?}"),
            }])
        })
    }

    /// The configuration of `output` given the pipeline's plan (whose vhost may have been
    /// overridden by the broker Secret); `None` when the spec has no such output.
    pub fn from_plan(
        plan: &TopologyPlan,
        namespace: &str,
        name: &str,
        spec: &LogPipelineSpec,
        output: &str,
    ) -> Option<Self> {
        let o = spec.output(output)?;
        let queue = plan.queue(output, QueueRole::Main)?.name.clone();
        let retry = o
            .backoff()
            .iter()
            .enumerate()
            .filter_map(|(step, delay)| {
                Some(RetryStep {
                    queue: plan.queue(output, QueueRole::Retry(step))?.name.clone(),
                    delay: *delay,
                })
            })
            .collect();
        Some(Self {
            namespace: namespace.to_owned(),
            pipeline: name.to_owned(),
            output: output.to_owned(),
            vhost: plan.vhost.clone(),
            exchange: plan.exchange().name.clone(),
            queue,
            queue_type: spec.queue_type(),
            retry,
            dead_letter_queue: plan.queue(output, QueueRole::DeadLetter)?.name.clone(),
            max_attempts: o.max_attempts(),
            consume: o.worker_settings(),
            dedup: o.dedup_settings(),
            sink: o.sink.clone(),
            listen: format!("0.0.0.0:{}", defaults::WORKER_PORT),
            shutdown_grace: defaults::WORKER_SHUTDOWN_GRACE,
            hold_limit: defaults::SINK_HOLD_LIMIT,
            secrets: worker_secrets(spec, o),
        })
    }

    /// The configuration file's text.
    pub fn to_yaml(&self) -> String {
        // Through a JSON value, so the sink reads `sink: {http: ...}` as in a LogPipeline rather
        // than serde_yaml's enum tag (`sink: !http`).
        let value = serde_json::to_value(self).expect("a worker configuration always serializes");
        serde_yaml::to_string(&value).expect("a JSON value always serializes to YAML")
    }

    /// Reads a configuration file's text (YAML, or JSON which is YAML too).
    pub fn from_yaml(text: &str) -> Result<Self, WorkerConfigError> {
        // Through a JSON value: enums then read from one-key maps (`sink: {http: ...}`), the
        // only form JSON has and the one [`Self::to_yaml`] writes.
        let value: serde_json::Value =
            serde_yaml::from_str(text).map_err(|e| WorkerConfigError(e.to_string()))?;
        let config: Self = serde_path_to_error::deserialize(value)
            .map_err(|e| WorkerConfigError(format!("{}: {}", e.path(), e.inner())))?;
        if config.retry.is_empty() {
            return Err(WorkerConfigError(
                "retry: at least one step is required".into(),
            ));
        }
        if config.max_attempts == 0
            || config.consume.prefetch == 0
            || config.consume.concurrency == 0
        {
            return Err(WorkerConfigError(
                "maxAttempts, prefetch and concurrency must be at least 1".into(),
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_pipeline;

    fn spec() -> LogPipelineSpec {
        parse_pipeline(
            "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {name: app}\nspec:\n  broker: {secretRef: {name: r}}\n  outputs:\n    - name: sec\n      retry: {maxAttempts: 4, backoff: [1s, 10s]}\n      sink: {http: {url: \"http://loki:3100/loki/api/v1/push\", format: loki}}\n      worker: {prefetch: 50}\n",
        )
        .unwrap()
        .spec
    }

    #[test]
    fn carries_the_plan_names_and_resolved_settings() {
        let c = WorkerConfig::for_output("games", "app", &spec(), "sec").unwrap();
        assert_eq!(c.queue, "logstream.games.app.sec");
        assert_eq!(c.dead_letter_queue, "logstream.games.app.sec.dlq");
        assert_eq!(c.retry.len(), 2);
        assert_eq!(c.retry[1].queue, "logstream.games.app.sec.retry.1");
        assert_eq!(c.retry[1].delay, Duration::from_secs(10));
        assert_eq!(c.max_attempts, 4);
        assert_eq!(c.consume.prefetch, 50);
        assert_eq!(
            c.consume.batch_max_messages, 50,
            "a batch never exceeds prefetch"
        );
        assert_eq!(c.listen, "0.0.0.0:9090");
        assert!(WorkerConfig::for_output("games", "app", &spec(), "nope").is_err());
    }

    #[test]
    fn dedup_settings_and_the_redis_secret_come_from_the_spec_without_the_url() {
        let c = WorkerConfig::for_output("games", "app", &spec(), "sec").unwrap();
        assert_eq!(c.dedup.capacity, defaults::DEDUP_CAPACITY);
        assert_eq!(c.dedup.window, defaults::DEDUP_WINDOW);
        assert_eq!(c.hold_limit, defaults::SINK_HOLD_LIMIT);
        assert!(c.secrets.is_empty());

        let with_store = parse_pipeline(
            "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {name: app}\nspec:\n  broker: {secretRef: {name: r}}\n  outputs:\n    - name: sec\n      sink: {stdout: {}}\n      worker: {dedup: {redis: {secretRef: {name: dedup-store}}, capacity: 500, window: 2m}}\n",
        )
        .unwrap()
        .spec;
        let c = WorkerConfig::for_output("games", "app", &with_store, "sec").unwrap();
        assert_eq!(c.dedup.capacity, 500);
        assert_eq!(c.dedup.window, Duration::from_secs(120));
        assert_eq!(
            c.secrets.get(&SecretUse::DedupRedis),
            Some(&SecretFiles {
                secret: "dedup-store".into(),
                dir: format!("{SECRETS_DIR}/dedup-redis"),
            })
        );
        let text = c.to_yaml();
        assert!(text.contains("dedup-redis:"), "{text}");
        assert!(!text.contains("redis://"), "{text}");
        assert_eq!(WorkerConfig::from_yaml(&text).unwrap(), c);
        // A file written before holdLimit existed still loads, with the default.
        let older = text
            .lines()
            .filter(|l| !l.starts_with("holdLimit:"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            WorkerConfig::from_yaml(&older).unwrap().hold_limit,
            defaults::SINK_HOLD_LIMIT
        );
    }

    #[test]
    fn reads_json_and_writes_the_logpipeline_form_of_the_sink() {
        let c = WorkerConfig::for_output("games", "app", &spec(), "sec").unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""sink":{"http":{"#), "{json}");
        assert_eq!(WorkerConfig::from_yaml(&json).unwrap(), c);
        let yaml = c.to_yaml();
        assert!(yaml.contains("sink:\n  http:\n"), "{yaml}");
        assert!(
            yaml.contains("    url: http://loki:3100/loki/api/v1/push\n"),
            "{yaml}"
        );
        assert!(!yaml.contains('!'), "no YAML tags: {yaml}");
    }

    #[test]
    fn the_brokers_ca_and_client_certificate_are_secrets_read_as_files() {
        let spec = parse_pipeline(
            "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {name: app}\nspec:\n  broker: {secretRef: {name: r}, tls: {caSecretRef: {name: rabbit-ca}, clientCertSecretRef: {name: rabbit-client}}}\n  outputs:\n    - {name: sec, sink: {stdout: {}}}\n",
        )
        .unwrap()
        .spec;
        let c = WorkerConfig::for_output("games", "app", &spec, "sec").unwrap();
        assert_eq!(
            c.secrets,
            BTreeMap::from([
                (
                    SecretUse::BrokerCa,
                    SecretFiles {
                        secret: "rabbit-ca".into(),
                        dir: "/var/run/secrets/logstream/broker-ca".into()
                    }
                ),
                (
                    SecretUse::BrokerClientCert,
                    SecretFiles {
                        secret: "rabbit-client".into(),
                        dir: "/var/run/secrets/logstream/broker-client-cert".into()
                    }
                ),
            ])
        );
        let yaml = c.to_yaml();
        assert!(yaml.contains("secrets:\n  broker-ca:\n"), "{yaml}");
        assert_eq!(WorkerConfig::from_yaml(&yaml).unwrap(), c);
        assert!(
            WorkerConfig::for_output("games", "app", &self::spec(), "sec")
                .unwrap()
                .secrets
                .is_empty()
        );
    }

    #[test]
    fn round_trips_through_its_file_and_names_bad_fields() {
        let c = WorkerConfig::for_output("games", "app", &spec(), "sec").unwrap();
        let text = c.to_yaml();
        assert!(text.contains("prefetch: 50"), "{text}");
        assert_eq!(WorkerConfig::from_yaml(&text).unwrap(), c);
        let err =
            WorkerConfig::from_yaml(&text.replace("prefetch: 50", "prefetch: lots")).unwrap_err();
        assert!(err.to_string().contains("prefetch"), "{err}");
    }

    #[test]
    fn sink_secrets_are_named_with_their_mount_directory_never_their_values() {
        let spec = parse_pipeline(
            "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {name: app}\nspec:\n  broker: {secretRef: {name: r}}\n  outputs:\n    - name: sec\n      sink: {http: {url: \"https://loki:3100/loki/api/v1/push\", auth: {secretRef: {name: loki-auth}}, headersFrom: {secretRef: {name: h}}, tls: {caSecretRef: {name: loki-ca}, clientCertSecretRef: {name: loki-client}}}}\n",
        )
        .unwrap()
        .spec;
        let c = WorkerConfig::for_output("games", "app", &spec, "sec").unwrap();
        let names: Vec<(&str, &str, &str)> = c
            .secrets
            .iter()
            .map(|(u, f)| (u.as_str(), f.secret.as_str(), f.dir.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (
                    "sink-auth",
                    "loki-auth",
                    "/var/run/secrets/logstream/sink-auth"
                ),
                (
                    "sink-headers",
                    "h",
                    "/var/run/secrets/logstream/sink-headers"
                ),
                ("sink-ca", "loki-ca", "/var/run/secrets/logstream/sink-ca"),
                (
                    "sink-client-cert",
                    "loki-client",
                    "/var/run/secrets/logstream/sink-client-cert"
                ),
            ]
        );
        let yaml = c.to_yaml();
        assert!(yaml.contains("secrets:\n  sink-auth:\n"), "{yaml}");
        assert_eq!(WorkerConfig::from_yaml(&yaml).unwrap(), c);
        assert!(
            WorkerConfig::for_output("games", "app", &self::spec(), "sec")
                .unwrap()
                .secrets
                .is_empty()
        );
    }
}
