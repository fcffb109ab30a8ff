//! What the autoscaler scales: a Deployment's scale subresource in the cluster, or local
//! worker processes under `logstream dev`.

use futures::future::BoxFuture;

/// Why a scale target could not be read or changed.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action} {target}: {reason}")]
pub struct ScaleError {
    /// `read the replicas of` or `scale`.
    pub action: &'static str,
    /// The target, e.g. `deployment games/app-security`.
    pub target: String,
    /// What went wrong.
    pub reason: String,
}

/// Something with a replica count the autoscaler owns.
pub trait ScaleTarget: Send + Sync {
    /// A short description for logs and errors, e.g. `deployment games/app-security`.
    fn describe(&self) -> String;

    /// The replica count currently asked for.
    fn replicas(&self) -> BoxFuture<'_, Result<u32, ScaleError>>;

    /// Asks for `replicas` replicas.
    fn scale(&self, replicas: u32) -> BoxFuture<'_, Result<(), ScaleError>>;
}

/// A target shared with its owner (e.g. `logstream dev`, which also stops the workers).
impl<T: ScaleTarget + ?Sized> ScaleTarget for std::sync::Arc<T> {
    fn describe(&self) -> String {
        (**self).describe()
    }

    fn replicas(&self) -> BoxFuture<'_, Result<u32, ScaleError>> {
        (**self).replicas()
    }

    fn scale(&self, replicas: u32) -> BoxFuture<'_, Result<(), ScaleError>> {
        (**self).scale(replicas)
    }
}
