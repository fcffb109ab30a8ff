//! The stdout sink: one JSON line per log on the worker's standard output (the worker's own
//! logs go to standard error).

use std::io::Write;

use futures::{FutureExt, future::BoxFuture};

use super::{Sink, SinkFailure, WriteOutcome, format};
use crate::delivery::envelope::LogRecord;

/// JSON lines on standard output.
#[derive(Debug, Default)]
pub struct StdoutSink;

impl StdoutSink {
    /// The sink.
    pub fn new() -> Self {
        Self
    }
}

impl Sink for StdoutSink {
    fn write<'a>(&'a self, batch: &'a [LogRecord]) -> BoxFuture<'a, WriteOutcome> {
        let body = format::ndjson(batch);
        async move {
            let written = tokio::task::spawn_blocking(move || {
                let mut out = std::io::stdout().lock();
                out.write_all(&body)?;
                out.flush()
            })
            .await;
            match written {
                Ok(Ok(())) => WriteOutcome::Written,
                Ok(Err(e)) => WriteOutcome::Failed(SinkFailure::transient(format!(
                    "failed to write to standard output: {e}"
                ))),
                Err(e) => WriteOutcome::Failed(SinkFailure::transient(format!(
                    "failed to write to standard output: {e}"
                ))),
            }
        }
        .boxed()
    }

    fn kind(&self) -> &'static str {
        "stdout"
    }
}
