//! Invalid manifests are refused with a message that names the field — by LogStream's own
//! validation (what `logstream dev` and the operator report) and by the committed CRD's schema
//! and CEL rules (what `kubectl apply` reports).

mod common;

use logstream_api::manifest::parse_pipeline;

const VALID: &str = r#"
apiVersion: logstream.io/v1alpha1
kind: LogPipeline
metadata: {name: app, namespace: prod}
spec:
  broker: {secretRef: {name: rabbitmq}}
  exchange: {type: topic}
  outputs:
    - name: main
      retry: {maxAttempts: 3, backoff: [1s, 5s]}
      sink: {stdout: {}}
      scaling: {minReplicas: 1, maxReplicas: 4}
"#;

/// LogStream's verdict on `yaml`: the parse error or the validation errors, as text.
fn logstream_verdict(yaml: &str) -> String {
    match parse_pipeline(yaml) {
        Err(e) => e.to_string(),
        Ok(p) => p
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default(),
    }
}

fn api_server_verdict(yaml: &str) -> String {
    let docs = common::pipeline_documents(yaml);
    common::api_server_rejections(&docs[0]).join("; ")
}

/// Asserts that both verdicts refuse `yaml` and mention every `needle`.
fn assert_refused(yaml: &str, ours: &[&str], api_server: &[&str]) {
    let verdict = logstream_verdict(yaml);
    assert!(!verdict.is_empty(), "LogStream accepted:\n{yaml}");
    for needle in ours {
        assert!(
            verdict.contains(needle),
            "LogStream's error {verdict:?} does not mention {needle:?}"
        );
    }
    let verdict = api_server_verdict(yaml);
    assert!(!verdict.is_empty(), "the CRD schema accepted:\n{yaml}");
    for needle in api_server {
        assert!(
            verdict.contains(needle),
            "the CRD's error {verdict:?} does not mention {needle:?}"
        );
    }
}

#[test]
fn the_base_manifest_is_valid() {
    assert_eq!(logstream_verdict(VALID), "");
    assert_eq!(api_server_verdict(VALID), "");
}

#[test]
fn max_replicas_below_min_is_refused() {
    let yaml = VALID.replace(
        "{minReplicas: 1, maxReplicas: 4}",
        "{minReplicas: 5, maxReplicas: 2}",
    );
    assert_refused(
        &yaml,
        &[
            "spec.outputs[0].scaling.maxReplicas",
            "must not be less than minReplicas",
        ],
        &[
            "spec.outputs[0].scaling",
            "minReplicas must not exceed maxReplicas",
        ],
    );
}

#[test]
fn min_replicas_above_the_default_max_is_refused() {
    let yaml = VALID.replace("{minReplicas: 1, maxReplicas: 4}", "{minReplicas: 11}");
    assert_refused(
        &yaml,
        &["spec.outputs[0].scaling.maxReplicas", "(10)", "(11)"],
        &["minReplicas must not exceed maxReplicas"],
    );
    // The CEL rule spells out the defaults; this keeps it in step with defaults.rs.
    let at_default = VALID.replace("{minReplicas: 1, maxReplicas: 4}", "{minReplicas: 10}");
    assert_eq!(api_server_verdict(&at_default), "");
    assert_eq!(logstream_verdict(&at_default), "");
}

#[test]
fn empty_backoff_is_refused() {
    let yaml = VALID.replace("backoff: [1s, 5s]", "backoff: []");
    assert_refused(
        &yaml,
        &["spec.outputs[0].retry.backoff", "at least one delay"],
        &[
            "spec.outputs[0].retry.backoff",
            "backoff must list at least one delay",
        ],
    );
}

#[test]
fn duplicate_output_names_are_refused() {
    let yaml = format!("{VALID}    - name: main\n      sink: {{stdout: {{}}}}\n");
    assert_refused(
        &yaml,
        &["spec.outputs[1].name", "duplicate output name \"main\""],
        &["spec.outputs", "output names must be unique"],
    );
}

#[test]
fn unknown_exchange_type_is_refused() {
    let yaml = VALID.replace("{type: topic}", "{type: banana}");
    assert_refused(
        &yaml,
        &["spec.exchange.type", "banana"],
        &["spec.exchange.type", "banana"],
    );
}

#[test]
fn output_name_too_long_is_refused() {
    let long = "o".repeat(41);
    let yaml = VALID.replace("name: main", &format!("name: {long}"));
    assert_refused(
        &yaml,
        &["spec.outputs[0].name", "at most 40"],
        &["spec.outputs[0].name", "longer than 40"],
    );
}

#[test]
fn pipeline_and_output_names_too_long_together_are_refused() {
    let yaml = VALID
        .replace("name: app,", &format!("name: {},", "p".repeat(30)))
        .replace("name: main", &format!("name: {}", "o".repeat(33)));
    assert_refused(
        &yaml,
        &["spec.outputs[0].name", "must fit in 63"],
        &["metadata.name and each outputs[].name"],
    );
}

#[test]
fn broker_needs_exactly_one_credential_source() {
    let yaml = VALID.replace(
        "{secretRef: {name: rabbitmq}}",
        "{secretRef: {name: a}, clusterRef: {name: b}}",
    );
    assert_refused(
        &yaml,
        &["spec.broker", "exactly one of secretRef and clusterRef"],
        &["spec.broker", "set exactly one of secretRef and clusterRef"],
    );
}

#[test]
fn fanout_with_bindings_is_refused_by_logstream() {
    let yaml = VALID.replace("{type: topic}", "{type: fanout}").replace(
        "- name: main\n",
        "- name: main\n      bindings: [\"a.b\"]\n",
    );
    let verdict = logstream_verdict(&yaml);
    assert!(
        verdict.contains("spec.outputs[0].bindings") && verdict.contains("fanout"),
        "{verdict}"
    );
}

#[test]
fn malformed_durations_and_urls_are_refused() {
    let yaml = VALID.replace("backoff: [1s, 5s]", "backoff: [1s, soon]");
    assert_refused(
        &yaml,
        &["spec.outputs[0].retry.backoff[1]", "soon"],
        &["spec.outputs[0].retry.backoff[1]"],
    );

    let yaml = VALID.replace("{stdout: {}}", "{http: {url: \"ftp://logs.example\"}}");
    let verdict = logstream_verdict(&yaml);
    assert!(
        verdict.contains("spec.outputs[0].sink.http.url") && verdict.contains("http or https"),
        "{verdict}"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let yaml = VALID
        .replace(
            "{minReplicas: 1, maxReplicas: 4}",
            "{minReplicas: 5, maxReplicas: 2, pollInterval: 10ms}",
        )
        .replace("backoff: [1s, 5s]", "backoff: []");
    let p = parse_pipeline(&yaml).unwrap();
    let errors = p.validate().unwrap_err();
    let paths: Vec<_> = errors.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.outputs[0].retry.backoff",
            "spec.outputs[0].scaling.maxReplicas",
            "spec.outputs[0].scaling.pollInterval"
        ]
    );
}

#[test]
fn a_sink_url_with_credentials_is_refused_without_repeating_the_password() {
    let yaml = VALID.replace(
        "sink: {stdout: {}}",
        "sink: {http: {url: \"https://alice:s3cret@loki:3100/loki/api/v1/push\"}}",
    );
    assert_refused(
        &yaml,
        &[
            "spec.outputs[0].sink.http.url",
            "must not carry credentials",
        ],
        &[
            "spec.outputs[0].sink.http.url",
            "must not carry credentials",
        ],
    );
    assert!(!logstream_verdict(&yaml).contains("s3cret"));
    assert!(!api_server_verdict(&yaml).contains("s3cret"));
}

#[test]
fn a_ca_with_insecure_skip_verify_is_refused() {
    let yaml = VALID.replace(
        "sink: {stdout: {}}",
        "sink: {http: {url: \"https://loki/\", tls: {caSecretRef: {name: ca}, insecureSkipVerify: true}}}",
    );
    assert_refused(
        &yaml,
        &["spec.outputs[0].sink.http.tls", "caSecretRef has no effect"],
        &["caSecretRef has no effect"],
    );
}

#[test]
fn a_sink_with_secrets_tls_headers_otlp_and_gzip_is_valid() {
    let yaml = VALID.replace(
        "sink: {stdout: {}}",
        "sink: {http: {url: \"https://otel:4318\", format: otlp, compression: gzip, auth: {secretRef: {name: a}}, headers: {X-Scope-OrgID: t}, headersFrom: {secretRef: {name: h}}, tls: {caSecretRef: {name: ca}, clientCertSecretRef: {name: c}}}}",
    );
    assert_eq!(logstream_verdict(&yaml), "");
    assert_eq!(api_server_verdict(&yaml), "");
}
