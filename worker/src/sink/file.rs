//! The file sink: one JSON line per log appended to a file, flushed to the operating system
//! before the batch counts as written (so a worker crash loses nothing it ACKed; an fsync per
//! batch would cost more than the queue's own durability buys).

use std::{
    fs::{File, OpenOptions},
    io::Write,
    sync::{Arc, Mutex},
};

use futures::{FutureExt, future::BoxFuture};

use super::{Sink, SinkError, SinkFailure, WriteOutcome, format};
use crate::delivery::envelope::LogRecord;

/// JSON lines appended to a file.
#[derive(Debug)]
pub struct FileSink {
    path: String,
    file: Arc<Mutex<File>>,
}

impl FileSink {
    /// Opens (creating it if needed) `path` for appending.
    pub fn open(path: &str) -> Result<Self, SinkError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| SinkError::OpenFile {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            path: path.to_owned(),
            file: Arc::new(Mutex::new(file)),
        })
    }
}

impl Sink for FileSink {
    fn write<'a>(&'a self, batch: &'a [LogRecord]) -> BoxFuture<'a, WriteOutcome> {
        let body = format::ndjson(batch);
        let file = Arc::clone(&self.file);
        async move {
            // One write call per batch: appends of concurrent batches never interleave.
            let written = tokio::task::spawn_blocking(move || {
                let mut file = file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                file.write_all(&body)?;
                file.flush()
            })
            .await;
            match written {
                Ok(Ok(())) => WriteOutcome::Written,
                Ok(Err(e)) => WriteOutcome::Failed(SinkFailure::transient(format!(
                    "failed to append to {}: {e}",
                    self.path
                ))),
                Err(e) => WriteOutcome::Failed(SinkFailure::transient(format!(
                    "failed to append to {}: {e}",
                    self.path
                ))),
            }
        }
        .boxed()
    }

    fn kind(&self) -> &'static str {
        "file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use logstream_api::contract::Level;

    fn record(n: u32) -> LogRecord {
        LogRecord {
            json: format!(r#"{{"message":"m{n}"}}"#),
            level: Level::Info,
            service: "api".into(),
            ts: Timestamp::UNIX_EPOCH,
            id: format!("id-{n}"),
        }
    }

    #[tokio::test]
    async fn appends_one_json_line_per_log() {
        let path = std::env::temp_dir().join(format!(
            "logstream-file-sink-{}-{}.jsonl",
            std::process::id(),
            Timestamp::now().as_nanosecond()
        ));
        let path_text = path.to_str().unwrap().to_owned();
        std::fs::write(&path, "earlier\n").unwrap();
        let sink = FileSink::open(&path_text).unwrap();
        assert_eq!(
            sink.write(&[record(1), record(2)]).await,
            WriteOutcome::Written
        );
        assert_eq!(sink.write(&[record(3)]).await, WriteOutcome::Written);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            text,
            "earlier\n{\"message\":\"m1\"}\n{\"message\":\"m2\"}\n{\"message\":\"m3\"}\n"
        );
    }

    #[test]
    fn an_unopenable_path_is_a_setup_error() {
        let err = FileSink::open("/nonexistent-dir/logs.jsonl").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("failed to open sink file /nonexistent-dir/logs.jsonl")
        );
    }
}
