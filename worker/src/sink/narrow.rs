//! Narrowing a failed write down to the logs that fail, so that one bad log does not take its
//! batch neighbours with it, and telling an outage (every write fails) from a bad log (some
//! writes succeed).
//!
//! A write that the sink refuses for what it carried (400, 413, 422, ...) is split in halves,
//! and each half is written again, down to single logs: only the logs refused on their own are
//! failed (one bad log in a batch of 100: 1 failed, 99 written, in about 2·log2(100) requests).
//!
//! A write that blames the sink (refused connection, timeout, 5xx, 429, or 401/403/404) is
//! tried once more as two halves. Both halves failing too means the sink is down: every log is
//! *held* (no attempt charged). One half written means the sink works and the other half
//! carries a log it cannot take: that half is narrowed like a refused one, and a log that still
//! fails alone fails on its own (a transient failure climbs the retry ladder). An outage costs
//! three requests per batch; Elasticsearch's per-item answers are taken as they are.

use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

use futures::{FutureExt, future::BoxFuture};
use logstream_api::contract::ErrorClass;

use super::{
    Sink, SinkFailure, WriteOutcome,
    classify::{Blame, blame},
};
use crate::delivery::envelope::LogRecord;

/// What became of one log of a narrowed write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Written.
    Written,
    /// Failed on its own account: the retry ladder (transient) or the DLQ (permanent) takes it.
    Failed(SinkFailure),
    /// Not written because the sink is down: hold it, charge nothing.
    Held(SinkFailure),
}

/// The verdicts of a narrowed write, in batch order, and what the requests said.
#[derive(Debug, Default)]
pub struct Narrowed {
    /// One per log.
    pub verdicts: Vec<Verdict>,
    /// The class of each failed request (and of each failed Elasticsearch item), for
    /// `logstream_sink_errors_total`.
    pub errors: Vec<ErrorClass>,
    /// True when the sink wrote at least one log: it is up.
    pub wrote: bool,
}

impl Verdict {
    /// The verdict of a delivery whose logs got `a` and `b`: held over failed over written
    /// (of two failures, the worse: [`SinkFailure::worst`]).
    pub fn worst(a: Self, b: Self) -> Self {
        match (a, b) {
            (Self::Held(f), _) | (_, Self::Held(f)) => Self::Held(f),
            (Self::Failed(x), Self::Failed(y)) => Self::Failed(SinkFailure::worst(Some(x), y)),
            (Self::Failed(f), Self::Written) | (Self::Written, Self::Failed(f)) => Self::Failed(f),
            (Self::Written, Self::Written) => Self::Written,
        }
    }
}

impl Narrowed {
    /// True when some log was held: the sink looked down throughout.
    pub fn held(&self) -> bool {
        self.verdicts.iter().any(|v| matches!(v, Verdict::Held(_)))
    }
}

/// Writes `records` to `sink`, narrowing failures as the module says.
pub async fn write(sink: &dyn Sink, records: &[LogRecord]) -> Narrowed {
    let narrower = Narrower {
        sink,
        up: AtomicBool::new(false),
        errors: Mutex::new(Vec::new()),
    };
    let mut verdicts = narrower.write(records).await;
    let wrote = narrower.up.load(Ordering::Relaxed);
    if wrote {
        // The sink wrote something in this task: what it failed alone was the log's doing.
        for v in &mut verdicts {
            if let Verdict::Held(f) = v {
                *v = Verdict::Failed(f.clone());
            }
        }
    }
    let errors = narrower.errors.into_inner().unwrap_or_default();
    Narrowed {
        verdicts,
        errors,
        wrote,
    }
}

struct Narrower<'a> {
    sink: &'a dyn Sink,
    /// Set once the sink wrote something.
    up: AtomicBool,
    errors: Mutex<Vec<ErrorClass>>,
}

impl Narrower<'_> {
    fn write<'b>(&'b self, records: &'b [LogRecord]) -> BoxFuture<'b, Vec<Verdict>> {
        async move {
            let outcome = self.sink.write(records).await;
            self.settle(records, outcome).await
        }
        .boxed()
    }

    /// The verdicts of `records` given the sink's answer to writing them together.
    fn settle<'b>(
        &'b self,
        records: &'b [LogRecord],
        outcome: WriteOutcome,
    ) -> BoxFuture<'b, Vec<Verdict>> {
        async move {
            match outcome {
                WriteOutcome::Written => {
                    self.up.store(true, Ordering::Relaxed);
                    vec![Verdict::Written; records.len()]
                }
                WriteOutcome::PerItem(items) => {
                    if items.iter().any(Option::is_none) {
                        self.up.store(true, Ordering::Relaxed);
                    }
                    (0..records.len())
                        .map(|i| match items.get(i).cloned() {
                            Some(None) => Verdict::Written,
                            Some(Some(f)) => {
                                self.error(f.class);
                                Verdict::Failed(f)
                            }
                            None => {
                                let f =
                                    SinkFailure::transient("the sink said nothing about this log");
                                self.error(f.class);
                                Verdict::Failed(f)
                            }
                        })
                        .collect()
                }
                WriteOutcome::Failed(f) => {
                    self.error(f.class);
                    self.failed(records, f).await
                }
            }
        }
        .boxed()
    }

    /// The verdicts of `records`, which failed together with `f`.
    async fn failed(&self, records: &[LogRecord], f: SinkFailure) -> Vec<Verdict> {
        let blamed = blame(&f);
        if records.len() == 1 {
            return vec![match blamed {
                Blame::Logs => Verdict::Failed(f),
                // Turned into `Failed` at the end if the sink wrote anything meanwhile.
                Blame::Sink => Verdict::Held(f),
            }];
        }
        let (left, right) = records.split_at(records.len() / 2);
        if blamed == Blame::Logs || self.up.load(Ordering::Relaxed) {
            let (l, r) = futures::join!(self.write(left), self.write(right));
            return [l, r].concat();
        }
        // The sink failed the whole batch: down, or one log in it is more than it can take.
        let (l, r) = futures::join!(self.sink.write(left), self.sink.write(right));
        match (&l, &r) {
            (WriteOutcome::Failed(fl), WriteOutcome::Failed(fr))
                if blame(fl) == Blame::Sink && blame(fr) == Blame::Sink =>
            {
                self.error(fl.class);
                self.error(fr.class);
                let mut verdicts = vec![Verdict::Held(fl.clone()); left.len()];
                verdicts.extend(vec![Verdict::Held(fr.clone()); right.len()]);
                verdicts
            }
            _ => {
                if wrote_any(&l) || wrote_any(&r) {
                    self.up.store(true, Ordering::Relaxed);
                }
                let (l, r) = futures::join!(self.settle(left, l), self.settle(right, r));
                [l, r].concat()
            }
        }
    }

    fn error(&self, class: ErrorClass) {
        if let Ok(mut errors) = self.errors.lock() {
            errors.push(class);
        }
    }
}

fn wrote_any(outcome: &WriteOutcome) -> bool {
    match outcome {
        WriteOutcome::Written => true,
        WriteOutcome::PerItem(items) => items.iter().any(Option::is_none),
        WriteOutcome::Failed(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A sink that answers each request by what it carries.
    struct Fake<F: Fn(&[&str]) -> WriteOutcome + Send + Sync> {
        answer: F,
        requests: AtomicUsize,
    }

    impl<F: Fn(&[&str]) -> WriteOutcome + Send + Sync> Sink for Fake<F> {
        fn write<'a>(&'a self, batch: &'a [LogRecord]) -> BoxFuture<'a, WriteOutcome> {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let ids: Vec<&str> = batch.iter().map(|r| r.id.as_str()).collect();
            let outcome = (self.answer)(&ids);
            async move { outcome }.boxed()
        }

        fn kind(&self) -> &'static str {
            "fake"
        }
    }

    fn fake<F: Fn(&[&str]) -> WriteOutcome + Send + Sync>(answer: F) -> Fake<F> {
        Fake {
            answer,
            requests: AtomicUsize::new(0),
        }
    }

    fn records(ids: &[&str]) -> Vec<LogRecord> {
        ids.iter()
            .map(|id| LogRecord {
                json: "{}".into(),
                level: logstream_api::contract::Level::Info,
                service: "s".into(),
                ts: jiff::Timestamp::UNIX_EPOCH,
                id: (*id).into(),
            })
            .collect()
    }

    fn status(class: ErrorClass, status: u16) -> WriteOutcome {
        WriteOutcome::Failed(SinkFailure {
            class,
            reason: format!("answered {status}"),
            status: Some(status),
        })
    }

    fn hundred_with(bad: &str) -> Vec<String> {
        (0..100)
            .map(|i| {
                if i == 37 {
                    bad.to_owned()
                } else {
                    format!("ok-{i}")
                }
            })
            .collect()
    }

    fn ids(owned: &[String]) -> Vec<&str> {
        owned.iter().map(String::as_str).collect()
    }

    #[tokio::test]
    async fn one_refused_log_in_a_hundred_fails_alone_and_the_rest_is_written() {
        let sink = fake(|ids| {
            if ids.contains(&"bad") {
                status(ErrorClass::Permanent, 400)
            } else {
                WriteOutcome::Written
            }
        });
        let batch = hundred_with("bad");
        let narrowed = write(&sink, &records(&ids(&batch))).await;
        let failed: Vec<usize> = (0..100)
            .filter(|&i| matches!(narrowed.verdicts[i], Verdict::Failed(_)))
            .collect();
        assert_eq!(failed, [37]);
        assert_eq!(
            narrowed
                .verdicts
                .iter()
                .filter(|v| **v == Verdict::Written)
                .count(),
            99
        );
        assert!(narrowed.wrote);
        let requests = sink.requests.load(Ordering::Relaxed);
        assert!(requests <= 15, "{requests} requests");
    }

    #[tokio::test]
    async fn a_sink_that_fails_everything_holds_every_log_after_three_requests() {
        for answer in [
            status(ErrorClass::Transient, 503),
            status(ErrorClass::Permanent, 401),
            status(ErrorClass::Permanent, 404),
            WriteOutcome::Failed(SinkFailure::transient("connection refused")),
        ] {
            let sink = fake(move |_| answer.clone());
            let batch = hundred_with("any");
            let narrowed = write(&sink, &records(&ids(&batch))).await;
            assert!(
                narrowed
                    .verdicts
                    .iter()
                    .all(|v| matches!(v, Verdict::Held(_)))
            );
            assert!(!narrowed.wrote && narrowed.held());
            assert_eq!(sink.requests.load(Ordering::Relaxed), 3);
            assert_eq!(narrowed.errors.len(), 3);
        }
    }

    #[tokio::test]
    async fn a_log_the_sink_fails_on_while_it_writes_others_fails_on_its_own() {
        // A log that makes the sink answer 500 whenever it is in the request.
        let sink = fake(|ids| {
            if ids.contains(&"crash") {
                status(ErrorClass::Transient, 500)
            } else {
                WriteOutcome::Written
            }
        });
        let batch = hundred_with("crash");
        let narrowed = write(&sink, &records(&ids(&batch))).await;
        assert_eq!(
            narrowed.verdicts[37],
            Verdict::Failed(SinkFailure {
                class: ErrorClass::Transient,
                reason: "answered 500".into(),
                status: Some(500)
            })
        );
        assert_eq!(
            narrowed
                .verdicts
                .iter()
                .filter(|v| **v == Verdict::Written)
                .count(),
            99
        );
        assert!(!narrowed.held());
    }

    #[tokio::test]
    async fn a_lone_log_refused_as_misconfiguration_is_held_but_with_others_written_it_fails() {
        let sink = fake(|_| status(ErrorClass::Permanent, 403));
        let narrowed = write(&sink, &records(&["only"])).await;
        assert!(matches!(narrowed.verdicts[0], Verdict::Held(_)));

        let sink = fake(|ids| {
            if ids.contains(&"forbidden") {
                status(ErrorClass::Permanent, 403)
            } else {
                WriteOutcome::Written
            }
        });
        let narrowed = write(&sink, &records(&["a", "forbidden", "b", "c"])).await;
        assert!(matches!(&narrowed.verdicts[1], Verdict::Failed(f) if f.status == Some(403)));
        assert_eq!(
            narrowed
                .verdicts
                .iter()
                .filter(|v| **v == Verdict::Written)
                .count(),
            3
        );
    }

    #[tokio::test]
    async fn elasticsearch_items_are_taken_as_answered() {
        let sink = fake(|ids| {
            WriteOutcome::PerItem(
                ids.iter()
                    .map(|id| (*id == "busy").then(|| SinkFailure::transient("429")))
                    .collect(),
            )
        });
        let narrowed = write(&sink, &records(&["a", "busy"])).await;
        assert_eq!(narrowed.verdicts[0], Verdict::Written);
        assert!(matches!(narrowed.verdicts[1], Verdict::Failed(_)));
        assert_eq!(sink.requests.load(Ordering::Relaxed), 1);
    }
}
