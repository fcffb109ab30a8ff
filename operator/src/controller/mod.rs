//! The LogPipeline controller: watches LogPipelines and the children it owns, and runs
//! [`reconcile`] for each pipeline that changed, whose children changed, or whose recheck
//! interval has passed.
//!
//! - [`reconcile`]: the steps of one reconcile, and the retry policy;
//! - `broker_secret`, `apply_topology`, `topology_notes`, `apply_children`, `prune_outputs`:
//!   the steps that touch the broker or the API server;
//! - `failure`: how a failed step is reported (status, Event, error);
//! - `cleanup`: the broker cleanup behind the finalizer;
//! - [`context`], [`error`]: what every reconcile shares, and why one failed.

mod apply_children;
mod apply_topology;
mod broker_secret;
mod cleanup;
pub mod context;
pub mod error;
mod failure;
mod prune_outputs;
pub mod reconcile;
mod topology_notes;

use std::{future::Future, sync::Arc};

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Secret, Service},
};
use kube::{
    Api, Client,
    runtime::{
        Controller, Predicate, WatchStreamExt, controller::Config, predicates, reflector, watcher,
    },
};
use logstream_api::LogPipeline;
use tracing::{debug, warn};

pub use context::{Clock, Context};
pub use error::Error;
pub use reconcile::{error_policy, reconcile};

use crate::children::labels;

/// Which namespaces the operator manages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace.
    #[default]
    Cluster,
    /// One namespace.
    Namespace(String),
}

impl Scope {
    /// An `Api` of `K` in this scope.
    pub fn api<K>(&self, client: Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match self {
            Self::Cluster => Api::all(client),
            Self::Namespace(ns) => Api::namespaced(client, ns),
        }
    }
}

/// Runs the controller until `shutdown` completes (then finishes the reconciles in flight).
pub async fn run(
    ctx: Arc<Context>,
    scope: Scope,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (reader, writer) = reflector::store();
    // Status patches (our own included) do not change the generation: filtering on it keeps
    // the operator from reconciling its own status writes in a loop. Finalizer changes pass.
    let pipelines = reflector(
        writer,
        watcher(
            scope.api::<LogPipeline>(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(
        predicates::generation.combine(predicates::finalizers),
        Default::default(),
    );
    // Only the children this operator manages are watched (and cached).
    let children = watcher::Config::default().labels(&labels::managed_selector());
    Controller::for_stream(pipelines, reader)
        .owns(scope.api::<Deployment>(client.clone()), children.clone())
        .owns(scope.api::<ConfigMap>(client.clone()), children.clone())
        .owns(scope.api::<Service>(client.clone()), children.clone())
        .owns(scope.api::<Secret>(client), children)
        .with_config(Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|outcome| async move {
            match outcome {
                Ok((object, action)) => debug!(%object, ?action, "reconcile scheduled"),
                Err(e) => warn!(error = %e, "controller"),
            }
        })
        .await;
}
