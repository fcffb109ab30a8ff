//! Applies a pipeline's Kubernetes children by server-side apply under the operator's field
//! manager: per output the ConfigMap with the worker configuration, the output's worker-user
//! Secret when the pipeline asks for one, the worker Deployment and the metrics Service. The
//! objects themselves are built by [`crate::children`].
//!
//! Before applying a child the operator reads it: one that exists but was not made by the
//! operator for this output of this pipeline (its labels and controller owner reference say
//! so) is left alone and reported as a `NameConflict`. A forced apply would otherwise take it
//! over, and garbage collection would delete it with the pipeline.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Resource, ResourceExt,
    api::{Api, Patch, PatchParams},
};
use logstream_api::{LogPipeline, TopologyPlan, digest, worker_config::WorkerConfig};
use logstream_broker::ManagementClient;
use serde::{Serialize, de::DeserializeOwned};

use super::{
    broker_secret::{NamedSecret, location_uri},
    context::Context,
    error::Error,
    worker_users,
};
use crate::{
    children::{self, Owner, WorkerPod, labels},
    settings::FIELD_MANAGER,
    status::WorkerReplicas,
};

/// Applies each output's ConfigMap, worker-user Secret (with `spec.broker.workerUsers`),
/// Deployment and Service; returns each output's replicas as the API server reports them.
/// `management` is the broker's management API, for the worker users.
pub async fn apply_children(
    ctx: &Context,
    pipeline: &LogPipeline,
    owner: &Owner,
    plan: &TopologyPlan,
    secret: &NamedSecret,
    management: &ManagementClient,
) -> Result<Vec<WorkerReplicas>, Error> {
    let ns = owner.namespace.as_str();
    let apply = Applier {
        ctx,
        owner,
        namespace: ns,
    };
    let worker_users = pipeline.spec.broker.worker_users.unwrap_or(false);
    let shared_broker = secret.worker_broker();

    let mut replicas = Vec::with_capacity(pipeline.spec.outputs.len());
    for output in &pipeline.spec.outputs {
        let out = output.name.as_str();
        let child = children::worker_name(&owner.pipeline, out);
        let config = WorkerConfig::from_plan(plan, ns, &owner.pipeline, &pipeline.spec, out)
            .ok_or_else(|| Error::UnplannedOutput(output.name.clone()))?;
        let digest = digest::hex(&config.to_yaml());
        let config_map = apply
            .apply(
                "ConfigMap",
                &child,
                out,
                &children::config_map(owner, &config),
            )
            .await?;

        let (broker, secret_version) = if worker_users {
            let location = location_uri(&secret.credentials);
            worker_users::ensure(ctx, management, owner, plan, out, &config_map, location).await?
        } else {
            (shared_broker.clone(), secret.version.clone())
        };
        let image = output
            .worker
            .as_ref()
            .and_then(|w| w.image.as_deref())
            .unwrap_or(&ctx.settings.worker_image);
        let pod = WorkerPod {
            image,
            config_digest: &digest,
            broker: &broker,
            secret_version: secret_version.as_deref(),
            secret_files: &config.secrets,
        };
        let deployment = apply
            .apply(
                "Deployment",
                &child,
                out,
                &children::deployment(owner, output, &pod),
            )
            .await?;
        apply
            .apply("Service", &child, out, &children::service(owner, out))
            .await?;
        replicas.push(worker_replicas(out, &deployment));
    }
    Ok(replicas)
}

/// Who holds an object the operator did not make for this output, in words.
pub fn holder(labels: &BTreeMap<String, String>) -> String {
    let managed = labels
        .get(labels::MANAGED_BY)
        .is_some_and(|v| v == labels::MANAGED_BY_VALUE);
    match (
        managed,
        labels.get(labels::PIPELINE),
        labels.get(labels::OUTPUT),
    ) {
        (true, Some(pipeline), Some(output)) => {
            format!("it exists and belongs to output {output} of LogPipeline {pipeline}")
        }
        _ => "it exists and was not created by the LogStream operator for this output".into(),
    }
}

/// Server-side applies the children of one pipeline into its namespace.
struct Applier<'a> {
    ctx: &'a Context,
    owner: &'a Owner,
    namespace: &'a str,
}

impl Applier<'_> {
    /// Applies `object`, a `kind` called `name` for `output`, unless an object of that name
    /// exists that is not this output's; returns it as the API server answered.
    async fn apply<K>(
        &self,
        kind: &'static str,
        name: &str,
        output: &str,
        object: &K,
    ) -> Result<K, Error>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + Serialize
            + DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api = Api::<K>::namespaced(self.ctx.client.clone(), self.namespace);
        let existing = api.get_opt(name).await.map_err(|source| Error::ReadChild {
            kind,
            namespace: self.namespace.to_owned(),
            name: name.to_owned(),
            source,
        })?;
        if let Some(existing) = existing {
            let ours = labels::belong_to(existing.labels(), &self.owner.pipeline, output)
                && existing
                    .owner_references()
                    .iter()
                    .any(|r| r.uid == self.owner.reference.uid && r.controller == Some(true));
            if !ours {
                return Err(Error::NameConflict {
                    kind,
                    namespace: self.namespace.to_owned(),
                    name: name.to_owned(),
                    holder: holder(existing.labels()),
                });
            }
        }
        api.patch(
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
