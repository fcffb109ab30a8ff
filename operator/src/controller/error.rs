//! Why a reconcile failed, and what to do about it: wait for a spec change, recheck later,
//! or retry with backoff.

use kube::runtime::finalizer;
use logstream_api::validate::ValidationErrors;

use logstream_broker::{BrokerError, CredentialsError};

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec has problems only the user can fix; nothing was applied.
    #[error("invalid LogPipeline: {0}")]
    InvalidSpec(ValidationErrors),
    /// The broker Secret does not exist (yet).
    #[error("failed to read Secret {secret} in namespace {namespace}: it does not exist")]
    SecretNotFound {
        /// Namespace of the pipeline.
        namespace: String,
        /// Name of the Secret.
        secret: String,
    },
    /// The broker Secret exists but holds no usable credentials.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The broker refused, was unreachable, or the topology conflicts.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// A Kubernetes API call failed.
    #[error("failed to {action}: {source}")]
    Kube {
        /// What the operator was doing, e.g. `apply Deployment games/game-logs-security`.
        action: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The object lacks metadata the API server always sets.
    #[error("LogPipeline has no {0}")]
    MissingMetadata(&'static str),
}

impl Error {
    /// A `kube` failure while doing `action`.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Self::Kube { action, source }
    }

    /// A short stable label for metrics, events and condition reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidSpec(_) => "InvalidSpec",
            Self::SecretNotFound { .. } => "SecretNotFound",
            Self::Credentials(_) => "InvalidSecret",
            Self::Broker(e) => e.category(),
            Self::Kube { .. } => "KubernetesApiError",
            Self::MissingMetadata(_) => "InvalidObject",
        }
    }

    /// True when only a change of the LogPipeline can help: retrying is pointless.
    pub fn waits_for_change(&self) -> bool {
        matches!(self, Self::InvalidSpec(_) | Self::MissingMetadata(_))
    }

    /// True for a topology conflict: the user must act on the broker or the spec, which the
    /// operator checks again at its normal recheck interval rather than in a hot loop.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Broker(BrokerError::Conflict(_)))
    }

    /// Unwraps the finalizer helper's error into ours.
    pub fn from_finalizer(e: finalizer::Error<Self>) -> Self {
        match e {
            finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
            finalizer::Error::AddFinalizer(source) => Self::Kube {
                action: "add the finalizer".into(),
                source,
            },
            finalizer::Error::RemoveFinalizer(source) => Self::Kube {
                action: "remove the finalizer".into(),
                source,
            },
            finalizer::Error::UnnamedObject => Self::MissingMetadata("name"),
            finalizer::Error::InvalidFinalizer => Self::MissingMetadata("valid finalizer"),
        }
    }
}
