//! What the cluster says about pipelines, for `logstream status --kubeconfig`: each
//! LogPipeline's `Ready` condition and, per output, the replicas running and wanted and the
//! autoscaler's last reason — read from the LogPipeline status the operator writes.

use std::path::Path;

use kube::{
    Api, Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};
use logstream_api::{LogPipeline, naming};

use crate::{error::CliError, status::StatusRow};

/// The LogPipelines of `namespace` (every namespace when `None`) in the cluster of the
/// kubeconfig at `path`.
pub async fn pipelines(path: &Path, namespace: Option<&str>) -> Result<Vec<LogPipeline>, CliError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        CliError::Kubernetes(format!(
            "failed to {what} (kubeconfig {}): {e}",
            path.display()
        ))
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| failed("read the kubeconfig", &e))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| failed("load the kubeconfig", &e))?;
    let client = Client::try_from(config).map_err(|e| failed("configure the client", &e))?;
    let api: Api<LogPipeline> = match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let list = api
        .list(&Default::default())
        .await
        .map_err(|e| failed("list LogPipelines", &e))?;
    Ok(list.items)
}

/// Adds to each output what its LogPipeline's status says.
pub fn annotate(outputs: &mut [StatusRow], pipelines: &[LogPipeline]) {
    for output in outputs {
        let Some(pipeline) = pipelines.iter().find(|p| {
            naming::component(p.metadata.namespace.as_deref().unwrap_or_default())
                == output.namespace
                && naming::component(p.metadata.name.as_deref().unwrap_or_default())
                    == output.pipeline
        }) else {
            output.cluster = Some(ClusterView {
                pipeline_ready: "not in the cluster".into(),
                ..ClusterView::default()
            });
            continue;
        };
        let status = pipeline.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map_or_else(
                || "unknown".to_owned(),
                |c| {
                    if c.status == "True" {
                        "True".to_owned()
                    } else {
                        format!("{} ({})", c.status, c.reason)
                    }
                },
            );
        let figures = status.and_then(|s| {
            s.outputs
                .iter()
                .find(|o| naming::component(&o.name) == output.output)
        });
        output.cluster = Some(ClusterView {
            pipeline_ready: ready,
            replicas: figures.and_then(|o| o.replicas),
            desired_replicas: figures.and_then(|o| o.desired_replicas),
            last_scale_reason: figures.and_then(|o| o.last_scale_reason.clone()),
        });
    }
}

/// One output as the cluster sees it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ClusterView {
    /// The pipeline's `Ready` condition: `True`, or the status and reason.
    pub pipeline_ready: String,
    /// Ready worker replicas.
    pub replicas: Option<u32>,
    /// Replicas the autoscaler wants.
    pub desired_replicas: Option<u32>,
    /// Why the autoscaler last changed the count.
    pub last_scale_reason: Option<String>,
}
