//! The operator's [`ScaleTarget`]: a worker Deployment's scale subresource. The operator's
//! server-side apply of the Deployment leaves `spec.replicas` out, so the count written here
//! is never fought over.

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;

use logstream_autoscaler::{ScaleError, ScaleTarget};

/// Field manager of the autoscaler's writes (scale subresource and its status fields).
pub const AUTOSCALER_FIELD_MANAGER: &str = "logstream-autoscaler";

/// The scale subresource of Deployment `name` in `namespace`.
pub struct DeploymentScale {
    api: Api<Deployment>,
    namespace: String,
    name: String,
}

impl DeploymentScale {
    /// Scales Deployment `namespace/name` through `client`.
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    fn error(&self, action: &'static str, e: &kube::Error) -> ScaleError {
        ScaleError {
            action,
            target: self.describe(),
            reason: e.to_string(),
        }
    }
}

impl ScaleTarget for DeploymentScale {
    fn describe(&self) -> String {
        format!("deployment {}/{}", self.namespace, self.name)
    }

    fn replicas(&self) -> BoxFuture<'_, Result<u32, ScaleError>> {
        Box::pin(async move {
            let scale = self
                .api
                .get_scale(&self.name)
                .await
                .map_err(|e| self.error("read the replicas of", &e))?;
            let replicas = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
            Ok(u32::try_from(replicas).unwrap_or(0))
        })
    }

    fn scale(&self, replicas: u32) -> BoxFuture<'_, Result<(), ScaleError>> {
        Box::pin(async move {
            // A merge patch of the one field: the API server validates it against the
            // Deployment, and nothing else of the object is touched.
            let body = json!({ "spec": { "replicas": replicas } });
            self.api
                .patch_scale(
                    &self.name,
                    &PatchParams {
                        field_manager: Some(AUTOSCALER_FIELD_MANAGER.into()),
                        ..PatchParams::default()
                    },
                    &Patch::Merge(&body),
                )
                .await
                .map_err(|e| self.error("scale", &e))?;
            Ok(())
        })
    }
}
