//! Why a reconcile failed, one variant per thing that can fail, and what to do about it: wait
//! for a spec change, recheck later, or retry with backoff.

use kube::runtime::finalizer;
use logstream_api::validate::ValidationErrors;
use logstream_broker::{BrokerError, CredentialsError, ManagementError};

/// A failed reconcile or cleanup.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object lacks metadata the API server always sets.
    #[error("failed to read the LogPipeline: it has no {0}")]
    MissingMetadata(&'static str),
    /// The spec has problems only the user can fix; nothing was applied.
    #[error("failed to validate the LogPipeline: {0}")]
    InvalidSpec(ValidationErrors),
    /// The broker Secret does not exist (yet).
    #[error("failed to read Secret {secret} in namespace {namespace}: it does not exist")]
    SecretNotFound {
        /// Namespace of the pipeline.
        namespace: String,
        /// Name of the Secret.
        secret: String,
    },
    /// The broker Secret could not be read.
    #[error("failed to read Secret {namespace}/{secret}: {source}")]
    ReadSecret {
        /// Namespace of the pipeline.
        namespace: String,
        /// Name of the Secret.
        secret: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The broker Secret exists but holds no usable credentials (its messages say "failed to
    /// read broker credentials from Secret …").
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The broker refused, was unreachable, or the topology conflicts.
    #[error("failed to apply the topology on vhost {vhost:?}: {source}")]
    ApplyTopology {
        /// The pipeline's vhost.
        vhost: String,
        /// The broker's error.
        source: BrokerError,
    },
    /// The broker objects of a deleted pipeline could not be deleted.
    #[error("failed to clean up the topology on vhost {vhost:?}: {source}")]
    CleanUpTopology {
        /// The pipeline's vhost.
        vhost: String,
        /// The broker's error.
        source: BrokerError,
    },
    /// The plan has no output the spec has (a bug: both come from one spec).
    #[error("failed to configure the workers of output {0}: the topology plan has no such output")]
    UnplannedOutput(String),
    /// A child could not be applied (or, for a worker-user Secret, created).
    #[error("failed to apply {kind} {namespace}/{name}: {source}")]
    ApplyChild {
        /// `Secret`, `ConfigMap`, `Deployment` or `Service`.
        kind: &'static str,
        /// Namespace of the pipeline.
        namespace: String,
        /// Name of the child.
        name: String,
        /// The client's error.
        source: kube::Error,
    },
    /// A child's name is taken by an object the operator did not make for this output: it
    /// is not taken over.
    #[error(
        "failed to apply {kind} {namespace}/{name}: {holder}, so the operator leaves it alone (rename the output or the LogPipeline, or delete that {kind})"
    )]
    NameConflict {
        /// `ConfigMap`, `Deployment`, `Service` or `Secret`.
        kind: &'static str,
        /// Namespace of the pipeline.
        namespace: String,
        /// Name of the child.
        name: String,
        /// Whose it is, in words.
        holder: String,
    },
    /// A child could not be read (to check whose it is before applying it).
    #[error("failed to read {kind} {namespace}/{name}: {source}")]
    ReadChild {
        /// `ConfigMap`, `Deployment`, `Service` or `Secret`.
        kind: &'static str,
        /// Namespace of the pipeline.
        namespace: String,
        /// Name of the child.
        name: String,
        /// The client's error.
        source: kube::Error,
    },
    /// An output's worker-user Secret holds no usable `username` and `password`.
    #[error("failed to read Secret {namespace}/{name}: it has no username and password")]
    InvalidWorkerUserSecret {
        /// Namespace of the pipeline.
        namespace: String,
        /// Name of the Secret.
        name: String,
    },
    /// An output's broker user could not be created, given its permissions, or deleted.
    #[error("failed to {action} broker user {user:?}: {source}")]
    WorkerUser {
        /// What was done.
        action: &'static str,
        /// The user.
        user: String,
        /// The management API's error.
        source: ManagementError,
    },
    /// The worker Deployments could not be listed (to find those of removed outputs).
    #[error("failed to list the worker Deployments of {namespace}/{pipeline}: {source}")]
    ListWorkers {
        /// Namespace of the pipeline.
        namespace: String,
        /// Name of the pipeline.
        pipeline: String,
        /// The client's error.
        source: kube::Error,
    },
    /// A child of a removed output could not be deleted.
    #[error("failed to delete {kind} {namespace}/{name}: {source}")]
    DeleteChild {
        /// `ConfigMap`, `Deployment` or `Service`.
        kind: &'static str,
        /// Namespace of the pipeline.
        namespace: String,
        /// Name of the child.
        name: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The status could not be applied.
    #[error("failed to apply the status of LogPipeline {namespace}/{name}: {source}")]
    ApplyStatus {
        /// Namespace of the pipeline.
        namespace: String,
        /// Name of the pipeline.
        name: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The finalizer could not be added.
    #[error("failed to add the finalizer: {0}")]
    AddFinalizer(#[source] kube::Error),
    /// The finalizer could not be removed.
    #[error("failed to remove the finalizer: {0}")]
    RemoveFinalizer(#[source] kube::Error),
}

impl Error {
    /// A short stable label for metrics, events and condition reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::MissingMetadata(_) | Self::UnplannedOutput(_) => "InvalidObject",
            Self::InvalidSpec(_) => "InvalidSpec",
            Self::SecretNotFound { .. } => "SecretNotFound",
            Self::Credentials(_) => "InvalidSecret",
            Self::ApplyTopology { source, .. } | Self::CleanUpTopology { source, .. } => {
                source.category()
            }
            Self::NameConflict { .. } => "NameConflict",
            Self::InvalidWorkerUserSecret { .. } => "InvalidSecret",
            Self::WorkerUser { .. } => "ManagementError",
            Self::ReadSecret { .. }
            | Self::ReadChild { .. }
            | Self::ApplyChild { .. }
            | Self::ListWorkers { .. }
            | Self::DeleteChild { .. }
            | Self::ApplyStatus { .. }
            | Self::AddFinalizer(_)
            | Self::RemoveFinalizer(_) => "KubernetesApiError",
        }
    }

    /// True when only a change of the LogPipeline can help: retrying is pointless.
    pub fn waits_for_change(&self) -> bool {
        matches!(
            self,
            Self::InvalidSpec(_) | Self::MissingMetadata(_) | Self::UnplannedOutput(_)
        )
    }

    /// True for a topology or name conflict: the user must act on the broker, the cluster or
    /// the spec, which the operator checks again at its normal recheck interval rather than in
    /// a hot loop.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Self::ApplyTopology {
                source: BrokerError::Conflict(_),
                ..
            } | Self::NameConflict { .. }
        )
    }

    /// Unwraps the finalizer helper's error into ours.
    pub fn from_finalizer(e: finalizer::Error<Self>) -> Self {
        match e {
            finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
            finalizer::Error::AddFinalizer(source) => Self::AddFinalizer(source),
            finalizer::Error::RemoveFinalizer(source) => Self::RemoveFinalizer(source),
            finalizer::Error::UnnamedObject => Self::MissingMetadata("name"),
            finalizer::Error::InvalidFinalizer => Self::MissingMetadata("valid finalizer"),
        }
    }
}
