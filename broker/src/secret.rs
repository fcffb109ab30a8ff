//! The broker Secret, whatever its shape: `uri` (with optional `managementUri`), or
//! `host`/`username`/`password` (with optional `port` and `managementUri`), which is also the
//! shape of a RabbitmqCluster's `<name>-default-user` Secret; and the Secrets of
//! `spec.broker.tls` (`ca.crt`; `tls.crt` and `tls.key`). The operator reads them from the
//! cluster and `logstream dev` from a manifest's `kind: Secret` documents; both hand their data
//! here. Errors name the Secret and the missing keys, never a value.
//!
//! Several hosts (a cluster's nodes) are listed with commas: in `uri`
//! (`amqp://user:password@rabbit-0:5672,rabbit-1:5672/vhost`), in `host`
//! (`rabbit-0,rabbit-1,rabbit-2`, all on `port`), and in `managementUri`.

use logstream_api::{manifest::SecretData, pipeline::BrokerSpec};

use crate::{
    address::AMQPS_PORT,
    endpoint::BrokerEndpoint,
    endpoint::EndpointError,
    tls::{CA_KEY, CERT_KEY, KEY_KEY, TlsError, TlsMaterial},
};

/// Suffix of the Secret the RabbitMQ Cluster Operator writes for a `RabbitmqCluster`.
pub const CLUSTER_SECRET_SUFFIX: &str = "-default-user";

/// Why a Secret's broker credentials could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// The Secret lacks the keys of every known shape, or a value is not text.
    #[error("failed to read broker credentials from Secret {secret}: {reason}")]
    Shape {
        /// Name of the Secret.
        secret: String,
        /// What is missing, in words.
        reason: String,
    },
    /// A URI in the Secret does not parse (the URI itself is never repeated).
    #[error("failed to read broker credentials from Secret {secret}: {source}")]
    Endpoint {
        /// Name of the Secret.
        secret: String,
        /// The parser's words.
        source: EndpointError,
    },
    /// A CA or client certificate of `spec.broker.tls` is missing or not PEM.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// What a broker Secret says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerSecret {
    /// Where the broker is and how to log in.
    pub endpoint: BrokerEndpoint,
    /// The vhost the Secret's `uri` names (`/` for a URI without a path); `None` for the
    /// `host`/`username`/`password` shape, which names none.
    pub vhost: Option<String>,
}

/// The Secret holding the broker credentials of a pipeline: `secretRef`'s, or the
/// `<cluster>-default-user` Secret of `clusterRef`. `None` when the spec names neither
/// (validation refuses that before anyone asks).
pub fn secret_name(broker: &BrokerSpec) -> Option<String> {
    match (&broker.secret_ref, &broker.cluster_ref) {
        (Some(secret), _) => Some(secret.name.clone()),
        (None, Some(cluster)) => Some(format!("{}{CLUSTER_SECRET_SUFFIX}", cluster.name)),
        (None, None) => None,
    }
}

/// The Secrets of `spec.broker.tls`: the CA's and the client certificate's, when named.
pub fn tls_secret_names(broker: &BrokerSpec) -> (Option<String>, Option<String>) {
    let tls = broker.tls.as_ref();
    (
        tls.and_then(|t| t.ca_secret_ref.as_ref())
            .map(|r| r.name.clone()),
        tls.and_then(|t| t.client_cert_secret_ref.as_ref())
            .map(|r| r.name.clone()),
    )
}

/// Reads the TLS material of `spec.broker.tls` from its Secrets' data, each given with its
/// name: `ca.crt` of the CA's, `tls.crt` and `tls.key` of the client certificate's.
pub fn tls_from_secret_data(
    ca: Option<(&str, &SecretData)>,
    client: Option<(&str, &SecretData)>,
) -> Result<TlsMaterial, CredentialsError> {
    let value = |secret: &str, data: &SecretData, key: &str| {
        data.get(key)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| CredentialsError::Shape {
                secret: secret.to_owned(),
                reason: format!("it has no key {key}"),
            })
    };
    let mut tls = TlsMaterial::default();
    if let Some((secret, data)) = ca {
        tls = tls.with_ca(
            value(secret, data, CA_KEY)?,
            &format!("key {CA_KEY} of Secret {secret}"),
        )?;
    }
    if let Some((secret, data)) = client {
        tls = tls.with_client_cert(
            value(secret, data, CERT_KEY)?,
            value(secret, data, KEY_KEY)?,
            &format!("Secret {secret}"),
        )?;
    }
    Ok(tls)
}

/// Reads the data (keys and decoded values) of Secret `secret`.
pub fn from_secret_data(secret: &str, data: &SecretData) -> Result<BrokerSecret, CredentialsError> {
    let text = |key: &str| -> Result<Option<String>, CredentialsError> {
        match data.get(key) {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes.clone())
                .map(|s| Some(s.trim().to_owned()).filter(|s| !s.is_empty()))
                .map_err(|_| CredentialsError::Shape {
                    secret: secret.to_owned(),
                    reason: format!("key {key} is not UTF-8 text"),
                }),
        }
    };
    let endpoint_error = |source| CredentialsError::Endpoint {
        secret: secret.to_owned(),
        source,
    };
    let management = text("managementUri")?;

    if let Some(uri) = text("uri")? {
        let endpoint =
            BrokerEndpoint::from_uri(&uri, management.as_deref()).map_err(endpoint_error)?;
        let vhost = Some(endpoint.vhost().to_owned());
        return Ok(BrokerSecret { endpoint, vhost });
    }

    let (host, username, password) = (text("host")?, text("username")?, text("password")?);
    let (Some(host), Some(username), Some(password)) = (host, username, password) else {
        let missing: Vec<&str> = ["host", "username", "password"]
            .into_iter()
            .filter(|k| data.get(*k).is_none_or(Vec::is_empty))
            .collect();
        return Err(CredentialsError::Shape {
            secret: secret.to_owned(),
            reason: format!(
                "it has no key uri, and of host, username and password it lacks {}",
                missing.join(", ")
            ),
        });
    };
    let port = match text("port")? {
        None => None,
        Some(p) => Some(p.parse::<u16>().map_err(|_| CredentialsError::Shape {
            secret: secret.to_owned(),
            reason: "key port is not a port number".into(),
        })?),
    };
    let tls = port == Some(AMQPS_PORT);
    let endpoint = BrokerEndpoint::from_parts(
        &host,
        port,
        &username,
        &password,
        tls,
        management.as_deref(),
    )
    .map_err(endpoint_error)?;
    Ok(BrokerSecret {
        endpoint,
        vhost: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use logstream_api::pipeline::LocalObjectRef;

    fn data(pairs: &[(&str, &str)]) -> SecretData {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn uri_shape_names_its_vhost_and_management_endpoint() {
        let c = from_secret_data(
            "rabbitmq",
            &data(&[
                ("uri", "amqp://app:s3cret@rabbit:5672/logs"),
                ("managementUri", "https://rabbit-admin:15671"),
            ]),
        )
        .unwrap();
        assert_eq!(c.vhost.as_deref(), Some("logs"));
        assert_eq!(c.endpoint.to_string(), "amqp://app:***@rabbit:5672/logs");
        assert_eq!(
            c.endpoint.management().base.as_str(),
            "https://rabbit-admin:15671/"
        );
    }

    #[test]
    fn cluster_operator_default_user_shape_is_understood() {
        let c = from_secret_data(
            "rabbit-default-user",
            &data(&[
                ("host", "rabbit.games.svc"),
                ("port", "5672"),
                ("username", "default_user_x"),
                ("password", "p@ss#1"),
                ("provider", "rabbitmq"),
                ("type", "rabbitmq"),
            ]),
        )
        .unwrap();
        assert_eq!(c.vhost, None);
        assert_eq!(c.endpoint.amqp().authority.userinfo.password, "p@ss#1");
        assert_eq!(
            c.endpoint.management().base.as_str(),
            "http://rabbit.games.svc:15672/"
        );
        let tls = from_secret_data(
            "s",
            &data(&[
                ("host", "h"),
                ("port", "5671"),
                ("username", "u"),
                ("password", "p"),
            ]),
        )
        .unwrap();
        assert!(tls.endpoint.is_tls());
    }

    #[test]
    fn errors_name_missing_keys_but_never_values() {
        let err = from_secret_data("s", &data(&[("host", "h"), ("password", "s3cret")]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "failed to read broker credentials from Secret s: it has no key uri, and of host, username and password it lacks username"
        );
        let err = from_secret_data("s", &data(&[("uri", "http://u:s3cret@h")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("invalid AMQP URI") && !err.contains("s3cret"),
            "{err}"
        );
    }

    #[test]
    fn a_host_list_reaches_every_node() {
        let c = from_secret_data(
            "rabbitmq",
            &data(&[("uri", "amqp://app:s3cret@rabbit-0,rabbit-1:5673/logs")]),
        )
        .unwrap();
        assert_eq!(
            c.endpoint.to_string(),
            "amqp://app:***@rabbit-0:5672,rabbit-1:5673/logs"
        );
        let c = from_secret_data(
            "s",
            &data(&[
                ("host", "r0,r1,r2"),
                ("port", "5671"),
                ("username", "u"),
                ("password", "p"),
            ]),
        )
        .unwrap();
        assert_eq!(c.endpoint.hosts().len(), 3);
        assert_eq!(
            c.endpoint.management().others[1].as_str(),
            "https://r2:15671/"
        );
    }

    #[test]
    fn tls_secrets_give_the_ca_and_client_certificate_and_name_missing_keys() {
        let pem = crate::tls::TEST_CERT;
        let ca = data(&[("ca.crt", pem)]);
        let tls = tls_from_secret_data(Some(("rabbit-ca", &ca)), None).unwrap();
        assert!(tls.has_ca() && !tls.has_client_cert());
        let client = data(&[("tls.crt", pem)]);
        let err = tls_from_secret_data(Some(("rabbit-ca", &ca)), Some(("rabbit-client", &client)))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "failed to read broker credentials from Secret rabbit-client: it has no key tls.key"
        );
        let err = tls_from_secret_data(Some(("rabbit-ca", &client)), None)
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("it has no key ca.crt"), "{err}");
        assert!(tls_from_secret_data(None, None).unwrap().is_empty());
    }

    #[test]
    fn cluster_ref_reads_the_default_user_secret() {
        let broker = BrokerSpec {
            cluster_ref: Some(LocalObjectRef {
                name: "rabbit".into(),
            }),
            ..BrokerSpec::default()
        };
        assert_eq!(secret_name(&broker).as_deref(), Some("rabbit-default-user"));
    }
}
