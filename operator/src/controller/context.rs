//! What every reconcile shares: the client, the event recorder, the settings, the metrics,
//! the clock, and the count of consecutive failures per pipeline (for backoff).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use k8s_openapi::jiff::Timestamp;
use kube::{
    Client, Resource, ResourceExt,
    api::{Api, Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use logstream_api::{LogPipeline, LogPipelineStatus};
use logstream_autoscaler::shared::SharedQueueStats;
use logstream_broker::BrokerSecret;
use tracing::warn;

use super::{broker_connections::AdminConnections, error::Error, worker_users::WrittenUsers};
use crate::{
    metrics::Metrics,
    scaling::Autoscalers,
    settings::{FIELD_MANAGER, REPORTER, Settings},
    status,
};

/// Where "now" comes from; tests pin it.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Longest Event note the API server accepts.
const MAX_NOTE_BYTES: usize = 1024;

/// Shared state of the reconciles.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// The operator's settings.
    pub settings: Settings,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// The autoscalers the reconcile starts and the cleanup stops (absent in tests of the
    /// reconcile alone).
    pub autoscalers: Option<Arc<Autoscalers>>,
    /// The reconciles' administrative broker connections, kept open between reconciles.
    pub admins: AdminConnections,
    /// The vhosts' queue statistics, shared with the autoscalers.
    pub stats: Arc<SharedQueueStats>,
    /// The worker users this process wrote on a broker.
    pub worker_users: WrittenUsers,
    /// The plan each pipeline (`namespace/name`) had at its last full apply (its
    /// fingerprint; empty once the pipeline is deleted), and when its last apply ended.
    applied: Mutex<HashMap<String, (String, Instant)>>,
    /// When this context was made: no apply of this process came earlier.
    started: Instant,
    /// The broker credentials each pipeline last had: the cleanup of a pipeline whose Secret
    /// went first (a namespace being deleted) still reaches its broker.
    credentials: Mutex<HashMap<String, BrokerSecret>>,
    recorder: Recorder,
    clock: Clock,
    /// Consecutive failures by pipeline `namespace/name`.
    failures: Mutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context on `client`; `instance` names this replica on Events (its pod name).
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        instance: Option<String>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: REPORTER.into(),
                instance,
            },
        );
        Self {
            client,
            settings,
            metrics,
            autoscalers: None,
            admins: AdminConnections::default(),
            stats: Arc::default(),
            worker_users: WrittenUsers::default(),
            applied: Mutex::default(),
            started: Instant::now(),
            credentials: Mutex::default(),
            recorder,
            clock: Arc::new(Timestamp::now),
            failures: Mutex::default(),
        }
    }

    /// The same context, starting an autoscaler for every pipeline it applies.
    #[must_use]
    pub fn with_autoscalers(mut self, autoscalers: Arc<Autoscalers>) -> Self {
        self.stats = autoscalers.stats();
        self.autoscalers = Some(autoscalers);
        self
    }

    /// The same context with a fixed or fake clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// Counts one more consecutive failure of `pipeline` and returns the count.
    pub fn count_failure(&self, pipeline: &LogPipeline) -> u32 {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = failures.entry(key(pipeline)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// Forgets `pipeline`'s failures after a success.
    pub fn forget_failures(&self, pipeline: &LogPipeline) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&key(pipeline));
    }

    /// True when this process fully applied plan `fingerprint` of pipeline `key` already.
    pub fn was_applied(&self, key: &str, fingerprint: &str) -> bool {
        lock(&self.applied)
            .get(key)
            .is_some_and(|(f, _)| f == fingerprint)
    }

    /// Remembers that pipeline `key`'s plan `fingerprint` is applied, as of now.
    pub fn remember_applied(&self, key: &str, fingerprint: String) {
        lock(&self.applied).insert(key.to_owned(), (fingerprint, Instant::now()));
    }

    /// Remembers that an apply of pipeline `key` failed just now: it may have left objects
    /// that the next apply's listing must show.
    pub fn remember_failed_apply(&self, key: &str) {
        lock(&self.applied)
            .entry(key.to_owned())
            .or_insert_with(|| (String::new(), Instant::now()))
            .1 = Instant::now();
    }

    /// When pipeline `key`'s last apply (or its deletion) in this process ended, or when
    /// this process started: a listing of the broker begun later shows everything the
    /// pipeline's earlier applies left.
    pub fn last_applied(&self, key: &str) -> Instant {
        lock(&self.applied)
            .get(key)
            .map_or(self.started, |(_, at)| *at)
    }

    /// Remembers the credentials pipeline `key` was last applied with.
    pub fn remember_credentials(&self, key: &str, credentials: &BrokerSecret) {
        let mut known = lock(&self.credentials);
        if known.get(key) != Some(credentials) {
            known.insert(key.to_owned(), credentials.clone());
        }
    }

    /// The credentials pipeline `key` was last applied with, if this process applied it.
    pub fn known_credentials(&self, key: &str) -> Option<BrokerSecret> {
        lock(&self.credentials).get(key).cloned()
    }

    /// Forgets what this process knew of pipeline `key` (deleted).
    pub fn forget_pipeline(&self, key: &str) {
        // Kept, with no plan: a pipeline of the same name made again must not be applied
        // from a listing that shows this one's objects.
        lock(&self.applied).insert(key.to_owned(), (String::new(), Instant::now()));
        lock(&self.credentials).remove(key);
    }

    /// Server-side applies `status` to `pipeline`'s status subresource.
    pub async fn apply_status(
        &self,
        pipeline: &LogPipeline,
        status: &LogPipelineStatus,
    ) -> Result<(), Error> {
        let namespace = pipeline
            .namespace()
            .ok_or(Error::MissingMetadata("namespace"))?;
        let name = pipeline.name_any();
        let api: Api<LogPipeline> = Api::namespaced(self.client.clone(), &namespace);
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(status::apply_body(status)),
        )
        .await
        .map_err(|source| Error::ApplyStatus {
            namespace,
            name,
            source,
        })?;
        Ok(())
    }

    /// Publishes an Event about `pipeline`. Events are best effort: a failure is logged,
    /// never fatal.
    pub async fn publish(
        &self,
        pipeline: &LogPipeline,
        type_: EventType,
        reason: &str,
        action: &str,
        note: impl Into<String>,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(note.into(), MAX_NOTE_BYTES)),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self
            .recorder
            .publish(&event, &pipeline.object_ref(&()))
            .await
        {
            warn!(reason, error = %e, "failed to publish an event");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `namespace/name` of `pipeline`.
pub fn key(pipeline: &LogPipeline) -> String {
    format!(
        "{}/{}",
        pipeline.namespace().unwrap_or_default(),
        pipeline.name_any()
    )
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("short".into(), 1024), "short");
        let cut = truncate("é".repeat(600), 1024);
        assert!(cut.len() <= 1024 && cut.ends_with('…'), "{}", cut.len());
    }
}
