//! The operator's [`ScaleTarget`]: a worker Deployment's scale subresource. The operator's
//! server-side apply of the Deployment leaves `spec.replicas` out, so the count written here
//! is never fought over.

use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tokio::sync::Semaphore;

use logstream_autoscaler::{ScaleError, ScaleTarget};

/// Field manager of the autoscaler's writes (scale subresource and its status fields).
pub const AUTOSCALER_FIELD_MANAGER: &str = "logstream-autoscaler";

/// Requests to the API server the autoscalers of one operator make at once. Each output's
/// autoscaler reads its Deployment's scale every poll (2,000 outputs polled every 2 s: 1,000
/// requests a second); unbounded, they kept a connection each open to the API server, with
/// its buffers (about 15 MB in the 1,000-pipeline benchmark's heap profile).
pub const API_REQUESTS_AT_ONCE: usize = 8;

/// The scale subresource of Deployment `name` in `namespace`.
pub struct DeploymentScale {
    api: Api<Deployment>,
    namespace: String,
    name: String,
    /// Shared by the autoscalers of one operator: at most [`API_REQUESTS_AT_ONCE`].
    requests: Arc<Semaphore>,
}

impl DeploymentScale {
    /// Scales Deployment `namespace/name` through `client`, one request at a time.
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self::sharing(client, namespace, name, Arc::new(Semaphore::new(1)))
    }

    /// Scales Deployment `namespace/name` through `client`, as many requests at once as
    /// `requests` has permits (shared with other targets).
    pub fn sharing(client: Client, namespace: &str, name: &str, requests: Arc<Semaphore>) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            requests,
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
            let _permit = self.requests.acquire().await;
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
            let _permit = self.requests.acquire().await;
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
