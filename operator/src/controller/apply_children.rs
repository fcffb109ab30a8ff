//! Applies a pipeline's Kubernetes children by server-side apply under the operator's field
//! manager: the derived broker Secret, then per output the ConfigMap with the worker
//! configuration, the worker Deployment and the metrics Service. The objects themselves are
//! built by [`crate::children`].

use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Resource,
    api::{Api, Patch, PatchParams},
};
use logstream_api::{LogPipeline, TopologyPlan, digest, worker_config::WorkerConfig};
use logstream_broker::BrokerSecret;
use serde::{Serialize, de::DeserializeOwned};

use super::{context::Context, error::Error};
use crate::{
    children::{self, Owner, WorkerPod},
    settings::FIELD_MANAGER,
    status::WorkerReplicas,
};

/// Applies the broker Secret and each output's ConfigMap, Deployment and Service; returns
/// each output's replicas as the API server reports them.
pub async fn apply_children(
    ctx: &Context,
    pipeline: &LogPipeline,
    owner: &Owner,
    plan: &TopologyPlan,
    credentials: &BrokerSecret,
) -> Result<Vec<WorkerReplicas>, Error> {
    let ns = owner.namespace.as_str();
    let apply = Applier { ctx, namespace: ns };

    let secret = children::broker_secret(owner, &credentials.endpoint, &plan.vhost);
    let secret_name = children::broker_secret_name(&owner.pipeline);
    let secret_version = apply
        .apply("Secret", &secret_name, &secret)
        .await?
        .metadata
        .resource_version;

    let mut replicas = Vec::with_capacity(pipeline.spec.outputs.len());
    for output in &pipeline.spec.outputs {
        let child = children::worker_name(&owner.pipeline, &output.name);
        let config =
            WorkerConfig::from_plan(plan, ns, &owner.pipeline, &pipeline.spec, &output.name)
                .ok_or_else(|| Error::UnplannedOutput(output.name.clone()))?;
        let digest = digest::hex(&config.to_yaml());
        apply
            .apply("ConfigMap", &child, &children::config_map(owner, &config))
            .await?;

        let image = output
            .worker
            .as_ref()
            .and_then(|w| w.image.as_deref())
            .unwrap_or(&ctx.settings.worker_image);
        let pod = WorkerPod {
            image,
            config_digest: &digest,
            secret_version: secret_version.as_deref(),
            secret_files: &config.secrets,
        };
        let deployment = apply
            .apply(
                "Deployment",
                &child,
                &children::deployment(owner, output, &pod),
            )
            .await?;
        apply
            .apply("Service", &child, &children::service(owner, &output.name))
            .await?;
        replicas.push(worker_replicas(&output.name, &deployment));
    }
    Ok(replicas)
}

/// Server-side applies children into one namespace.
struct Applier<'a> {
    ctx: &'a Context,
    namespace: &'a str,
}

impl Applier<'_> {
    /// Applies `object`, a `kind` called `name`; returns it as the API server answered.
    async fn apply<K>(&self, kind: &'static str, name: &str, object: &K) -> Result<K, Error>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + Serialize
            + DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        Api::<K>::namespaced(self.ctx.client.clone(), self.namespace)
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(object),
            )
            .await
            .map_err(|source| Error::ApplyChild {
                kind,
                namespace: self.namespace.to_owned(),
                name: name.to_owned(),
                source,
            })
    }
}

fn worker_replicas(output: &str, deployment: &Deployment) -> WorkerReplicas {
    let count = |n: Option<i32>| n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    WorkerReplicas {
        output: output.to_owned(),
        // Absent means the API default of one replica.
        wanted: deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .map_or(1, |n| count(Some(n))),
        ready: count(deployment.status.as_ref().and_then(|s| s.ready_replicas)),
    }
}
