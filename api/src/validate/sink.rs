//! Checks of an output's sink: the HTTP sink's URL (never repeated: it may carry a password),
//! headers, Secrets and TLS.

use super::{Collector, is_dns_subdomain};
use crate::{
    duration::Duration,
    pipeline::{HttpSink, SinkSpec},
};

pub(super) fn check_sink(v: &mut Collector, at: &str, sink: &SinkSpec) {
    match sink {
        SinkSpec::Stdout(_) => {}
        SinkSpec::File(f) => {
            if !f.path.starts_with('/') || f.path.len() < 2 {
                v.push(
                    format!("{at}.sink.file.path"),
                    format!("{:?} must be an absolute file path", f.path),
                );
            }
        }
        SinkSpec::Http(h) => check_http_sink(v, &format!("{at}.sink.http"), h),
    }
}

/// Headers the worker sets itself on every request: a user's value would be overwritten or
/// break the request.
const WORKER_SET_HEADERS: [&str; 4] =
    ["content-type", "content-encoding", "content-length", "host"];

/// The HTTP sink. No message repeats the URL: it may carry a password, and the messages end up
/// in the pipeline's status and Events.
fn check_http_sink(v: &mut Collector, at: &str, h: &HttpSink) {
    let url_path = format!("{at}.url");
    match url::Url::parse(&h.url) {
        Ok(u) if !u.username().is_empty() || u.password().is_some() => v.push(
            url_path,
            "must not carry credentials (user:password@): put them in a Secret and name it in auth.secretRef",
        ),
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
        Ok(u) => v.push(
            url_path,
            format!(
                "scheme must be http or https, with a host; got {}",
                if matches!(u.scheme(), "http" | "https") {
                    "no host".to_owned()
                } else {
                    format!("{:?}", u.scheme())
                }
            ),
        ),
        Err(e) => v.push(url_path, format!("is not a URL ({e})")),
    }
    if h.timeout.is_some_and(Duration::is_zero) {
        v.push(format!("{at}.timeout"), "must be longer than 0s");
    }
    for (path, secret) in [
        (
            "auth.secretRef.name",
            h.auth.as_ref().map(|a| &a.secret_ref),
        ),
        (
            "headersFrom.secretRef.name",
            h.headers_from.as_ref().map(|a| &a.secret_ref),
        ),
        (
            "tls.caSecretRef.name",
            h.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref()),
        ),
        (
            "tls.clientCertSecretRef.name",
            h.tls
                .as_ref()
                .and_then(|t| t.client_cert_secret_ref.as_ref()),
        ),
    ] {
        if secret.is_some_and(|s| !is_dns_subdomain(&s.name)) {
            v.push(
                format!("{at}.{path}"),
                "must be the name of a Secret (lowercase letters, digits, '-' and '.')",
            );
        }
    }
    if let Some(tls) = &h.tls
        && tls.ca_secret_ref.is_some()
        && tls.insecure_skip_verify == Some(true)
    {
        v.push(
            format!("{at}.tls"),
            "caSecretRef has no effect with insecureSkipVerify: true; set one of them",
        );
    }
    for (name, value) in h.headers.iter().flatten() {
        let path = format!("{at}.headers.{name}");
        if !is_header_name(name) {
            v.push(
                path,
                "is not an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)",
            );
        } else if name.eq_ignore_ascii_case("authorization") {
            v.push(
                path,
                "credentials belong in a Secret: use auth.secretRef (basic or bearer) or headersFrom",
            );
        } else if WORKER_SET_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            v.push(
                path,
                "is set by the worker (use format and compression to choose the body)",
            );
        } else if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            v.push(path, "the value must be one line");
        }
    }
}

/// An RFC 7230 token: what an HTTP header name may be made of.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
