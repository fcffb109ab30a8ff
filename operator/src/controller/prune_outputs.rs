//! Deletes the Deployment, ConfigMap and Service of outputs removed from the spec (owner
//! references only clean children up when the whole pipeline goes; a worker-user Secret goes
//! with its ConfigMap), and the outputs' broker users.

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Service},
};
use kube::{
    Resource, ResourceExt,
    api::{Api, DeleteParams, ListParams},
    runtime::events::EventType,
};
use logstream_api::{LogPipeline, TopologyPlan};
use logstream_broker::ManagementClient;

use super::{context::Context, error::Error, worker_users};
use crate::children::{self, Owner, labels};

/// Finds this pipeline's worker Deployments whose output the spec no longer has, deletes
/// their children and their broker users (through `management`; there may be none), forgets
/// their metrics and says so in a Normal `WorkersPruned` Event.
pub async fn prune_removed_outputs(
    ctx: &Context,
    pipeline: &LogPipeline,
    owner: &Owner,
    plan: &TopologyPlan,
    management: &ManagementClient,
) -> Result<(), Error> {
    let ns = owner.namespace.as_str();
    let deployments = Api::<Deployment>::namespaced(ctx.client.clone(), ns);
    let listed = deployments
        .list(&ListParams::default().labels(&labels::pipeline_selector(&owner.pipeline)))
        .await
        .map_err(|source| Error::ListWorkers {
            namespace: ns.to_owned(),
            pipeline: owner.pipeline.clone(),
            source,
        })?;
    let removed: Vec<(String, bool)> = listed
        .items
        .iter()
        .filter(|d| {
            d.owner_references()
                .iter()
                .any(|r| r.uid == owner.reference.uid)
        })
        .filter_map(|d| {
            let output = d.labels().get(labels::OUTPUT)?;
            let user_secret = children::worker_user_secret_name(&owner.pipeline, output);
            Some((output.clone(), reads_secret(d, &user_secret)))
        })
        .filter(|(output, _)| pipeline.spec.output(output).is_none())
        .collect();
    for (output, had_user) in removed {
        let child = children::worker_name(&owner.pipeline, &output);
        delete_if_present(&deployments, ns, "Deployment", &child).await?;
        let config_maps = Api::<ConfigMap>::namespaced(ctx.client.clone(), ns);
        delete_if_present(&config_maps, ns, "ConfigMap", &child).await?;
        let services = Api::<Service>::namespaced(ctx.client.clone(), ns);
        delete_if_present(&services, ns, "Service", &child).await?;
        if had_user {
            worker_users::delete(ctx, management, plan, std::slice::from_ref(&output)).await?;
        }
        ctx.metrics.forget_output(ns, &owner.pipeline, &output);
        ctx.publish(
            pipeline,
            EventType::Normal,
            "WorkersPruned",
            "PruneOutputs",
            format!("deleted Deployment, ConfigMap and Service {child} of removed output {output}"),
        )
        .await;
    }
    Ok(())
}

/// True when `deployment`'s pods take an environment variable from Secret `secret`.
fn reads_secret(deployment: &Deployment, secret: &str) -> bool {
    deployment
        .spec
        .iter()
        .filter_map(|s| s.template.spec.as_ref())
        .flat_map(|pod| &pod.containers)
        .flat_map(|c| c.env.iter().flatten())
        .filter_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
        .any(|r| r.name == secret)
}

async fn delete_if_present<K>(
    api: &Api<K>,
    namespace: &str,
    kind: &'static str,
    name: &str,
) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(source) => Err(Error::DeleteChild {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        }),
    }
}
