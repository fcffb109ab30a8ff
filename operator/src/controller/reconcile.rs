//! One reconcile of a LogPipeline, as a pipeline: read (spec, broker Secret) → validate →
//! plan → apply to the broker → apply the children → apply the status. Only the first and
//! the last three steps do I/O; every failure ends in a status that says why.

use std::{sync::Arc, time::Instant};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Secret, Service},
};
use kube::{
    Resource, ResourceExt,
    api::{Api, DeleteParams, ListParams, Patch, PatchParams},
    runtime::{
        controller::Action,
        events::EventType,
        finalizer::{Event as FinalizerEvent, finalizer},
    },
};
use logstream_api::{
    LogPipeline, TopologyPlan, digest, plan, validate, worker_config::WorkerConfig,
};
use logstream_broker::{
    BrokerAdmin, BrokerError, BrokerSecret, QueueStats, Report,
    secret::{self as credentials},
};
use tracing::{info, instrument, warn};

use super::{cleanup::cleanup, context::Context, error::Error};
use crate::{
    children::{self, Owner, WorkerPod, labels},
    settings::{FIELD_MANAGER, FINALIZER},
    status::{self, Conditions, Verdict, WorkerReplicas, reasons},
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

async fn apply(pipeline: &LogPipeline, ctx: &Context) -> Result<Action, Error> {
    let owner = Owner::of(pipeline).ok_or(Error::MissingMetadata("namespace, name or uid"))?;
    let (ns, name) = (owner.namespace.as_str(), owner.pipeline.as_str());

    // Validate: an invalid spec gets a condition naming the fields, and no children.
    let checked = validate(ns, name, &pipeline.spec).and_then(|()| children::check(&pipeline.spec));
    if let Err(errors) = checked {
        if let Some(autoscalers) = &ctx.autoscalers {
            autoscalers.stop(ns, name);
        }
        let conditions = Conditions::invalid_spec(&errors);
        fail(
            ctx,
            pipeline,
            &conditions,
            reasons::INVALID_SPEC,
            "Validate",
        )
        .await;
        return Err(Error::InvalidSpec(errors));
    }

    // Read the broker credentials.
    let creds = match load_credentials(ctx, pipeline, ns).await {
        Ok(creds) => creds,
        Err(e) => {
            let conditions = Conditions::broker_failed(e.category(), e.to_string());
            fail(ctx, pipeline, &conditions, e.category(), "ReadBrokerSecret").await;
            return Err(e);
        }
    };
    let vhost = pipeline.spec.vhost_with(creds.vhost.as_deref()).to_owned();
    let mut plan = plan(ns, name, &pipeline.spec).map_err(Error::InvalidSpec)?;
    plan.vhost.clone_from(&vhost);

    // Apply the topology to the broker.
    let (connected, report, queues) = match apply_topology(&creds, &plan).await {
        Ok(applied) => applied,
        Err((connected, e)) => {
            let conditions = match connected {
                None => Conditions::broker_failed(e.category(), e.to_string()),
                Some(connected) => {
                    Conditions::topology_failed(&connected, e.category(), e.to_string())
                }
            };
            fail(ctx, pipeline, &conditions, e.category(), "ApplyTopology").await;
            return Err(Error::Broker(e));
        }
    };
    report_topology(ctx, pipeline, &report).await;

    // Apply the children.
    let replicas = match apply_children(ctx, pipeline, &owner, &plan, &creds).await {
        Ok(replicas) => replicas,
        Err(e) => {
            let conditions = Conditions {
                broker: Verdict::yes(reasons::CONNECTED, connected),
                topology: Verdict::yes(reasons::TOPOLOGY_APPLIED, topology_message(&plan, &report)),
                workers: Verdict::no(e.category(), e.to_string()),
            };
            fail(ctx, pipeline, &conditions, e.category(), "ApplyWorkers").await;
            return Err(e);
        }
    };
    prune_removed_outputs(ctx, pipeline, &owner).await?;
    if let Some(autoscalers) = &ctx.autoscalers {
        autoscalers.ensure(pipeline, &plan, &creds.endpoint);
    }

    // Apply the status.
    let now = ctx.now();
    let conditions = Conditions {
        broker: Verdict::yes(reasons::CONNECTED, connected),
        topology: Verdict::yes(reasons::TOPOLOGY_APPLIED, topology_message(&plan, &report)),
        workers: status::workers_verdict(&replicas),
    };
    let outputs = status::output_figures(&plan, &replicas, queues.as_deref(), now);
    for output in &outputs {
        ctx.metrics.output(ns, name, output);
    }
    let status = status::build(
        pipeline.meta().generation,
        &conditions,
        outputs,
        &replicas,
        pipeline.status.as_ref(),
        now,
    );
    ctx.apply_status(pipeline, &status).await?;
    Ok(Action::requeue(ctx.settings.recheck_interval))
}

/// Writes the status of a failed reconcile and a Warning Event with the same words. Errors
/// here are logged: the original failure is what the caller reports.
async fn fail(
    ctx: &Context,
    pipeline: &LogPipeline,
    conditions: &Conditions,
    reason: &str,
    action: &str,
) {
    let outputs = status::bare_outputs(
        &pipeline.namespace().unwrap_or_default(),
        &pipeline.name_any(),
        &pipeline.spec,
    );
    let status = status::build(
        pipeline.meta().generation,
        conditions,
        outputs,
        &[],
        pipeline.status.as_ref(),
        ctx.now(),
    );
    if let Err(e) = ctx.apply_status(pipeline, &status).await {
        warn!(error = %e, "failed to write the failure into the status");
    }
    ctx.publish(
        pipeline,
        EventType::Warning,
        reason,
        action,
        conditions.ready().message,
    )
    .await;
}

/// Reads the broker credentials from the Secret the spec names.
pub(super) async fn load_credentials(
    ctx: &Context,
    pipeline: &LogPipeline,
    namespace: &str,
) -> Result<BrokerSecret, Error> {
    let secret = credentials::secret_name(&pipeline.spec.broker).ok_or_else(|| {
        Error::InvalidSpec(logstream_api::ValidationErrors(vec![
            logstream_api::FieldError {
                path: "spec.broker".into(),
                message: "set secretRef or clusterRef".into(),
            },
        ]))
    })?;
    read_secret(ctx, namespace, &secret).await
}

/// Reads the credentials in Secret `secret`.
pub(super) async fn read_secret(
    ctx: &Context,
    namespace: &str,
    secret: &str,
) -> Result<BrokerSecret, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let found = secrets
        .get_opt(secret)
        .await
        .map_err(Error::kube(format!("read Secret {namespace}/{secret}")))?;
    let Some(found) = found else {
        return Err(Error::SecretNotFound {
            namespace: namespace.to_owned(),
            secret: secret.to_owned(),
        });
    };
    Ok(credentials::from_secret_data(
        secret,
        &found
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(key, value)| (key, value.0))
            .collect(),
    )?)
}

type Applied = (String, Report, Option<Vec<QueueStats>>);

/// Connects, applies the plan and reads the vhost's queue statistics. The error carries the
/// "connected" message when the login worked, so the status can tell a broker that refused
/// from a topology that conflicts.
async fn apply_topology(
    creds: &BrokerSecret,
    plan: &TopologyPlan,
) -> Result<Applied, (Option<String>, BrokerError)> {
    let admin = BrokerAdmin::connect(&creds.endpoint, &plan.vhost)
        .await
        .map_err(|e| (None, e))?;
    let connected = format!(
        "logged in to {} as user {}",
        admin.endpoint(),
        admin.endpoint().username()
    );
    let applied = admin.apply_and_list(plan).await;
    admin.close().await;
    match applied {
        Ok((report, queues)) => Ok((connected, report, queues)),
        Err(e) => {
            let reachable = !matches!(e, BrokerError::Unreachable { .. });
            Err((reachable.then_some(connected), e))
        }
    }
}

fn topology_message(plan: &TopologyPlan, report: &Report) -> String {
    let mut message = format!(
        "exchange {}, {} queues and {} bindings are in place on vhost {}",
        plan.exchange().name,
        plan.queues.len(),
        plan.bindings.len(),
        plan.vhost
    );
    for warning in &report.warnings {
        message.push_str("; ");
        message.push_str(warning);
    }
    message
}

/// Events for what the broker apply changed or had to keep.
async fn report_topology(ctx: &Context, pipeline: &LogPipeline, report: &Report) {
    if !report.changes.is_empty() {
        let note = report
            .changes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        info!(changes = %note, "topology changed");
        ctx.publish(
            pipeline,
            EventType::Normal,
            "TopologyChanged",
            "ApplyTopology",
            note,
        )
        .await;
    }
    if !report.retained.is_empty() {
        let note = retained_note(report);
        ctx.publish(
            pipeline,
            EventType::Warning,
            "QueuesRetained",
            "ApplyTopology",
            note,
        )
        .await;
    }
}

/// Words for the queues a delete or apply kept because they hold messages.
pub(super) fn retained_note(report: &Report) -> String {
    let kept = report
        .retained
        .iter()
        .map(|q| {
            let plural = if q.messages == 1 { "" } else { "s" };
            format!("{} ({} message{plural})", q.name, q.messages)
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("kept queues that still hold messages: {kept}")
}

/// Applies the broker Secret and each output's ConfigMap, Deployment and Service; returns
/// each output's replicas as the API server reports them.
async fn apply_children(
    ctx: &Context,
    pipeline: &LogPipeline,
    owner: &Owner,
    plan: &TopologyPlan,
    creds: &BrokerSecret,
) -> Result<Vec<(String, WorkerReplicas)>, Error> {
    let ns = owner.namespace.as_str();
    let params = PatchParams::apply(FIELD_MANAGER).force();

    let secret = children::broker_secret(owner, &creds.endpoint, &plan.vhost);
    let secret_name = children::broker_secret_name(&owner.pipeline);
    let applied = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .patch(&secret_name, &params, &Patch::Apply(&secret))
        .await
        .map_err(Error::kube(format!("apply Secret {ns}/{secret_name}")))?;
    let secret_version = applied.metadata.resource_version;

    let config_maps = Api::<ConfigMap>::namespaced(ctx.client.clone(), ns);
    let deployments = Api::<Deployment>::namespaced(ctx.client.clone(), ns);
    let services = Api::<Service>::namespaced(ctx.client.clone(), ns);
    let mut replicas = Vec::with_capacity(pipeline.spec.outputs.len());
    for output in &pipeline.spec.outputs {
        let child = children::worker_name(&owner.pipeline, &output.name);
        let config =
            WorkerConfig::from_plan(plan, ns, &owner.pipeline, &pipeline.spec, &output.name)
                .ok_or_else(|| Error::MissingMetadata("planned output"))?;
        let config_map = children::config_map(owner, &config);
        let digest = digest::hex(&config.to_yaml());
        config_maps
            .patch(&child, &params, &Patch::Apply(&config_map))
            .await
            .map_err(Error::kube(format!("apply ConfigMap {ns}/{child}")))?;

        let image = output
            .worker
            .as_ref()
            .and_then(|w| w.image.as_deref())
            .unwrap_or(&ctx.settings.worker_image);
        let pod = WorkerPod {
            image,
            config_digest: &digest,
            secret_version: secret_version.as_deref(),
        };
        let deployment = children::deployment(owner, output, &pod);
        let applied = deployments
            .patch(&child, &params, &Patch::Apply(&deployment))
            .await
            .map_err(Error::kube(format!("apply Deployment {ns}/{child}")))?;

        let service = children::service(owner, &output.name);
        services
            .patch(&child, &params, &Patch::Apply(&service))
            .await
            .map_err(Error::kube(format!("apply Service {ns}/{child}")))?;

        replicas.push((output.name.clone(), worker_replicas(&applied)));
    }
    Ok(replicas)
}

fn worker_replicas(deployment: &Deployment) -> WorkerReplicas {
    let count = |n: Option<i32>| n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    WorkerReplicas {
        // Absent means the API default of one replica.
        wanted: deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .map_or(1, |n| count(Some(n))),
        ready: count(deployment.status.as_ref().and_then(|s| s.ready_replicas)),
    }
}

/// Deletes the Deployment, ConfigMap and Service of outputs that were removed from the spec
/// (owner references only clean up when the whole pipeline goes).
async fn prune_removed_outputs(
    ctx: &Context,
    pipeline: &LogPipeline,
    owner: &Owner,
) -> Result<(), Error> {
    let ns = owner.namespace.as_str();
    let deployments = Api::<Deployment>::namespaced(ctx.client.clone(), ns);
    let listed = deployments
        .list(&ListParams::default().labels(&labels::pipeline_selector(&owner.pipeline)))
        .await
        .map_err(Error::kube(format!(
            "list the worker Deployments of {ns}/{}",
            owner.pipeline
        )))?;
    let removed: Vec<String> = listed
        .items
        .iter()
        .filter(|d| {
            d.owner_references()
                .iter()
                .any(|r| r.uid == owner.reference.uid)
        })
        .filter_map(|d| d.labels().get(labels::OUTPUT).cloned())
        .filter(|output| pipeline.spec.output(output).is_none())
        .collect();
    for output in removed {
        let child = children::worker_name(&owner.pipeline, &output);
        delete_if_present(&deployments, ns, "Deployment", &child).await?;
        let config_maps = Api::<ConfigMap>::namespaced(ctx.client.clone(), ns);
        delete_if_present(&config_maps, ns, "ConfigMap", &child).await?;
        let services = Api::<Service>::namespaced(ctx.client.clone(), ns);
        delete_if_present(&services, ns, "Service", &child).await?;
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

async fn delete_if_present<K>(api: &Api<K>, ns: &str, kind: &str, name: &str) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(e) => Err(Error::kube(format!("delete {kind} {ns}/{name}"))(e)),
    }
}
