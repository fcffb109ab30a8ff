//! The operator's autoscalers: one task per applied LogPipeline, started (or restarted when
//! its broker, vhost, outputs or scaling settings change) by the reconcile and stopped by the
//! cleanup, and one reporter that turns their records into status fields, Events and metrics.
//!
//! The autoscaler writes under its own field manager ([`AUTOSCALER_FIELD_MANAGER`]): the
//! Deployments' scale subresource, and per output `desiredReplicas`, `lastScaleTime` and
//! `lastScaleReason` plus the `ScalingActive` condition in the status. The reconcile never
//! writes those, so the two never undo each other.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use k8s_openapi::{
    api::core::v1::ObjectReference, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use logstream_api::{LogPipeline, TopologyPlan};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tracing::{debug, warn};

use logstream_api::digest;
use logstream_autoscaler::{
    OutputScaling, PipelineAutoscaler, ScaleRecord,
    shared::{SharedAdmins, SharedQueueStats},
    supervise,
};
use logstream_broker::BrokerEndpoint;

use super::deployment::{AUTOSCALER_FIELD_MANAGER, DeploymentScale};
use crate::{children, metrics::Metrics, settings::REPORTER};

/// Records kept for slow readers (the reporter, the dashboard) before the oldest are dropped.
const RECORD_BACKLOG: usize = 1024;

/// Removals kept for a slow dashboard.
const REMOVAL_BACKLOG: usize = 128;

/// Condition type the autoscaler owns.
pub const SCALING_ACTIVE: &str = "ScalingActive";

struct Running {
    fingerprint: String,
    stop: watch::Sender<bool>,
}

/// The autoscalers of every pipeline this operator manages.
pub struct Autoscalers {
    client: Client,
    running: Mutex<HashMap<String, Running>>,
    /// The LogPipeline each `namespace/name` refers to, for Events.
    references: Mutex<HashMap<String, ObjectReference>>,
    records: broadcast::Sender<ScaleRecord>,
    /// `namespace/name` of each pipeline whose autoscaler was stopped.
    removals: broadcast::Sender<String>,
    stats: Arc<SharedQueueStats>,
    admins: Arc<SharedAdmins>,
    /// The autoscalers' requests to the API server at once.
    api_requests: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Autoscalers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Autoscalers")
            .field("running", &self.running().len())
            .finish_non_exhaustive()
    }
}

impl Autoscalers {
    /// No autoscalers yet; they will scale Deployments through `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            running: Mutex::default(),
            references: Mutex::default(),
            records: broadcast::channel(RECORD_BACKLOG).0,
            removals: broadcast::channel(REMOVAL_BACKLOG).0,
            stats: Arc::default(),
            admins: Arc::default(),
            api_requests: Arc::new(tokio::sync::Semaphore::new(
                super::deployment::API_REQUESTS_AT_ONCE,
            )),
        }
    }

    /// The vhosts' queue statistics the autoscalers share (the reconciles read them too).
    pub fn stats(&self) -> Arc<SharedQueueStats> {
        self.stats.clone()
    }

    /// A receiver of every record of every autoscaler (lagging receivers lose the oldest).
    pub fn subscribe(&self) -> broadcast::Receiver<ScaleRecord> {
        self.records.subscribe()
    }

    /// A receiver of `namespace/name` for every pipeline whose autoscaler [`stop`](Self::stop)
    /// ended (deleted, or its spec became invalid): the dashboard forgets it. No record of
    /// that pipeline follows its removal.
    pub fn removals(&self) -> broadcast::Receiver<String> {
        self.removals.subscribe()
    }

    /// The sender the autoscalers publish on (to feed the dashboard or tests).
    pub fn sender(&self) -> broadcast::Sender<ScaleRecord> {
        self.records.clone()
    }

    /// `namespace/name` of the pipelines being autoscaled.
    pub fn running(&self) -> Vec<String> {
        let mut keys: Vec<String> = lock(&self.running).keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Starts autoscaling `pipeline` (whose topology `plan` was just applied on the broker
    /// at `endpoint`), or restarts it when what it depends on changed. Cheap when nothing did.
    pub fn ensure(&self, pipeline: &LogPipeline, plan: &TopologyPlan, endpoint: &BrokerEndpoint) {
        let (Some(namespace), name) = (pipeline.namespace(), pipeline.name_any()) else {
            return;
        };
        let key = format!("{namespace}/{name}");
        let settings: Vec<_> = pipeline
            .spec
            .outputs
            .iter()
            .map(|o| (o.name.clone(), o.scaling_settings()))
            .collect();
        let fingerprint = digest::hex(&format!(
            "{:?}|{}|{}|{:?}",
            endpoint,
            endpoint.amqp_uri_with_password(),
            plan.vhost,
            settings
        ));
        lock(&self.references).insert(key.clone(), pipeline.object_ref(&()));
        let mut running = lock(&self.running);
        if running
            .get(&key)
            .is_some_and(|r| r.fingerprint == fingerprint)
        {
            return;
        }
        let outputs = settings
            .into_iter()
            .filter_map(|(output, settings)| {
                let deployment = children::worker_name(&name, &output);
                let target = DeploymentScale::sharing(
                    self.client.clone(),
                    &namespace,
                    &deployment,
                    Arc::clone(&self.api_requests),
                );
                OutputScaling::for_output(plan, &output, settings, Box::new(target))
            })
            .collect();
        let autoscaler = PipelineAutoscaler::new(key.clone(), plan.vhost.clone(), outputs)
            .with_shared_stats(self.stats.clone());
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(supervise(
            autoscaler,
            endpoint.clone(),
            self.admins.clone(),
            stopped,
            self.records.clone(),
        ));
        if let Some(previous) = running.insert(key.clone(), Running { fingerprint, stop }) {
            let _ = previous.stop.send(true);
            debug!(pipeline = %key, "autoscaler restarted with new settings");
        }
    }

    /// Stops autoscaling pipeline `namespace/name` (deleted, or no longer valid).
    pub fn stop(&self, namespace: &str, name: &str) {
        let key = format!("{namespace}/{name}");
        lock(&self.references).remove(&key);
        if let Some(running) = lock(&self.running).remove(&key) {
            let _ = running.stop.send(true);
            // Nobody listening is fine.
            let _ = self.removals.send(key);
        }
    }

    /// Stops every autoscaler (the replica lost the lead or is shutting down).
    pub fn stop_all(&self) {
        for (_, running) in lock(&self.running).drain() {
            let _ = running.stop.send(true);
        }
    }

    /// Turns records into status fields, Events and metrics until the operator stops.
    /// Status and Events are written when the count changes or readings go missing or come
    /// back, not on every poll.
    pub async fn report(self: Arc<Self>, metrics: Arc<Metrics>, instance: Option<String>) {
        let recorder = Recorder::new(
            self.client.clone(),
            Reporter {
                controller: REPORTER.into(),
                instance,
            },
        );
        let mut records = self.subscribe();
        // Whether each output's readings were missing at its last record.
        let mut missing: HashMap<OutputKey, bool> = HashMap::new();
        loop {
            let record = match records.recv().await {
                Ok(record) => record,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(skipped = n, "autoscaler reporter fell behind");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let Some((namespace, pipeline)) = record.pipeline.split_once('/') else {
                continue;
            };
            let is_missing = metrics.autoscaled(&record);
            let was_missing = missing.insert(OutputKey::of(&record), is_missing);
            let missing_changed = was_missing != Some(is_missing);
            if !record.scaled() && !missing_changed {
                continue;
            }
            let condition = missing_changed.then_some(is_missing);
            let body = status_patch(&record, condition, Timestamp::now());
            let api: Api<LogPipeline> = Api::namespaced(self.client.clone(), namespace);
            if let Err(e) = api
                .patch_status(
                    pipeline,
                    &PatchParams::apply(AUTOSCALER_FIELD_MANAGER).force(),
                    &Patch::Apply(&body),
                )
                .await
            {
                warn!(pipeline = %record.pipeline, error = %e, "failed to apply the autoscaler's status");
            }
            let reference = lock(&self.references).get(&record.pipeline).cloned();
            if let Some(reference) = reference
                && let Some(event) = event_for(&record, is_missing, missing_changed)
                && let Err(e) = recorder.publish(&event, &reference).await
            {
                warn!(error = %e, "failed to publish a scaling event");
            }
        }
    }
}

/// One output of one pipeline (`namespace/name`), as records name them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct OutputKey {
    pipeline: String,
    output: String,
}

impl OutputKey {
    fn of(record: &ScaleRecord) -> Self {
        Self {
            pipeline: record.pipeline.clone(),
            output: record.output.clone(),
        }
    }
}

/// The autoscaler's part of the status: the output's desired count and last change, and the
/// `ScalingActive` condition when `missing` (whether readings are missing) changed.
fn status_patch(record: &ScaleRecord, missing: Option<bool>, now: Timestamp) -> Value {
    let mut output = json!({ "name": record.output, "queue": record.queue });
    if record.error.is_none() {
        output["desiredReplicas"] = json!(record.decision.desired);
    }
    if record.scaled() {
        output["lastScaleTime"] = json!(now.to_string());
        output["lastScaleReason"] = json!(record.decision.reason);
    }
    let mut status = json!({ "outputs": [output] });
    let Some(missing) = missing else {
        return apply_body(status);
    };
    let (state, reason, message) = if missing {
        let why = record
            .error
            .clone()
            .unwrap_or_else(|| record.decision.reason.clone());
        (
            "False",
            "MetricsMissing",
            format!("output {}: {why}", record.output),
        )
    } else {
        (
            "True",
            "QueueReadable",
            format!(
                "output {}: scaling on queue depth and message age",
                record.output
            ),
        )
    };
    status["conditions"] = json!([{
        "type": SCALING_ACTIVE,
        "status": state,
        "reason": reason,
        "message": message,
        "lastTransitionTime": Time(now),
    }]);
    apply_body(status)
}

fn apply_body(status: Value) -> Value {
    json!({
        "apiVersion": "logstream.io/v1alpha1",
        "kind": "LogPipeline",
        "status": status,
    })
}

fn event_for(record: &ScaleRecord, missing: bool, missing_changed: bool) -> Option<Event> {
    if record.scaled() {
        return Some(Event {
            type_: EventType::Normal,
            reason: "Scaled".into(),
            note: Some(format!(
                "output {}: {}",
                record.output, record.decision.reason
            )),
            action: "Scale".into(),
            secondary: None,
        });
    }
    if missing_changed && missing {
        return Some(Event {
            type_: EventType::Warning,
            reason: "MetricsMissing".into(),
            note: Some(format!(
                "output {}: holding replicas: {}",
                record.output,
                record
                    .error
                    .clone()
                    .unwrap_or_else(|| record.decision.reason.clone())
            )),
            action: "Scale".into(),
            secondary: None,
        });
    }
    None
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
