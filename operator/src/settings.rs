//! The operator's own settings and the constants a user can feel, in one place; the binary's
//! `--help` shows each default.

use std::time::Duration;

/// The field manager of every server-side apply the operator makes (children and status).
pub const FIELD_MANAGER: &str = "logstream-operator";

/// The finalizer that holds a deleted LogPipeline until its broker objects are cleaned up
/// according to `deletionPolicy`.
pub const FINALIZER: &str = "logstream.io/broker-cleanup";

/// Name of the reporting controller on Events.
pub const REPORTER: &str = "logstream-operator";

/// Worker image used when an output does not name one.
pub const DEFAULT_WORKER_IMAGE: &str = concat!(
    "ghcr.io/logstream-io/logstream-worker:",
    env!("CARGO_PKG_VERSION")
);

/// How often a pipeline is reconciled without any change, to repair drift (a queue or binding
/// deleted on the broker by hand comes back) and refresh the status figures.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(30);

/// First wait after a transient failure; doubled after each further failure of the same
/// pipeline, up to [`ERROR_BACKOFF_MAX`].
pub const ERROR_BACKOFF_MIN: Duration = Duration::from_secs(5);

/// Longest wait between retries after transient failures.
pub const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Pipelines reconciled at the same time.
pub const CONCURRENCY: u16 = 4;

/// Address of `/metrics`, `/healthz` and `/readyz`.
pub const LISTEN: &str = "0.0.0.0:8080";

/// What the reconcile needs to know besides the LogPipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Worker image for outputs that do not set `worker.image`.
    pub worker_image: String,
    /// Requeue interval of a healthy pipeline.
    pub recheck_interval: Duration,
    /// First retry delay after a transient failure.
    pub error_backoff_min: Duration,
    /// Longest retry delay after repeated transient failures.
    pub error_backoff_max: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            worker_image: DEFAULT_WORKER_IMAGE.to_owned(),
            recheck_interval: RECHECK_INTERVAL,
            error_backoff_min: ERROR_BACKOFF_MIN,
            error_backoff_max: ERROR_BACKOFF_MAX,
        }
    }
}

impl Settings {
    /// The retry delay after the `failures`-th consecutive failure (1 = the first).
    pub fn error_backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        self.error_backoff_min
            .saturating_mul(1 << doublings)
            .min(self.error_backoff_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_backoff_doubles_up_to_the_cap() {
        let s = Settings::default();
        let waits: Vec<u64> = (1..=8).map(|n| s.error_backoff(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(s.error_backoff(0).as_secs(), 5);
        assert_eq!(s.error_backoff(u32::MAX).as_secs(), 300);
    }
}
