//! Broker cleanup when a LogPipeline is deleted, by its `deletionPolicy`, and its worker
//! users (whatever the policy: they are credentials, not data). Runs behind the finalizer;
//! the Kubernetes children go by owner reference, not here.

use kube::runtime::{controller::Action, events::EventType};
use logstream_api::{LogPipeline, TopologyPlan, pipeline::DeletionPolicy, plan};
use tracing::info;

use logstream_broker::{BrokerEndpoint, BrokerError, ManagementClient, Report};

use super::{
    broker_secret,
    context::{self, Context},
    error::Error,
    topology_notes::{changes_note, publish_retained},
    worker_users,
};
use crate::children::Owner;

/// Cleans the broker up as the pipeline's `deletionPolicy` says. Returns an error (and so
/// keeps the finalizer, retrying with backoff) only while the broker cannot be reached;
/// when cleanup is impossible for good (the spec is invalid, every Secret is gone) it says
/// so in a Warning Event and lets the deletion proceed, leaving the broker objects.
pub async fn cleanup(pipeline: &LogPipeline, ctx: &Context) -> Result<Action, Error> {
    let owner = Owner::of(pipeline).ok_or(Error::MissingMetadata("namespace, name or uid"))?;
    let (ns, name) = (owner.namespace.as_str(), owner.pipeline.as_str());
    if let Some(autoscalers) = &ctx.autoscalers {
        autoscalers.stop(ns, name);
    }
    for output in &pipeline.spec.outputs {
        ctx.metrics.forget_output(ns, name, &output.name);
    }
    let policy = pipeline.spec.deletion_policy();
    let mut plan = match plan(ns, name, &pipeline.spec) {
        Ok(plan) => plan,
        Err(errors) => {
            let note = format!(
                "broker objects were left in place: the spec is invalid ({errors}), so which objects belong to the pipeline is unknown"
            );
            skipped(ctx, pipeline, note).await;
            return Ok(Action::await_change());
        }
    };

    let key = context::key(pipeline);
    let worker_users = pipeline.spec.broker.worker_users.unwrap_or(false);
    if policy == DeletionPolicy::Retain && !worker_users {
        retained(ctx, pipeline, &plan).await;
        ctx.forget_pipeline(&key);
        return Ok(Action::await_change());
    }

    // The user's Secret, or else the credentials this process last applied the pipeline
    // with (the Secret may go first when a whole namespace is deleted).
    let credentials = match broker_secret::read_named(ctx, pipeline, ns).await {
        Ok(secret) => secret.credentials,
        Err(Error::SecretNotFound { secret, .. }) => match ctx.known_credentials(&key) {
            Some(credentials) => credentials,
            None => {
                let note = format!(
                    "broker objects were left in place: Secret {secret} is gone, so the broker cannot be logged in to"
                );
                skipped(ctx, pipeline, note).await;
                ctx.forget_pipeline(&key);
                return Ok(Action::await_change());
            }
        },
        Err(e) => return Err(e),
    };
    plan.vhost = pipeline
        .spec
        .vhost_with(credentials.vhost.as_deref())
        .to_owned();
    if worker_users {
        // The client of the pipeline's last broker connection when this process has one.
        let management = ctx
            .admins
            .management(&credentials.endpoint, &plan.vhost)
            .unwrap_or_else(|| ManagementClient::new(credentials.endpoint.management().clone()));
        let outputs: Vec<String> = pipeline
            .spec
            .outputs
            .iter()
            .map(|o| o.name.clone())
            .collect();
        let users = worker_users::delete(ctx, &management, &plan, &outputs).await?;
        info!(users = users.len(), "worker users deleted");
    }
    if policy == DeletionPolicy::Retain {
        retained(ctx, pipeline, &plan).await;
        ctx.forget_pipeline(&key);
        return Ok(Action::await_change());
    }
    let report = delete_topology(ctx, &credentials.endpoint, &plan, policy)
        .await
        .map_err(|source| Error::CleanUpTopology {
            vhost: plan.vhost.clone(),
            source,
        })?;

    let changes = changes_note(&report);
    let note = if changes.is_empty() {
        format!("deletionPolicy {policy:?}: nothing left to delete on the broker")
    } else {
        format!("deletionPolicy {policy:?}: {changes}")
    };
    info!(%note, "broker cleaned up");
    ctx.publish(
        pipeline,
        EventType::Normal,
        "BrokerCleanedUp",
        "Cleanup",
        note,
    )
    .await;
    let context = format!("deletionPolicy {policy:?}: ");
    publish_retained(ctx, pipeline, &report, "Cleanup", &context).await;
    ctx.forget_pipeline(&key);
    Ok(Action::await_change())
}

/// Says that `deletionPolicy: Retain` kept the broker objects.
async fn retained(ctx: &Context, pipeline: &LogPipeline, plan: &TopologyPlan) {
    let note = format!(
        "deletionPolicy Retain: exchange {} and {} queues stay on the broker",
        plan.exchange().name,
        plan.queues.len()
    );
    info!(%note, "broker objects retained");
    ctx.publish(
        pipeline,
        EventType::Normal,
        "BrokerObjectsRetained",
        "Cleanup",
        note,
    )
    .await;
}

async fn delete_topology(
    ctx: &Context,
    endpoint: &BrokerEndpoint,
    plan: &TopologyPlan,
    policy: DeletionPolicy,
) -> Result<Report, BrokerError> {
    let admin = ctx.admins.lock(endpoint, &plan.vhost, false).await?;
    admin.delete(plan, policy).await
}

async fn skipped(ctx: &Context, pipeline: &LogPipeline, note: String) {
    info!(%note, "broker cleanup skipped");
    ctx.publish(
        pipeline,
        EventType::Warning,
        "BrokerCleanupSkipped",
        "Cleanup",
        note,
    )
    .await;
}
