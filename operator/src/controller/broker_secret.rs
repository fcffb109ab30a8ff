//! Reads a pipeline's broker credentials from the Secret its spec names (`secretRef`, or the
//! `<cluster>-default-user` Secret of `clusterRef`), and the broker's CA and client
//! certificate from the Secrets of `spec.broker.tls`, for the operator's own connections (the
//! workers get those as Secret volumes). The operator reads no other Secret but the
//! worker-user Secrets it made itself (`worker_users`).

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use logstream_api::{FieldError, LogPipeline, ValidationErrors, manifest::SecretData};
use logstream_broker::{BrokerSecret, CredentialsError, secret};

use super::{context::Context, error::Error};
use crate::children::{WorkerBroker, secret::URI_KEY};

/// The broker Secret a pipeline names, as read.
#[derive(Clone, Debug)]
pub struct NamedSecret {
    /// Its name.
    pub name: String,
    /// Its resourceVersion: the workers roll when it changes.
    pub version: Option<String>,
    /// True for the `uri` shape (else `host`/`username`/`password`).
    pub has_uri: bool,
    /// What it says.
    pub credentials: BrokerSecret,
}

impl NamedSecret {
    /// How the workers take these credentials from the Secret itself, by key.
    pub fn worker_broker(&self) -> WorkerBroker {
        if self.has_uri {
            WorkerBroker::UriKey {
                secret: self.name.clone(),
            }
        } else {
            WorkerBroker::UserKeys {
                uri: location_uri(&self.credentials),
                secret: self.name.clone(),
            }
        }
    }
}

/// `amqp(s)://host:port/` (every host of a list, with the URI's query): where the broker is,
/// without credentials (the worker's configuration names the vhost).
pub fn location_uri(credentials: &BrokerSecret) -> String {
    credentials.endpoint.location_uri()
}

/// Reads the credentials in the Secret `pipeline`'s spec names, in `namespace`, with the TLS
/// material of `spec.broker.tls`.
pub async fn read_named(
    ctx: &Context,
    pipeline: &LogPipeline,
    namespace: &str,
) -> Result<NamedSecret, Error> {
    // Validation refuses a spec that names neither; this only keeps the types honest.
    let name = secret::secret_name(&pipeline.spec.broker).ok_or_else(|| {
        Error::InvalidSpec(ValidationErrors(vec![FieldError {
            path: "spec.broker".into(),
            message: "set secretRef or clusterRef".into(),
        }]))
    })?;
    let mut named = read(ctx, namespace, &name).await?;
    let (ca, client) = secret::tls_secret_names(&pipeline.spec.broker);
    if ca.is_none() && client.is_none() {
        return Ok(named);
    }
    let ca = match &ca {
        Some(secret) => Some((secret.as_str(), read_data(ctx, namespace, secret).await?.1)),
        None => None,
    };
    let client = match &client {
        Some(secret) => Some((secret.as_str(), read_data(ctx, namespace, secret).await?.1)),
        None => None,
    };
    let tls = secret::tls_from_secret_data(
        ca.as_ref().map(|(name, data)| (*name, data)),
        client.as_ref().map(|(name, data)| (*name, data)),
    )?;
    named.credentials.endpoint =
        named
            .credentials
            .endpoint
            .with_tls(tls)
            .map_err(|source| CredentialsError::Endpoint {
                secret: name.clone(),
                source,
            })?;
    Ok(named)
}

/// Reads the credentials in Secret `namespace/name`.
pub async fn read(ctx: &Context, namespace: &str, name: &str) -> Result<NamedSecret, Error> {
    let (version, data) = read_data(ctx, namespace, name).await?;
    let has_uri = data.get(URI_KEY).is_some_and(|v| !v.is_empty());
    Ok(NamedSecret {
        name: name.to_owned(),
        version,
        has_uri,
        credentials: secret::from_secret_data(name, &data)?,
    })
}

/// The resourceVersion and data (keys and decoded values) of Secret `namespace/name`.
async fn read_data(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<(Option<String>, SecretData), Error> {
    let found = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|source| Error::ReadSecret {
            namespace: namespace.to_owned(),
            secret: name.to_owned(),
            source,
        })?
        .ok_or_else(|| Error::SecretNotFound {
            namespace: namespace.to_owned(),
            secret: name.to_owned(),
        })?;
    let data = found
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| (key, value.0))
        .collect();
    Ok((found.metadata.resource_version, data))
}

#[cfg(test)]
mod tests {
    use logstream_broker::BrokerEndpoint;

    use super::*;

    #[test]
    fn the_location_uri_names_scheme_host_and_port_only() {
        let at = |host: &str, port, tls| BrokerSecret {
            endpoint: BrokerEndpoint::from_parts(host, port, "u", "s3cret", tls, None).unwrap(),
            vhost: None,
        };
        assert_eq!(
            location_uri(&at("rabbit", None, false)),
            "amqp://rabbit:5672/"
        );
        assert_eq!(
            location_uri(&at("rabbit", Some(5671), true)),
            "amqps://rabbit:5671/"
        );
        assert_eq!(
            location_uri(&at("::1", Some(5672), false)),
            "amqp://[::1]:5672/"
        );
        assert_eq!(
            location_uri(&at("rabbit-0,rabbit-1", Some(5671), true)),
            "amqps://rabbit-0:5671,rabbit-1:5671/"
        );
    }
}
