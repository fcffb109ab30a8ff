//! Where logs are written: standard output, a file, or an HTTP endpoint.
//!
//! A sink takes a batch of decoded logs and says, for the batch or for each log, whether it
//! was written, and if not whether trying again may help. The worker ACKs a log only after
//! its sink said it was written.

pub mod classify;
pub mod file;
pub mod format;
pub mod health;
pub mod http;
pub mod http_client;
pub mod narrow;
pub mod otlp;
pub mod stdout;

use std::{collections::BTreeMap, sync::Arc};

use futures::future::BoxFuture;
use logstream_api::{
    contract::ErrorClass,
    pipeline::SinkSpec,
    worker_config::{SecretFiles, SecretUse},
};

use crate::delivery::envelope::LogRecord;

/// A write that did not happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct SinkFailure {
    /// Transient (retried) or permanent (dead-lettered).
    pub class: ErrorClass,
    /// What went wrong, for `x-logstream-error` and the logs.
    pub reason: String,
    /// The HTTP status the sink answered, when it answered one.
    pub status: Option<u16>,
}

impl SinkFailure {
    /// A failure that may succeed later.
    pub fn transient(reason: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Transient,
            reason: reason.into(),
            status: None,
        }
    }

    /// A failure that never will.
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Permanent,
            reason: reason.into(),
            status: None,
        }
    }

    /// The failure of a delivery whose logs failed as `so_far` and `next`: a permanent failure
    /// wins (a delivery holding a log that can never be written can never be written whole),
    /// else the first one.
    pub fn worst(so_far: Option<Self>, next: Self) -> Self {
        match so_far {
            Some(f) if f.class == ErrorClass::Permanent || next.class != ErrorClass::Permanent => f,
            _ => next,
        }
    }
}

/// What became of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Every log was written.
    Written,
    /// No log was written.
    Failed(SinkFailure),
    /// Per log, in batch order: `None` written, `Some` failed (Elasticsearch bulk items).
    PerItem(Vec<Option<SinkFailure>>),
}

/// A destination for logs.
pub trait Sink: Send + Sync {
    /// Writes `batch` (never empty). Returns once the logs are durable as far as this sink
    /// can tell: flushed to the file, or answered by the HTTP server.
    fn write<'a>(&'a self, batch: &'a [LogRecord]) -> BoxFuture<'a, WriteOutcome>;

    /// Short name for logs and labels.
    fn kind(&self) -> &'static str;
}

/// Why a sink could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The file sink's file could not be opened for appending.
    #[error("failed to open sink file {path}: {source}")]
    OpenFile {
        /// The path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The HTTP sink's URL is not an http(s) URL.
    #[error("failed to use sink URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("failed to build the HTTP sink client: {0}")]
    Client(String),
    /// A Secret of the HTTP sink is missing, unreadable or unusable (the message names the
    /// Secret and the key, never a value).
    #[error("failed to set up the HTTP sink: {0}")]
    Secret(String),
}

/// Labels every log of this worker carries where a sink groups logs (Loki streams).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkLabels {
    /// Namespace of the pipeline.
    pub namespace: String,
    /// Pipeline name.
    pub pipeline: String,
    /// Output name.
    pub output: String,
}

/// Builds the sink `spec` describes; the Secrets it names are read from `secrets`.
pub fn build(
    spec: &SinkSpec,
    labels: SinkLabels,
    secrets: &BTreeMap<SecretUse, SecretFiles>,
) -> Result<Arc<dyn Sink>, SinkError> {
    Ok(match spec {
        SinkSpec::Stdout(_) => Arc::new(stdout::StdoutSink::new()),
        SinkSpec::File(file) => Arc::new(file::FileSink::open(&file.path)?),
        SinkSpec::Http(http) => Arc::new(http::HttpSink::new(http, labels, secrets)?),
    })
}
