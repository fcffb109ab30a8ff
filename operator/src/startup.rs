//! Checks made once at startup, failing fast with a hint a person can act on.

use kube::{Api, Client, api::ListParams};
use logstream_api::LogPipeline;

/// What to run when the CRD is missing.
pub const INSTALL_HINT: &str = "kubectl apply -f crds/logstream.io_logpipelines.yaml, or helm install logstream charts/logstream";

/// Why the operator cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The LogPipeline CRD is not installed in the cluster.
    #[error("CRD logpipelines.logstream.io is not installed: {INSTALL_HINT}")]
    CrdMissing,
    /// The API server could not be asked.
    #[error("failed to list LogPipelines to check that the CRD is installed: {0}")]
    Api(#[source] kube::Error),
}

/// Fails with [`StartupError::CrdMissing`] when the API server does not serve LogPipelines.
/// Listing one pipeline needs no permission beyond the ones the controller uses anyway.
pub async fn check_crd_installed(
    client: Client,
    namespace: Option<&str>,
) -> Result<(), StartupError> {
    let api: Api<LogPipeline> = match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        // A path the API server does not serve answers 404 with a plain-text body, which
        // has no Status reason: the code is what tells.
        Err(kube::Error::Api(status)) if status.code == 404 => Err(StartupError::CrdMissing),
        Err(e) => Err(StartupError::Api(e)),
    }
}
