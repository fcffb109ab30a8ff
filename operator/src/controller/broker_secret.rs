//! Reads a pipeline's broker credentials from the Secret its spec names (`secretRef`, or the
//! `<cluster>-default-user` Secret of `clusterRef`). The operator reads no other Secret.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use logstream_api::{FieldError, LogPipeline, ValidationErrors};
use logstream_broker::{BrokerSecret, secret};

use super::{context::Context, error::Error};

/// Reads the credentials in the Secret `pipeline`'s spec names, in `namespace`.
pub async fn read_named(
    ctx: &Context,
    pipeline: &LogPipeline,
    namespace: &str,
) -> Result<BrokerSecret, Error> {
    // Validation refuses a spec that names neither; this only keeps the types honest.
    let name = secret::secret_name(&pipeline.spec.broker).ok_or_else(|| {
        Error::InvalidSpec(ValidationErrors(vec![FieldError {
            path: "spec.broker".into(),
            message: "set secretRef or clusterRef".into(),
        }]))
    })?;
    read(ctx, namespace, &name).await
}

/// Reads the credentials in Secret `namespace/name`.
pub async fn read(ctx: &Context, namespace: &str, name: &str) -> Result<BrokerSecret, Error> {
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
    Ok(secret::from_secret_data(name, &data)?)
}
