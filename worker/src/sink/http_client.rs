//! The HTTP sink's client: its timeout, the headers sent with every request (plain ones, the
//! ones of `headersFrom`, and the `Authorization` of `auth`), and its TLS (the CA of
//! `tls.caSecretRef`, the client certificate of `tls.clientCertSecretRef`). Secret values are
//! read from their files once, at start, and never shown: errors name the Secret and the key.

use std::collections::BTreeMap;

use base64::Engine;
use logstream_api::{
    pipeline::HttpSink as HttpSinkSpec,
    worker_config::{SecretFiles, SecretUse},
};
use reqwest::{
    Certificate, Client, Identity,
    header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue},
};

use super::SinkError;
use crate::secrets::{self, SecretError};

/// Key of a basic-auth user name in the `auth` Secret.
pub const KEY_USERNAME: &str = "username";
/// Key of a basic-auth password in the `auth` Secret.
pub const KEY_PASSWORD: &str = "password";
/// Key of a bearer token in the `auth` Secret.
pub const KEY_TOKEN: &str = "token";
/// Key of the CA certificates (PEM) in the `tls.caSecretRef` Secret, as cert-manager writes it.
pub const KEY_CA: &str = "ca.crt";
/// Key of the client certificate (PEM) in the `tls.clientCertSecretRef` Secret.
pub const KEY_CERT: &str = "tls.crt";
/// Key of the client certificate's private key (PEM).
pub const KEY_KEY: &str = "tls.key";

/// Builds the client of `spec`, reading the Secrets it names from `secrets`.
pub fn build(
    spec: &HttpSinkSpec,
    secrets: &BTreeMap<SecretUse, SecretFiles>,
) -> Result<Client, SinkError> {
    let secret = |use_: SecretUse, field: &str| -> Result<Option<&SecretFiles>, SinkError> {
        let named = match use_ {
            SecretUse::SinkAuth => spec.auth.is_some(),
            SecretUse::SinkHeaders => spec.headers_from.is_some(),
            SecretUse::SinkCa => spec.tls.as_ref().is_some_and(|t| t.ca_secret_ref.is_some()),
            _ => spec
                .tls
                .as_ref()
                .is_some_and(|t| t.client_cert_secret_ref.is_some()),
        };
        match (named, secrets.get(&use_)) {
            (false, _) => Ok(None),
            (true, Some(files)) => Ok(Some(files)),
            (true, None) => Err(SinkError::Secret(format!(
                "sink.http.{field} names a Secret, but the configuration's secrets has no {} entry",
                use_.as_str()
            ))),
        }
    };

    let mut headers = HeaderMap::new();
    for (name, value) in spec.headers.iter().flatten() {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            SinkError::Secret(format!(
                "sink.http.headers: {name:?} is not an HTTP header name"
            ))
        })?;
        let value = HeaderValue::from_str(value).map_err(|_| {
            SinkError::Secret(format!(
                "sink.http.headers: the value of {name} is not one line of text"
            ))
        })?;
        headers.insert(name, value);
    }
    if let Some(files) = secret(SecretUse::SinkHeaders, "headersFrom")? {
        for (key, value) in secrets::read_all(files)? {
            let name = HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
                SinkError::Secret(format!(
                    "key {key} of Secret {} is not an HTTP header name",
                    files.secret
                ))
            })?;
            headers.insert(name, sensitive(&value, files, &key)?);
        }
    }
    if let Some(files) = secret(SecretUse::SinkAuth, "auth")? {
        headers.insert(AUTHORIZATION, authorization(files)?);
    }

    let mut builder = Client::builder()
        .timeout(spec.timeout().as_std())
        .default_headers(headers);
    if let Some(files) = secret(SecretUse::SinkCa, "tls.caSecretRef")? {
        let pem = secrets::read_bytes(files, KEY_CA)?;
        let certs = Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                SinkError::Secret(format!(
                    "key {KEY_CA} of Secret {} holds no PEM certificate",
                    files.secret
                ))
            })?;
        // Only this CA: naming one means the server's certificate comes from it.
        builder = builder.tls_certs_only(certs);
    }
    if let Some(files) = secret(SecretUse::SinkClientCert, "tls.clientCertSecretRef")? {
        let mut pem = secrets::read_bytes(files, KEY_CERT)?;
        pem.push(b'\n');
        pem.extend(secrets::read_bytes(files, KEY_KEY)?);
        let identity = Identity::from_pem(&pem).map_err(|_| {
            SinkError::Secret(format!(
                "keys {KEY_CERT} and {KEY_KEY} of Secret {} are not a PEM certificate and its private key",
                files.secret
            ))
        })?;
        builder = builder.identity(identity);
    }
    if spec.insecure_skip_verify() {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    builder
        .build()
        .map_err(|e| SinkError::Client(e.to_string()))
}

/// The `Authorization` header of the `auth` Secret: `Basic` from `username` and `password`,
/// or `Bearer` from `token`.
fn authorization(files: &SecretFiles) -> Result<HeaderValue, SinkError> {
    let token = secrets::read_optional(files, KEY_TOKEN)?;
    let username = secrets::read_optional(files, KEY_USERNAME)?;
    let value = match (token, username) {
        (Some(_), Some(_)) => {
            return Err(SinkError::Secret(format!(
                "Secret {} has both {KEY_TOKEN} and {KEY_USERNAME}: keep {KEY_TOKEN} for a bearer token, or {KEY_USERNAME} and {KEY_PASSWORD} for basic auth",
                files.secret
            )));
        }
        (Some(token), None) => format!("Bearer {token}"),
        (None, Some(username)) => {
            let password = secrets::read_text(files, KEY_PASSWORD)?;
            let pair = format!("{username}:{password}");
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        }
        (None, None) => {
            return Err(SinkError::Secret(format!(
                "Secret {} has neither {KEY_USERNAME} and {KEY_PASSWORD} (basic auth) nor {KEY_TOKEN} (bearer token)",
                files.secret
            )));
        }
    };
    sensitive(&value, files, "auth")
}

/// A header value that is never shown (reqwest and `Debug` print `Sensitive`).
fn sensitive(value: &str, files: &SecretFiles, key: &str) -> Result<HeaderValue, SinkError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| {
        SinkError::Secret(format!(
            "the value of key {key} of Secret {} is not one line of text",
            files.secret
        ))
    })?;
    value.set_sensitive(true);
    Ok(value)
}

impl From<SecretError> for SinkError {
    fn from(e: SecretError) -> Self {
        Self::Secret(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use logstream_api::pipeline::{HttpAuth, LocalObjectRef};

    use super::*;
    use crate::secrets::secret_dir;

    #[test]
    fn basic_and_bearer_come_from_the_auth_secret_and_are_sensitive() {
        let basic = secret_dir("basic", &[("username", "alice"), ("password", "s3cret\n")]);
        let value = authorization(&basic).unwrap();
        assert!(value.is_sensitive());
        assert_eq!(value.to_str().unwrap(), "Basic YWxpY2U6czNjcmV0");
        let bearer = secret_dir("bearer", &[("token", "t0ken")]);
        assert_eq!(
            authorization(&bearer).unwrap().to_str().unwrap(),
            "Bearer t0ken"
        );
        let both = secret_dir("both", &[("token", "t0ken"), ("username", "alice")]);
        let err = authorization(&both).unwrap_err().to_string();
        assert!(
            err.contains("both token and username") && !err.contains("t0ken"),
            "{err}"
        );
        let none = secret_dir("none", &[("user", "alice")]);
        assert!(
            authorization(&none)
                .unwrap_err()
                .to_string()
                .contains("has neither")
        );
        let no_password = secret_dir("nopass", &[("username", "alice")]);
        let err = authorization(&no_password).unwrap_err().to_string();
        assert!(
            err.contains("failed to read key password of Secret nopass"),
            "{err}"
        );
        for f in [basic, bearer, both, none, no_password] {
            std::fs::remove_dir_all(f.dir).unwrap();
        }
    }

    #[test]
    fn a_secret_the_spec_names_must_be_in_the_configuration() {
        let spec = HttpSinkSpec {
            url: "https://loki/".into(),
            auth: Some(HttpAuth {
                secret_ref: LocalObjectRef {
                    name: "loki-auth".into(),
                },
            }),
            ..Default::default()
        };
        let err = build(&spec, &BTreeMap::new()).unwrap_err().to_string();
        assert!(err.contains("sink.http.auth names a Secret"), "{err}");
        let ca = secret_dir("ca", &[("ca.crt", "not a certificate")]);
        let spec = HttpSinkSpec {
            url: "https://loki/".into(),
            tls: Some(logstream_api::pipeline::HttpTls {
                ca_secret_ref: Some(LocalObjectRef { name: "ca".into() }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = build(&spec, &BTreeMap::from([(SecretUse::SinkCa, ca.clone())]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("key ca.crt of Secret ca holds no PEM certificate"),
            "{err}"
        );
        std::fs::remove_dir_all(ca.dir).unwrap();
    }
}
