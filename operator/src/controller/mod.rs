//! The LogPipeline controller: watches LogPipelines and the children it owns, and runs
//! [`reconcile`] for each pipeline that changed, whose children changed, or whose recheck
//! interval has passed.
//!
//! - [`reconcile`]: the steps of one reconcile, and the retry policy;
//! - `broker_secret`, `apply_topology`, `topology_notes`, `apply_children`, `worker_users`,
//!   `prune_outputs`: the steps that touch the broker or the API server;
//! - `broker_connections`: the administrative broker connections the reconciles share;
//! - `failure`: how a failed step is reported (status, Event, error);
//! - `cleanup`: the broker cleanup behind the finalizer;
//! - [`context`], [`error`]: what every reconcile shares, and why one failed.

mod apply_children;
mod apply_topology;
mod broker_connections;
mod broker_secret;
mod cleanup;
pub mod context;
pub mod error;
mod failure;
mod prune_outputs;
pub mod reconcile;
mod topology_notes;
pub mod worker_users;

use std::{future::Future, sync::Arc};

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Service},
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
    /// Several namespaces (each watched on its own: the operator may have Roles there only).
    Namespaces(Vec<String>),
}

impl Scope {
    /// Every namespace when `namespaces` is empty, else those.
    pub fn of(mut namespaces: Vec<String>) -> Self {
        namespaces.retain(|n| !n.trim().is_empty());
        namespaces.dedup();
        match namespaces.len() {
            0 => Self::Cluster,
            1 => Self::Namespace(namespaces.remove(0)),
            _ => Self::Namespaces(namespaces),
        }
    }

    /// The scopes to watch one by one: each namespace of [`Scope::Namespaces`] alone.
    fn parts(self) -> Vec<Self> {
        match self {
            Self::Namespaces(all) => all.into_iter().map(Self::Namespace).collect(),
            one => vec![one],
        }
    }

    /// An `Api` of `K` in this scope (the first namespace of several).
    pub fn api<K>(&self, client: Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match self {
            Self::Cluster => Api::all(client),
            Self::Namespace(ns) => Api::namespaced(client, ns),
            Self::Namespaces(all) => Api::namespaced(client, &all[0]),
        }
    }
}

/// Runs the controller until `shutdown` completes (then finishes the reconciles in flight):
/// one controller per namespace of `scope` (a cluster-wide list or watch needs a
/// ClusterRole), sharing `ctx`, each reconciling up to `concurrency` pipelines at once.
pub async fn run(
    ctx: Arc<Context>,
    scope: Scope,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let parts = scope.parts();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let controllers = parts.into_iter().map(|part| {
        let mut stopped = stopped.clone();
        let done = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        run_one(ctx.clone(), part, concurrency, done)
    });
    let all = futures::future::join_all(controllers);
    tokio::pin!(all);
    tokio::select! {
        _ = &mut all => {}
        () = shutdown => {
            let _ = stop.send(true);
            all.await;
        }
    }
}

/// One controller over the LogPipelines of `scope` (every namespace, or one).
async fn run_one(
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
        .owns(scope.api::<Service>(client), children)
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
