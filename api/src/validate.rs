//! Checks of a LogPipeline that go beyond its schema, each reported with the field's path.
//!
//! The CRD's schema and CEL rules reject most mistakes at `kubectl apply`; this module checks
//! everything again (and what CEL cannot say: URLs, header bindings, combined name lengths) so
//! that `logstream dev`, the operator and the tests agree, and returns every problem at once.

use std::{collections::HashMap, fmt, time::Duration as StdDuration};

use crate::{
    defaults,
    duration::Duration,
    naming::{self, PipelineNames},
    pipeline::{ExchangeType, LogPipeline, LogPipelineSpec, OutputSpec},
};

mod sink;

use sink::check_sink;
pub use sink::is_header_name;

/// One problem, at one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `spec.outputs[1].scaling.maxReplicas`.
    pub path: String,
    /// What is wrong, in plain words.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a LogPipeline.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ValidationErrors {
    /// The errors at exactly `path`.
    pub fn at<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a FieldError> + 'a {
        self.0.iter().filter(move |e| e.path == path)
    }
}

impl LogPipeline {
    /// Validates this pipeline with its metadata (name, namespace).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        validate(
            self.metadata.namespace.as_deref().unwrap_or("default"),
            self.metadata.name.as_deref().unwrap_or_default(),
            &self.spec,
        )
    }
}

/// Validates pipeline `name` in `namespace`; `Err` lists every problem found.
pub fn validate(
    namespace: &str,
    name: &str,
    spec: &LogPipelineSpec,
) -> Result<(), ValidationErrors> {
    let mut v = Collector::default();
    check_name(&mut v, name);
    check_broker(&mut v, spec);
    check_exchange(&mut v, namespace, name, spec);
    if let Some(levels) = spec.priority.as_ref().and_then(|p| p.levels)
        && !(1..=defaults::MAX_PRIORITY_LEVELS).contains(&levels)
    {
        v.push(
            "spec.priority.levels",
            format!(
                "must be between 1 and {}, got {levels}",
                defaults::MAX_PRIORITY_LEVELS
            ),
        );
    }
    check_outputs(&mut v, name, spec);
    v.finish()
}

#[derive(Default)]
struct Collector(Vec<FieldError>);

impl Collector {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn finish(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(self.0))
        }
    }
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn check_name(v: &mut Collector, name: &str) {
    if name.is_empty() {
        v.push("metadata.name", "is required");
    } else if !is_dns_label(name) || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        v.push(
            "metadata.name",
            format!(
                "{name:?} must be a DNS label (lowercase letters, digits and '-', starting with a letter): it names the worker Deployments and Services"
            ),
        );
    }
}

fn check_broker(v: &mut Collector, spec: &LogPipelineSpec) {
    let b = &spec.broker;
    match (&b.secret_ref, &b.cluster_ref) {
        (Some(_), Some(_)) => v.push(
            "spec.broker",
            "set exactly one of secretRef and clusterRef, not both",
        ),
        (None, None) => v.push(
            "spec.broker",
            "set secretRef (a Secret with the broker uri) or clusterRef (a RabbitmqCluster)",
        ),
        (Some(r), None) if r.name.is_empty() => v.push("spec.broker.secretRef.name", "is required"),
        (None, Some(r)) if r.name.is_empty() => {
            v.push("spec.broker.clusterRef.name", "is required")
        }
        _ => {}
    }
    if b.vhost.as_deref() == Some("") {
        v.push(
            "spec.broker.vhost",
            "must not be empty (the default vhost is \"/\")",
        );
    }
    if let Some(tls) = &b.tls {
        for (field, secret) in [
            ("caSecretRef", &tls.ca_secret_ref),
            ("clientCertSecretRef", &tls.client_cert_secret_ref),
        ] {
            if secret.as_ref().is_some_and(|r| r.name.is_empty()) {
                v.push(format!("spec.broker.tls.{field}.name"), "is required");
            }
        }
        if tls.insecure_skip_verify == Some(true) {
            v.push(
                "spec.broker.tls.insecureSkipVerify",
                "is not supported for the broker: name the CA that signed its certificate in caSecretRef",
            );
        }
    }
}

fn check_exchange(v: &mut Collector, namespace: &str, name: &str, spec: &LogPipelineSpec) {
    let Some(exchange) = spec.exchange_name() else {
        return;
    };
    let path = "spec.exchange.name";
    let own_default = PipelineNames::new(namespace, name).exchange(None);
    if exchange.is_empty() || exchange.len() > 200 {
        v.push(path, "must be 1 to 200 characters long");
    } else if !exchange
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"_.:-".contains(&c))
    {
        v.push(
            path,
            format!("{exchange:?} may only contain letters, digits, '_', '.', ':' and '-'"),
        );
    } else if exchange.starts_with("amq.") {
        v.push(
            path,
            format!("{exchange:?}: names starting with \"amq.\" are reserved by RabbitMQ"),
        );
    } else if exchange.starts_with(&format!("{}.", naming::PREFIX)) && exchange != own_default {
        v.push(
            path,
            format!(
                "{exchange:?}: names starting with \"{}.\" are reserved for LogStream's own objects",
                naming::PREFIX
            ),
        );
    }
}

fn check_outputs(v: &mut Collector, pipeline: &str, spec: &LogPipelineSpec) {
    if spec.outputs.is_empty() {
        v.push("spec.outputs", "at least one output is required");
    }
    if spec.outputs.len() > defaults::MAX_OUTPUTS {
        v.push(
            "spec.outputs",
            format!(
                "at most {} outputs, got {}",
                defaults::MAX_OUTPUTS,
                spec.outputs.len()
            ),
        );
    }
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    for (i, output) in spec.outputs.iter().enumerate() {
        let at = format!("spec.outputs[{i}]");
        if let Some(&first) = first_index.get(output.name.as_str()) {
            v.push(
                format!("{at}.name"),
                format!(
                    "duplicate output name {:?} (also spec.outputs[{first}].name); output names must be unique",
                    output.name
                ),
            );
        } else {
            first_index.insert(&output.name, i);
        }
        check_output(v, &at, pipeline, spec.exchange_type(), output);
    }
}

fn check_output(
    v: &mut Collector,
    at: &str,
    pipeline: &str,
    exchange: ExchangeType,
    o: &OutputSpec,
) {
    let name_path = format!("{at}.name");
    if o.name.len() > defaults::MAX_OUTPUT_NAME_LEN {
        v.push(
            &name_path,
            format!(
                "{:?} is {} characters long; output names are at most {}",
                o.name,
                o.name.len(),
                defaults::MAX_OUTPUT_NAME_LEN
            ),
        );
    } else if !is_dns_label(&o.name) {
        v.push(
            &name_path,
            format!(
                "{:?} must be a DNS label (lowercase letters, digits and '-')",
                o.name
            ),
        );
    } else if !pipeline.is_empty()
        && pipeline.len() + 1 + o.name.len() > defaults::MAX_CHILD_NAME_LEN
    {
        v.push(
            &name_path,
            format!(
                "\"{pipeline}-{}\" is {} characters long; the pipeline name and the output name, joined by '-', must fit in {} because they name the worker Deployment and Service",
                o.name,
                pipeline.len() + 1 + o.name.len(),
                defaults::MAX_CHILD_NAME_LEN
            ),
        );
    }

    check_bindings(v, at, exchange, o);

    if let Some(retry) = &o.retry {
        if let Some(n) = retry.max_attempts
            && !(1..=100).contains(&n)
        {
            v.push(
                format!("{at}.retry.maxAttempts"),
                format!("must be between 1 and 100, got {n}"),
            );
        }
        if let Some(backoff) = &retry.backoff {
            check_backoff(v, &format!("{at}.retry.backoff"), backoff);
        }
    }
    if o.dead_letter.as_ref().and_then(|d| d.max_length) == Some(0) {
        v.push(format!("{at}.deadLetter.maxLength"), "must be at least 1");
    }
    if o.max_backlog == Some(0) {
        v.push(
            format!("{at}.maxBacklog"),
            "must be at least 1 (leave it out for no bound)",
        );
    }
    check_sink(v, at, &o.sink);
    check_worker(v, at, o);
    check_scaling(v, at, o);
}

fn check_bindings(v: &mut Collector, at: &str, exchange: ExchangeType, o: &OutputSpec) {
    let path = format!("{at}.bindings");
    match (&o.bindings, exchange) {
        (Some(_), ExchangeType::Fanout) => v.push(
            path,
            "a fanout exchange routes every message to every output: remove bindings, or use a topic exchange",
        ),
        (None, ExchangeType::Direct) => v.push(
            path,
            "a direct exchange needs at least one routing key to bind the output's queue",
        ),
        (Some(keys), _) if keys.is_empty() => {
            v.push(path, "must not be empty; leave the field out to receive every message")
        }
        (Some(keys), _) if keys.len() > defaults::MAX_BINDINGS => v.push(
            path,
            format!("at most {} bindings, got {}", defaults::MAX_BINDINGS, keys.len()),
        ),
        (Some(keys), kind) => {
            for (j, key) in keys.iter().enumerate() {
                let key_path = format!("{path}[{j}]");
                if key.is_empty() || key.len() > 255 {
                    v.push(key_path, "must be 1 to 255 bytes long");
                } else if kind == ExchangeType::Headers
                    && let Err(e) = parse_header_binding(key)
                {
                    v.push(key_path, e);
                }
            }
        }
        (None, _) => {}
    }
}

/// Parses a headers-exchange binding `key=value[,key=value]` into its pairs.
pub fn parse_header_binding(binding: &str) -> Result<Vec<(String, String)>, String> {
    binding
        .split(',')
        .map(|pair| {
            let (k, val) = pair.split_once('=').ok_or_else(|| {
                format!("{binding:?}: expected key=value pairs separated by ',', e.g. level=critical,service=api")
            })?;
            let k = k.trim();
            if k.is_empty() || k.starts_with("x-") {
                return Err(format!(
                    "{binding:?}: header names must be non-empty and not start with \"x-\""
                ));
            }
            Ok((k.to_owned(), val.trim().to_owned()))
        })
        .collect()
}

fn check_backoff(v: &mut Collector, path: &str, backoff: &[Duration]) {
    if backoff.is_empty() {
        v.push(
            path,
            "backoff must list at least one delay (or leave it out for 1s, 10s, 60s)",
        );
    }
    if backoff.len() > defaults::MAX_BACKOFF_STEPS {
        v.push(
            path,
            format!(
                "at most {} steps, got {}",
                defaults::MAX_BACKOFF_STEPS,
                backoff.len()
            ),
        );
    }
    for (i, step) in backoff.iter().enumerate() {
        if step.is_zero() {
            v.push(format!("{path}[{i}]"), "must be longer than 0s");
        } else if step.as_std() > StdDuration::from_secs(24 * 3600) {
            v.push(format!("{path}[{i}]"), format!("{step} is longer than 24h"));
        }
    }
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn check_worker(v: &mut Collector, at: &str, o: &OutputSpec) {
    let Some(w) = &o.worker else {
        return;
    };
    let at = format!("{at}.worker");
    if w.prefetch == Some(0) {
        v.push(format!("{at}.prefetch"), "must be at least 1");
    }
    if let Some(c) = w.concurrency
        && !(1..=4096).contains(&c)
    {
        v.push(
            format!("{at}.concurrency"),
            format!("must be between 1 and 4096, got {c}"),
        );
    }
    let prefetch = w.prefetch.unwrap_or(defaults::PREFETCH);
    if let Some(batch) = &w.batch {
        match batch.max_messages {
            Some(0) => v.push(format!("{at}.batch.maxMessages"), "must be at least 1"),
            Some(n) if n > u32::from(prefetch) => v.push(
                format!("{at}.batch.maxMessages"),
                format!("{n} exceeds prefetch {prefetch}: a worker never holds more than prefetch messages"),
            ),
            _ => {}
        }
        if let Some(linger) = batch.linger
            && linger.as_std() > StdDuration::from_secs(60)
        {
            v.push(
                format!("{at}.batch.linger"),
                format!("{linger} is longer than 1m"),
            );
        }
    }
    if let Some(bytes) = w.max_message_bytes
        && !(1024..=128 * 1024 * 1024).contains(&bytes)
    {
        v.push(
            format!("{at}.maxMessageBytes"),
            format!("must be between 1024 and 134217728, got {bytes}"),
        );
    }
    if let Some(dedup) = &w.dedup {
        if let Some(window) = dedup.window
            && (window.as_std().is_zero() || window > defaults::MAX_DEDUP_WINDOW)
        {
            v.push(
                format!("{at}.dedup.window"),
                format!(
                    "must be longer than 0s and at most {}, got {window}",
                    defaults::MAX_DEDUP_WINDOW
                ),
            );
        }
        if let Some(capacity) = dedup.capacity
            && capacity > defaults::MAX_DEDUP_CAPACITY
        {
            v.push(
                format!("{at}.dedup.capacity"),
                format!(
                    "must be at most {}, got {capacity}",
                    defaults::MAX_DEDUP_CAPACITY
                ),
            );
        }
    }
    if w.image.as_deref() == Some("") {
        v.push(
            format!("{at}.image"),
            "must not be empty (leave it out for the operator's default)",
        );
    }
}

fn check_scaling(v: &mut Collector, at: &str, o: &OutputSpec) {
    if o.scaling.is_none() {
        return;
    }
    let at = format!("{at}.scaling");
    let s = o.scaling_settings();
    if s.max_replicas == 0 || s.max_replicas > 1000 {
        v.push(
            format!("{at}.maxReplicas"),
            format!("must be between 1 and 1000, got {}", s.max_replicas),
        );
    }
    if s.min_replicas > s.max_replicas {
        v.push(
            format!("{at}.maxReplicas"),
            format!(
                "maxReplicas ({}) must not be less than minReplicas ({})",
                s.max_replicas, s.min_replicas
            ),
        );
    }
    if s.target_backlog_per_replica == 0 {
        v.push(
            format!("{at}.targetBacklogPerReplica"),
            "must be at least 1",
        );
    }
    if s.max_message_age.is_zero() {
        v.push(format!("{at}.maxMessageAge"), "must be longer than 0s");
    }
    if s.poll_interval < defaults::MIN_POLL_INTERVAL {
        v.push(
            format!("{at}.pollInterval"),
            format!(
                "{} is shorter than the minimum {}",
                s.poll_interval,
                defaults::MIN_POLL_INTERVAL
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_pipeline;

    fn errors(name: &str, spec_yaml: &str) -> Vec<String> {
        let yaml = format!(
            "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {{name: {name}}}\nspec:\n{spec_yaml}"
        );
        let p = parse_pipeline(&yaml).unwrap();
        match p.validate() {
            Ok(()) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    const OUTPUT: &str = "  outputs:\n    - name: o\n      sink: {stdout: {}}\n";

    #[test]
    fn reserved_exchange_names_are_refused() {
        for (name, reason) in [
            ("amq.topic", "reserved by RabbitMQ"),
            ("logstream.x.y", "reserved for LogStream"),
        ] {
            let e = errors(
                "app",
                &format!(
                    "  broker: {{secretRef: {{name: r}}}}\n  exchange: {{name: {name}}}\n{OUTPUT}"
                ),
            );
            assert!(
                e.len() == 1 && e[0].starts_with("spec.exchange.name") && e[0].contains(reason),
                "{e:?}"
            );
        }
        // The pipeline's own default name, written out, is fine.
        let e = errors(
            "app",
            &format!(
                "  broker: {{secretRef: {{name: r}}}}\n  exchange: {{name: logstream.default.app}}\n{OUTPUT}"
            ),
        );
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn pipeline_name_must_be_a_dns_label_starting_with_a_letter() {
        for bad in ["1app", "my.app"] {
            let e = errors(
                bad,
                &format!("  broker: {{secretRef: {{name: r}}}}\n{OUTPUT}"),
            );
            assert!(
                e.iter().any(|m| m.starts_with("metadata.name")),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn broker_tls_names_its_secrets_and_never_skips_verification() {
        let e = errors(
            "app",
            &format!(
                "  broker: {{secretRef: {{name: r}}, tls: {{caSecretRef: {{name: \"\"}}, insecureSkipVerify: true}}}}\n{OUTPUT}"
            ),
        );
        assert_eq!(
            e,
            [
                "spec.broker.tls.caSecretRef.name: is required",
                "spec.broker.tls.insecureSkipVerify: is not supported for the broker: name the CA that signed its certificate in caSecretRef"
            ]
        );
        let ok = format!(
            "  broker: {{secretRef: {{name: r}}, tls: {{caSecretRef: {{name: r}}, clientCertSecretRef: {{name: c}}, insecureSkipVerify: false}}}}\n{OUTPUT}"
        );
        assert!(errors("app", &ok).is_empty());
    }

    #[test]
    fn missing_broker_credentials_are_refused() {
        let e = errors("app", &format!("  broker: {{vhost: /}}\n{OUTPUT}"));
        assert!(e[0].starts_with("spec.broker: set secretRef"), "{e:?}");
    }

    #[test]
    fn header_bindings_must_be_key_value_pairs() {
        assert_eq!(
            parse_header_binding("level=critical, service = api").unwrap(),
            [
                ("level".to_owned(), "critical".to_owned()),
                ("service".to_owned(), "api".to_owned())
            ]
        );
        assert!(parse_header_binding("critical").is_err());
        assert!(parse_header_binding("x-match=any").is_err());
        let e = errors(
            "app",
            "  broker: {secretRef: {name: r}}\n  exchange: {type: headers}\n  outputs:\n    - name: o\n      bindings: [\"level\"]\n      sink: {stdout: {}}\n",
        );
        assert!(e[0].starts_with("spec.outputs[0].bindings[0]"), "{e:?}");
    }

    #[test]
    fn batch_larger_than_prefetch_and_relative_file_paths_are_refused() {
        let e = errors(
            "app",
            "  broker: {secretRef: {name: r}}\n  outputs:\n    - name: o\n      sink: {file: {path: logs.jsonl}}\n      worker: {prefetch: 10, batch: {maxMessages: 11}}\n",
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("spec.outputs[0].sink.file.path"));
        assert!(e[1].starts_with("spec.outputs[0].worker.batch.maxMessages"));
    }

    fn http_sink_errors(http: &str) -> Vec<String> {
        errors(
            "app",
            &format!(
                "  broker: {{secretRef: {{name: r}}}}\n  outputs:\n    - name: o\n      sink: {{http: {http}}}\n"
            ),
        )
    }

    #[test]
    fn a_sink_url_with_credentials_is_refused_without_repeating_it() {
        for url in [
            "https://alice:s3cret@loki:3100/loki/api/v1/push",
            "https://alice@loki:3100/",
        ] {
            let e = http_sink_errors(&format!("{{url: \"{url}\"}}"));
            assert_eq!(e.len(), 1, "{e:?}");
            assert!(
                e[0].starts_with("spec.outputs[0].sink.http.url: must not carry credentials"),
                "{e:?}"
            );
            assert!(!e[0].contains("s3cret") && !e[0].contains("alice"), "{e:?}");
        }
        let e = http_sink_errors("{url: \"ftp://alice:s3cret@host/x\"}");
        assert!(!e[0].contains("s3cret"), "{e:?}");
        let e = http_sink_errors("{url: \"not a url with s3cret\"}");
        assert!(
            e[0].starts_with("spec.outputs[0].sink.http.url: is not a URL"),
            "{e:?}"
        );
        assert!(!e[0].contains("s3cret"), "{e:?}");
    }

    #[test]
    fn sink_headers_are_plain_header_names_and_never_credentials() {
        let e = http_sink_errors(
            "{url: \"https://loki/\", headers: {X-Scope-OrgID: tenant-a, Authorization: Basic x, content-type: text/plain, \"bad name\": v}}",
        );
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e.iter().any(|m| m.starts_with(
                "spec.outputs[0].sink.http.headers.Authorization: credentials belong in a Secret"
            )),
            "{e:?}"
        );
        assert!(
            e.iter().any(|m| m.starts_with(
                "spec.outputs[0].sink.http.headers.content-type: is set by the worker"
            )),
            "{e:?}"
        );
        assert!(
            e.iter().any(|m| m.starts_with(
                "spec.outputs[0].sink.http.headers.bad name: is not an HTTP header name"
            )),
            "{e:?}"
        );
    }

    #[test]
    fn sink_secrets_and_tls_are_checked() {
        let e = http_sink_errors(
            "{url: \"https://loki/\", auth: {secretRef: {name: Loki_Auth}}, tls: {caSecretRef: {name: ca}, insecureSkipVerify: true}}",
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("spec.outputs[0].sink.http.auth.secretRef.name"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("spec.outputs[0].sink.http.tls: caSecretRef has no effect"),
            "{e:?}"
        );
        let ok = http_sink_errors(
            "{url: \"https://loki/\", format: otlp, compression: gzip, auth: {secretRef: {name: loki-auth}}, headers: {X-Scope-OrgID: a}, headersFrom: {secretRef: {name: h}}, tls: {caSecretRef: {name: loki-ca}, clientCertSecretRef: {name: loki-client}}}",
        );
        assert!(ok.is_empty(), "{ok:?}");
    }

    #[test]
    fn a_dedup_window_of_zero_or_a_huge_capacity_is_refused() {
        let e = errors(
            "app",
            "  broker: {secretRef: {name: r}}\n  outputs:\n    - name: o\n      sink: {stdout: {}}\n      worker: {dedup: {window: 0s, capacity: 20000000, redis: {secretRef: {name: redis}}}}\n",
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("spec.outputs[0].worker.dedup.window"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("spec.outputs[0].worker.dedup.capacity"),
            "{e:?}"
        );
        assert!(
            errors(
                "app",
                "  broker: {secretRef: {name: r}}\n  outputs:\n    - name: o\n      sink: {stdout: {}}\n      worker: {dedup: {window: 1h, capacity: 0}}\n",
            )
            .is_empty()
        );
    }
}
