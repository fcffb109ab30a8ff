//! One reconcile of a LogPipeline, as its steps: validate and plan (pure) → read the broker
//! Secret → apply to the broker → apply the children → apply the status. Each step fails with
//! a [`Failure`] that carries what the status should say, and [`apply`] reports it in one
//! place.
//!
//! Validation comes before the Secret read so that an invalid spec touches nothing; the
//! plan's vhost is settled once the Secret is read (`spec.broker.vhost`, else the Secret's).

use std::{sync::Arc, time::Instant};

use kube::{
    Resource, ResourceExt,
    api::Api,
    runtime::{
        controller::Action,
        finalizer::{Event as FinalizerEvent, finalizer},
    },
};
use logstream_api::{LogPipeline, TopologyPlan, plan};
use tracing::{info, instrument, warn};

use super::{
    apply_children::apply_children,
    apply_topology::{AppliedTopology, apply_topology},
    broker_secret,
    cleanup::cleanup,
    context::{self, Context},
    error::Error,
    failure::Failure,
    prune_outputs::prune_removed_outputs,
    topology_notes,
};
use crate::{
    children::{self, Owner},
    settings::FINALIZER,
    status::{self, WorkerReplicas},
};

/// Reconciles one LogPipeline: applies it, or cleans the broker up when it is being deleted
/// (behind the finalizer).
#[instrument(skip_all, fields(namespace = pipeline.namespace().unwrap_or_default(), name = pipeline.name_any()))]
pub async fn reconcile(pipeline: Arc<LogPipeline>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = pipeline
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<LogPipeline> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, Arc::clone(&pipeline), |event| async {
        match event {
            FinalizerEvent::Apply(p) => apply(&p, &ctx).await,
            FinalizerEvent::Cleanup(p) => cleanup(&p, &ctx).await,
        }
    })
    .await
    .map_err(Error::from_finalizer);

    let took = started.elapsed();
    match &result {
        Ok(action) => {
            ctx.forget_failures(&pipeline);
            ctx.metrics.reconciled(None, took);
            info!(?action, took_ms = took.as_millis(), "reconciled");
        }
        Err(e) => {
            ctx.metrics.reconciled(Some(e.category()), took);
            warn!(reason = e.category(), error = %e, "reconcile failed");
        }
    }
    result
}

/// What the controller does after a failed reconcile: an invalid spec waits for a change
/// (the condition says why), a topology conflict is checked again at the normal recheck
/// interval, anything else is retried with a per-pipeline exponential backoff.
pub fn error_policy(pipeline: Arc<LogPipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    if error.waits_for_change() {
        return Action::await_change();
    }
    if error.is_conflict() {
        return Action::requeue(ctx.settings.recheck_interval);
    }
    let failures = ctx.count_failure(&pipeline);
    Action::requeue(ctx.settings.error_backoff(failures))
}

/// Applies `pipeline` step by step; a failed step is reported here and nowhere else.
async fn apply(pipeline: &LogPipeline, ctx: &Context) -> Result<Action, Error> {
    match apply_steps(pipeline, ctx).await {
        Ok(()) => Ok(Action::requeue(ctx.settings.recheck_interval)),
        Err(failure) => Err(failure.report(ctx, pipeline).await),
    }
}

/// The steps, in order; the first that fails ends the reconcile with its [`Failure`].
async fn apply_steps(pipeline: &LogPipeline, ctx: &Context) -> Result<(), Failure> {
    let owner = Owner::of(pipeline)
        .ok_or(Error::MissingMetadata("namespace, name or uid"))
        .map_err(Failure::unreported)?;
    let mut plan = validated_plan(ctx, pipeline, &owner)?;
    let secret = broker_secret::read_named(ctx, pipeline, &owner.namespace)
        .await
        .map_err(Failure::broker_secret)?;
    let credentials = &secret.credentials;
    plan.vhost = pipeline
        .spec
        .vhost_with(credentials.vhost.as_deref())
        .to_owned();
    let key = context::key(pipeline);
    ctx.remember_credentials(&key, credentials);

    let topology = apply_topology(ctx, &key, credentials, &plan).await?;
    topology_notes::publish(ctx, pipeline, &topology.report).await;

    let management = &topology.management;
    let workers = apply_children(ctx, pipeline, &owner, &plan, &secret, management)
        .await
        .map_err(|e| Failure::workers(&topology, e))?;
    prune_removed_outputs(ctx, pipeline, &owner, &plan, management)
        .await
        .map_err(|e| Failure::workers(&topology, e))?;
    if let Some(autoscalers) = &ctx.autoscalers {
        autoscalers.ensure(pipeline, &plan, &credentials.endpoint);
    }

    apply_status(ctx, pipeline, &owner, &plan, &topology, &workers)
        .await
        .map_err(Failure::unreported)
}

/// Validates the spec (including what only matters on Kubernetes) and plans its topology.
/// An invalid spec gets a condition naming the fields, no children, and no autoscaler.
fn validated_plan(
    ctx: &Context,
    pipeline: &LogPipeline,
    owner: &Owner,
) -> Result<TopologyPlan, Failure> {
    let (ns, name) = (owner.namespace.as_str(), owner.pipeline.as_str());
    plan(ns, name, &pipeline.spec)
        .and_then(|plan| children::check(&pipeline.spec).map(|()| plan))
        .map_err(|errors| {
            if let Some(autoscalers) = &ctx.autoscalers {
                autoscalers.stop(ns, name);
            }
            Failure::invalid_spec(errors)
        })
}

/// Applies the status of an applied pipeline: the conditions, each output's figures (also
/// recorded as metrics) and the printer-column aggregates.
async fn apply_status(
    ctx: &Context,
    pipeline: &LogPipeline,
    owner: &Owner,
    plan: &TopologyPlan,
    topology: &AppliedTopology,
    workers: &[WorkerReplicas],
) -> Result<(), Error> {
    let now = ctx.now();
    let conditions = topology.conditions(status::workers_state(workers));
    let stats = topology.stats.as_deref().map(Vec::as_slice);
    let outputs = status::output_figures(plan, workers, stats, now);
    for output in &outputs {
        ctx.metrics
            .output(&owner.namespace, &owner.pipeline, output);
    }
    let status = status::build(
        pipeline.meta().generation,
        &conditions,
        outputs,
        workers,
        pipeline.status.as_ref(),
        now,
    );
    ctx.apply_status(pipeline, &status).await
}
