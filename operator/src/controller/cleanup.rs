//! Broker cleanup when a LogPipeline is deleted, by its `deletionPolicy`. Runs behind the
//! finalizer; the Kubernetes children go by owner reference, not here.

use kube::runtime::{controller::Action, events::EventType};
use logstream_api::{LogPipeline, TopologyPlan, pipeline::DeletionPolicy, plan};
use tracing::info;

use logstream_broker::{BrokerAdmin, BrokerEndpoint, BrokerError, Report};

use super::{
    broker_secret,
    context::Context,
    error::Error,
    topology_notes::{changes_note, publish_retained},
};
use crate::children::{self, Owner};

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

    if policy == DeletionPolicy::Retain {
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
        return Ok(Action::await_change());
    }

    // The user's Secret, or else the derived one (it may outlive it during a namespace
    // deletion, and it names the pipeline's vhost).
    let credentials = match broker_secret::read_named(ctx, pipeline, ns).await {
        Err(Error::SecretNotFound { secret, .. }) => {
            match broker_secret::read(ctx, ns, &children::broker_secret_name(name)).await {
                Ok(creds) => creds,
                Err(Error::SecretNotFound { .. }) => {
                    let note = format!(
                        "broker objects were left in place: Secret {secret} is gone, so the broker cannot be logged in to"
                    );
                    skipped(ctx, pipeline, note).await;
                    return Ok(Action::await_change());
                }
                Err(e) => return Err(e),
            }
        }
        other => other?,
    };
    plan.vhost = pipeline
        .spec
        .vhost_with(credentials.vhost.as_deref())
        .to_owned();
    let report = delete_topology(&credentials.endpoint, &plan, policy)
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
    Ok(Action::await_change())
}

async fn delete_topology(
    endpoint: &BrokerEndpoint,
    plan: &TopologyPlan,
    policy: DeletionPolicy,
) -> Result<Report, BrokerError> {
    let admin = BrokerAdmin::connect(endpoint, &plan.vhost).await?;
    let deleted = admin.delete(plan, policy).await;
    admin.close().await;
    deleted
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
