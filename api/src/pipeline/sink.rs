//! Where an output's worker writes logs: the `sink` of a `LogPipeline` output.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{LocalObjectRef, field_doc_wins};
use crate::duration::Duration;

/// Where an output's worker writes logs.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum SinkSpec {
    /// JSON lines on the worker's standard output.
    Stdout(StdoutSink),
    /// JSON lines appended to a file in the worker's filesystem.
    File(FileSink),
    /// Batches POSTed to an HTTP endpoint.
    Http(HttpSink),
}

/// JSON lines on standard output; no settings.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct StdoutSink {}

/// JSON lines appended to a file.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct FileSink {
    /// Absolute path of the file.
    #[schemars(length(min = 2, max = 4096))]
    pub path: String,
}

/// Batches POSTed to an HTTP endpoint.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HttpSink {
    /// Endpoint URL (`http://` or `https://`), without credentials: a URL with user info
    /// (`user:password@`) is refused; name a Secret in `auth` instead. With `format: otlp`, a
    /// URL without a path gets `/v1/logs`.
    #[schemars(length(min = 8, max = 2048))]
    #[x_kube(validation = Rule::new("!self.matches('^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@')").message("the URL must not carry credentials (user:password@): put them in a Secret and name it in auth.secretRef"))]
    pub url: String,

    /// Body format: `json` (array), `ndjson`, `loki` (push API), `elasticsearch` (bulk API,
    /// `_id` = message id) or `otlp` (OTLP/HTTP logs, protobuf). Default `json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<HttpFormat>,

    /// How long one request may take before it counts as a transient failure. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,

    /// Request body compression: `none` or `gzip` (sent with `Content-Encoding: gzip`).
    /// Default `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,

    /// Credentials sent with every request, from a Secret: keys `username` and `password`
    /// (basic auth), or `token` (bearer token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<HttpAuth>,

    /// Headers sent with every request, e.g. `{X-Scope-OrgID: tenant-a}` for a multi-tenant
    /// Loki. Not for credentials: `Authorization` belongs in `auth`, secret headers in
    /// `headersFrom`. `Content-Type`, `Content-Encoding`, `Content-Length` and `Host` are set
    /// by the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 32))]
    pub headers: Option<std::collections::BTreeMap<String, String>>,

    /// Headers whose values are secret: each key of the Secret is a header name, its value the
    /// header's value. A header named here and in `headers` takes the Secret's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_from: Option<HeadersFrom>,

    /// TLS settings of `https://` URLs: the CA the server's certificate is checked against
    /// and the client certificate to show. Default: the system's trusted CAs, no client
    /// certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<HttpTls>,
}

/// Credentials of an HTTP sink.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HttpAuth {
    /// A Secret in the pipeline's namespace with keys `username` and `password` (basic auth)
    /// or `token` (`Authorization: Bearer <token>`). It reaches the worker as files, never
    /// through its ConfigMap.
    pub secret_ref: LocalObjectRef,
}

/// Headers of an HTTP sink taken from a Secret.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HeadersFrom {
    /// A Secret in the pipeline's namespace: each key is a header name, each value its value.
    pub secret_ref: LocalObjectRef,
}

/// TLS of an HTTP sink. Secrets use the keys cert-manager writes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.caSecretRef) && has(self.insecureSkipVerify) && self.insecureSkipVerify)").message("caSecretRef has no effect with insecureSkipVerify: true; set one of them"))]
pub struct HttpTls {
    /// A Secret whose key `ca.crt` (PEM) holds the CA certificates the server's certificate is
    /// checked against, instead of the system's trusted CAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<LocalObjectRef>,

    /// A Secret with the client certificate shown to the server (mutual TLS): keys `tls.crt`
    /// and `tls.key` (PEM), as a `kubernetes.io/tls` Secret holds them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret_ref: Option<LocalObjectRef>,

    /// Accept any server certificate, unchecked. For tests only: anyone on the path can read
    /// and change the logs. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// Body formats of the HTTP sink.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
#[schemars(transform = field_doc_wins)]
pub enum HttpFormat {
    /// A JSON array of log objects.
    #[default]
    Json,
    /// One JSON object per line.
    Ndjson,
    /// Grafana Loki push API (`/loki/api/v1/push`).
    Loki,
    /// Elasticsearch / OpenSearch bulk API (`/_bulk`).
    Elasticsearch,
    /// OTLP/HTTP logs: one protobuf `ExportLogsServiceRequest` per batch (`/v1/logs`).
    Otlp,
}

/// Compression of HTTP request bodies.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
#[schemars(transform = field_doc_wins)]
pub enum Compression {
    /// Bodies are sent as they are.
    #[default]
    None,
    /// Bodies are gzip-compressed (`Content-Encoding: gzip`).
    Gzip,
}
