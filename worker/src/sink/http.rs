//! The HTTP sink: each batch is one POST, as a JSON array, NDJSON, a Loki push, an
//! Elasticsearch bulk request or an OTLP/HTTP export request, gzip-compressed when asked.
//!
//! 2xx means written (for Elasticsearch per item as the bulk answer says, for OTLP as its
//! partial success says); 408, 429, 5xx, timeouts and connections that fail are transient;
//! other statuses are permanent. Credentials come from Secrets ([`super::http_client`]), never
//! from the URL, and are never shown.

use std::collections::BTreeMap;

use futures::{FutureExt, future::BoxFuture};
use logstream_api::{
    pipeline::{Compression, HttpFormat, HttpSink as HttpSinkSpec},
    worker_config::{SecretFiles, SecretUse},
};
use reqwest::{
    Client, Url,
    header::{CONTENT_ENCODING, CONTENT_TYPE},
};
use tracing::warn;

use super::{
    Sink, SinkError, SinkFailure, SinkLabels, WriteOutcome,
    classify::{StatusClass, http_status, transport_failure},
    format, http_client, otlp,
};
use crate::delivery::envelope::LogRecord;

/// Most bytes of an error answer quoted in `x-logstream-error`.
const QUOTED_BODY_BYTES: usize = 256;

/// POSTs batches to an HTTP endpoint.
#[derive(Debug)]
pub struct HttpSink {
    client: Client,
    url: Url,
    shown: String,
    format: HttpFormat,
    compression: Compression,
    labels: SinkLabels,
    /// Elasticsearch: the index each action names, when the URL names none.
    index: Option<String>,
}

impl HttpSink {
    /// A sink for `spec`, with the Secrets it names read from `secrets`; fails when the URL is
    /// not http(s) or carries credentials, or a Secret is missing or unusable.
    pub fn new(
        spec: &HttpSinkSpec,
        labels: SinkLabels,
        secrets: &BTreeMap<SecretUse, SecretFiles>,
    ) -> Result<Self, SinkError> {
        let mut url = Url::parse(&spec.url).map_err(|e| SinkError::Url {
            url: redact_text(&spec.url),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(SinkError::Url {
                url: redact(&url),
                reason: "expected an http:// or https:// URL with a host".into(),
            });
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(SinkError::Url {
                url: redact(&url),
                reason: "credentials in the URL are not accepted: name a Secret in auth.secretRef"
                    .into(),
            });
        }
        if spec.format() == HttpFormat::Otlp && matches!(url.path(), "" | "/") {
            url.set_path(otlp::LOGS_PATH);
        }
        let client = http_client::build(spec, secrets)?;
        let index = (spec.format() == HttpFormat::Elasticsearch && !names_index(&url))
            .then(|| format::default_index(&labels));
        Ok(Self {
            client,
            shown: redact(&url),
            url,
            format: spec.format(),
            compression: spec.compression(),
            labels,
            index,
        })
    }

    fn body(&self, batch: &[LogRecord]) -> (Vec<u8>, &'static str) {
        match self.format {
            HttpFormat::Otlp => (
                otlp::export_request(batch, &self.labels),
                logstream_api::otlp::CONTENT_TYPE,
            ),
            HttpFormat::Json => (format::json_array(batch), "application/json"),
            HttpFormat::Ndjson => (format::ndjson(batch), "application/x-ndjson"),
            HttpFormat::Loki => (format::loki(batch, &self.labels), "application/json"),
            HttpFormat::Elasticsearch => (
                format::elasticsearch_bulk(batch, self.index.as_deref()),
                "application/x-ndjson",
            ),
        }
    }

    async fn post(&self, batch: &[LogRecord]) -> WriteOutcome {
        let (body, content_type) = self.body(batch);
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, content_type);
        request = match self.compression {
            Compression::None => request.body(body),
            Compression::Gzip => request
                .header(CONTENT_ENCODING, "gzip")
                .body(format::gzip(&body)),
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                return WriteOutcome::Failed(SinkFailure {
                    class: transport_failure(e.is_builder()),
                    reason: format!(
                        "failed to POST to {}: {}",
                        self.shown,
                        describe(&e.without_url())
                    ),
                    status: None,
                });
            }
        };
        let status = response.status();
        match http_status(status.as_u16()) {
            StatusClass::Written if self.format == HttpFormat::Elasticsearch => {
                match response.bytes().await {
                    Ok(answer) => match format::elasticsearch_items(&answer, batch.len()) {
                        Ok(items) if items.iter().all(Option::is_none) => WriteOutcome::Written,
                        Ok(items) => WriteOutcome::PerItem(items),
                        Err(failure) => WriteOutcome::Failed(failure),
                    },
                    Err(e) => WriteOutcome::Failed(SinkFailure::transient(format!(
                        "failed to read the bulk answer of {}: {}",
                        self.shown,
                        chain(&e.without_url())
                    ))),
                }
            }
            StatusClass::Written if self.format == HttpFormat::Otlp => {
                let answer = response.bytes().await.unwrap_or_default();
                match otlp::settle(&answer, batch.len()) {
                    Ok(None) => WriteOutcome::Written,
                    Ok(Some(items)) => WriteOutcome::PerItem(items),
                    Err(warning) => {
                        warn!(sink = %self.shown, "the OTLP endpoint stored every log and warned: {warning}");
                        WriteOutcome::Written
                    }
                }
            }
            StatusClass::Written => WriteOutcome::Written,
            StatusClass::Failed(class) => {
                let answer = response.bytes().await.unwrap_or_default();
                let quoted =
                    String::from_utf8_lossy(&answer[..answer.len().min(QUOTED_BODY_BYTES)])
                        .trim()
                        .to_owned();
                WriteOutcome::Failed(SinkFailure {
                    class,
                    reason: format!("{} answered {status}: {quoted}", self.shown),
                    status: Some(status.as_u16()),
                })
            }
        }
    }
}

impl Sink for HttpSink {
    fn write<'a>(&'a self, batch: &'a [LogRecord]) -> BoxFuture<'a, WriteOutcome> {
        self.post(batch).boxed()
    }

    fn kind(&self) -> &'static str {
        "http"
    }
}

/// True when a bulk URL names its index: `/<index>/_bulk`.
fn names_index(url: &Url) -> bool {
    let segments: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    matches!(segments.as_slice(), [.., index, "_bulk"] if !index.starts_with('_'))
}

/// A request that got no answer, in one line: a TLS failure says so and what to check.
fn describe(e: &reqwest::Error) -> String {
    let text = chain(e);
    let tls = ["certificate", "tls", "handshake", "CertificateRequired"]
        .iter()
        .any(|w| text.to_ascii_lowercase().contains(&w.to_ascii_lowercase()));
    if !tls {
        return text;
    }
    // rustls' own words, without reqwest's and hyper's wrapping ("error sending request:
    // client error (Connect): ...").
    let cause = match text.find("invalid peer certificate") {
        Some(at) => &text[at..],
        None => text.rsplit(": ").next().unwrap_or(&text),
    };
    let hint = if text.contains("UnknownIssuer") || text.contains("invalid peer certificate") {
        " (the server's certificate is not signed by a trusted CA: check tls.caSecretRef)"
    } else if text.contains("NotValidForName") {
        " (the server's certificate does not name the URL's host)"
    } else if text.contains("CertificateRequired") || text.contains("certificate required") {
        " (the server wants a client certificate: check tls.clientCertSecretRef)"
    } else {
        ""
    };
    format!("TLS handshake failed: {cause}{hint}")
}

/// An error with its causes (`error sending request: ... : Connection refused`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The URL without its password.
fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

/// A URL that did not parse, cut before any `@` so that no password shows.
fn redact_text(raw: &str) -> String {
    match raw.rfind('@') {
        Some(at) => format!("***{}", &raw[at..]),
        None => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> HttpSinkSpec {
        HttpSinkSpec {
            url: url.into(),
            ..Default::default()
        }
    }

    fn sink(spec: &HttpSinkSpec, labels: SinkLabels) -> Result<HttpSink, SinkError> {
        HttpSink::new(spec, labels, &BTreeMap::new())
    }

    #[test]
    fn only_http_urls_with_a_host_are_accepted() {
        for bad in [
            "ftp://host/x",
            "http//missing-colon",
            "unix:/var/run/x.sock",
        ] {
            assert!(sink(&spec(bad), SinkLabels::default()).is_err(), "{bad}");
        }
        assert!(sink(&spec("https://es:9200/logs/_bulk"), SinkLabels::default()).is_ok());
    }

    #[test]
    fn bulk_urls_without_an_index_get_the_outputs_index() {
        let es = |url: &str| HttpSinkSpec {
            url: url.into(),
            format: Some(HttpFormat::Elasticsearch),
            ..Default::default()
        };
        let labels = SinkLabels {
            namespace: "ns".into(),
            pipeline: "app".into(),
            output: "errors".into(),
        };
        let index = |url| sink(&es(url), labels.clone()).unwrap().index;
        assert_eq!(
            index("http://es:9200/_bulk").as_deref(),
            Some("logstream-ns-app-errors")
        );
        assert_eq!(index("http://es:9200/logs/_bulk"), None);
        assert_eq!(index("http://proxy/es/logs/_bulk/"), None);
        assert!(
            sink(&spec("http://h/_bulk"), labels)
                .unwrap()
                .index
                .is_none()
        );
    }

    #[test]
    fn urls_with_credentials_are_refused_and_never_shown() {
        for url in [
            "http://user:s3cret@loki:3100/loki/api/v1/push",
            "ftp://user:s3cret@host/",
        ] {
            let err = sink(&spec(url), SinkLabels::default())
                .unwrap_err()
                .to_string();
            assert!(!err.contains("s3cret"), "{err}");
        }
        assert_eq!(redact_text("nonsense://u:s3cret@h"), "***@h");
    }

    #[test]
    fn an_otlp_url_without_a_path_gets_v1_logs() {
        let otlp = |url: &str| HttpSinkSpec {
            url: url.into(),
            format: Some(HttpFormat::Otlp),
            ..Default::default()
        };
        let url = |u| {
            sink(&otlp(u), SinkLabels::default())
                .unwrap()
                .url
                .to_string()
        };
        assert_eq!(
            url("http://collector:4318"),
            "http://collector:4318/v1/logs"
        );
        assert_eq!(
            url("http://collector:4318/"),
            "http://collector:4318/v1/logs"
        );
        assert_eq!(url("http://gw/otlp/v1/logs"), "http://gw/otlp/v1/logs");
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient() {
        // A port that was free a moment ago: nothing listens there any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/");
        let sink = sink(&spec(&url), SinkLabels::default()).unwrap();
        let record = LogRecord {
            json: "{}".into(),
            level: logstream_api::contract::Level::Info,
            service: "s".into(),
            ts: jiff::Timestamp::UNIX_EPOCH,
            id: "i".into(),
        };
        match sink.write(std::slice::from_ref(&record)).await {
            WriteOutcome::Failed(f) => {
                assert_eq!(f.class, logstream_api::contract::ErrorClass::Transient);
                assert!(
                    f.reason.starts_with(&format!("failed to POST to {url}: ")),
                    "{}",
                    f.reason
                );
                assert!(
                    f.reason.contains("refused"),
                    "the cause is shown: {}",
                    f.reason
                );
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
