//! [`Dashboard`]: what the page shows, kept up to date from the autoscaler's records.
//!
//! One short-held lock guards the figures, the histories, the decisions and the event log;
//! publishing to clients is a `broadcast` send under that lock (never waits), so a client that
//! subscribes while holding the lock sees every event exactly once: older ones from the log,
//! newer ones from its receiver.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
};

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::broadcast;
use tracing::warn;

use super::{
    DashboardSettings,
    events::{EventKind, EventLog, Replay, StreamEvent},
    figures::{ErrorReport, OutputSample, ScaleEvent, unix_ms},
    history::{History, HistoryPoint},
};
use crate::pipeline::ScaleRecord;

/// The dashboard's state, shared by the record feed and the HTTP handlers.
pub struct Dashboard {
    settings: DashboardSettings,
    state: Mutex<State>,
    live: broadcast::Sender<Arc<StreamEvent>>,
}

struct State {
    pipelines: BTreeMap<String, BTreeMap<String, OutputState>>,
    decisions: VecDeque<ScaleEvent>,
    log: EventLog,
}

struct OutputState {
    latest: OutputSample,
    history: History,
}

/// The whole dashboard at one instant (`GET /api/pipelines`).
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    /// When the snapshot was taken, Unix milliseconds.
    pub generated_at_ms: u64,
    /// The id of the last event included: pass it as `since` (or `Last-Event-ID`) to
    /// `/api/events` to continue exactly from this snapshot.
    pub last_event_id: String,
    /// Width of a history bucket, seconds.
    pub history_bucket_s: u64,
    /// How far back histories go, seconds.
    pub history_window_s: u64,
    /// Pipelines by name.
    pub pipelines: Vec<PipelineView>,
    /// The last scaling decisions, oldest first.
    pub decisions: Vec<ScaleEvent>,
}

/// One pipeline in a [`Snapshot`].
#[derive(Clone, Debug, Serialize)]
pub struct PipelineView {
    /// `namespace/name`.
    pub name: String,
    /// Its outputs by name.
    pub outputs: Vec<OutputView>,
}

/// One output in a [`Snapshot`]: its latest figures and its history.
#[derive(Clone, Debug, Serialize)]
pub struct OutputView {
    /// The latest figures (the fields of a `sample` event).
    #[serde(flatten)]
    pub figures: OutputSample,
    /// One point per history bucket, oldest first.
    pub history: Vec<HistoryPoint>,
}

/// A new client's view of the stream: what it missed, then live events.
pub struct Subscription {
    /// Kept events after the client's last id, and whether some were lost.
    pub replay: Replay,
    /// Events recorded from now on.
    pub live: broadcast::Receiver<Arc<StreamEvent>>,
    /// The sequence number the client has seen up to, before `replay`.
    pub seen: u64,
}

/// Renders `value` as one line of JSON. Our types always serialize (non-finite floats become
/// `null`), so a failure would be a bug worth seeing rather than a reason to stop the feed.
fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| {
        warn!(error = %e, "failed to render dashboard JSON");
        "null".to_owned()
    })
}

/// A string no other dashboard (of this or an earlier process) used for its event ids.
fn new_epoch() -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = Timestamp::now().as_nanosecond();
    format!("{nanos:x}{:x}", COUNT.fetch_add(1, Ordering::Relaxed))
}

impl Default for Dashboard {
    fn default() -> Self {
        Self::new(DashboardSettings::default())
    }
}

impl Dashboard {
    /// An empty dashboard.
    pub fn new(settings: DashboardSettings) -> Self {
        let (live, _) = broadcast::channel(settings.client_buffer.max(1));
        Self {
            state: Mutex::new(State {
                pipelines: BTreeMap::new(),
                decisions: VecDeque::with_capacity(settings.decisions_kept),
                log: EventLog::new(new_epoch(), settings.backlog_events),
            }),
            settings,
            live,
        }
    }

    /// The limits in force.
    pub fn settings(&self) -> &DashboardSettings {
        &self.settings
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one autoscaler record: updates the output's figures and history, keeps the
    /// decision if one was applied, and publishes `sample` (and `scale` / `error`) events.
    /// Never waits for a client.
    pub fn record(&self, record: &ScaleRecord) {
        let figures = OutputSample::from_record(record);
        let mut state = self.lock();
        let state = &mut *state;
        let output = state
            .pipelines
            .entry(record.pipeline.clone())
            .or_default()
            .entry(record.output.clone())
            .or_insert_with(|| OutputState {
                latest: figures.clone(),
                history: History::new(self.settings.history_bucket, self.settings.history_window),
            });
        let previous_error = if output.history.is_empty() {
            None
        } else {
            output.latest.error.as_ref()
        };
        let error_is_new = figures.error.is_some() && figures.error.as_ref() != previous_error;
        output.history.push(&figures);
        output.latest = figures.clone();

        let mut events = vec![state.log.push(EventKind::Sample, to_json(&figures))];
        if let Some(decision) = ScaleEvent::from_record(record, state.log.next_id()) {
            events.push(state.log.push(EventKind::Scale, to_json(&decision)));
            if state.decisions.len() >= self.settings.decisions_kept {
                state.decisions.pop_front();
            }
            if self.settings.decisions_kept > 0 {
                state.decisions.push_back(decision);
            }
        }
        if error_is_new && let Some(message) = &figures.error {
            let report = ErrorReport {
                pipeline: figures.pipeline.clone(),
                output: figures.output.clone(),
                at_ms: figures.at_ms,
                message: message.clone(),
            };
            events.push(state.log.push(EventKind::Error, to_json(&report)));
        }
        for event in events {
            // No receiver is fine: nobody is watching.
            let _ = self.live.send(event);
        }
    }

    /// Removes a pipeline (it was deleted) and its decisions, and tells the clients.
    pub fn forget(&self, pipeline: &str) {
        let mut state = self.lock();
        if state.pipelines.remove(pipeline).is_none() {
            return;
        }
        state.decisions.retain(|d| d.pipeline != pipeline);
        let data = serde_json::json!({
            "pipeline": pipeline,
            "at_ms": unix_ms(Timestamp::now()),
        });
        let event = state.log.push(EventKind::Removed, data.to_string());
        let _ = self.live.send(event);
    }

    /// Records everything `records` carries until its sender is gone. Records lost because
    /// this task fell behind are skipped: the next poll brings fresh figures. Each pipeline
    /// `removals` names (see `Autoscalers::removals`) is forgotten, so a deleted pipeline
    /// leaves the page and the operator's memory; records sent before its removal are taken
    /// first, so none brings it back.
    pub async fn feed(
        self: Arc<Self>,
        mut records: broadcast::Receiver<ScaleRecord>,
        mut removals: Option<broadcast::Receiver<String>>,
    ) {
        loop {
            let removal = async {
                match removals.as_mut() {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                record = records.recv() => match record {
                    Ok(record) => self.record(&record),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        warn!(
                            missed,
                            "dashboard fell behind the autoscaler; skipping records"
                        );
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                removed = removal => match removed {
                    Ok(pipeline) => self.forget(&pipeline),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        warn!(missed, "dashboard missed pipeline removals");
                    }
                    Err(broadcast::error::RecvError::Closed) => removals = None,
                },
            }
        }
    }

    /// Everything the page shows, at one instant.
    pub fn snapshot(&self) -> Snapshot {
        let state = self.lock();
        Snapshot {
            generated_at_ms: unix_ms(Timestamp::now()),
            last_event_id: state.log.last_id(),
            history_bucket_s: self.settings.history_bucket.as_secs(),
            history_window_s: self.settings.history_window.as_secs(),
            pipelines: state
                .pipelines
                .iter()
                .map(|(name, outputs)| PipelineView {
                    name: name.clone(),
                    outputs: outputs
                        .values()
                        .map(|o| OutputView {
                            figures: o.latest.clone(),
                            history: o.history.points().collect(),
                        })
                        .collect(),
                })
                .collect(),
            decisions: state.decisions.iter().cloned().collect(),
        }
    }

    /// Subscribes a client that saw everything up to event `last_event_id` (`None`: a new
    /// client, which gets only events from now on).
    pub fn subscribe(&self, last_event_id: Option<&str>) -> Subscription {
        let state = self.lock();
        let live = self.live.subscribe();
        let now = state.log.last_seq();
        let (replay, seen) = match last_event_id.map(|id| (id, state.log.seq_of(id))) {
            None => (Replay::default(), now),
            Some((_, Some(seq))) => (state.log.after(seq), seq),
            // Not one of ours: report the gap and go on from now.
            Some((id, None)) => (state.log.since(id), now),
        };
        Subscription { replay, live, seen }
    }

    /// Event stream clients connected now.
    pub fn clients(&self) -> usize {
        self.live.receiver_count()
    }

    /// What a client that saw everything up to sequence number `seen` has missed (for a
    /// client whose receiver lagged).
    pub fn replay_after(&self, seen: u64) -> Replay {
        self.lock().log.after(seen)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use logstream_broker::{Age, OutputReading};

    use crate::policy::Decision as ScaleDecision;

    fn record(pipeline: &str, at_ms: u64, ready: u64, from: u32, to: u32) -> ScaleRecord {
        ScaleRecord {
            pipeline: pipeline.into(),
            queue: "logstream.test.app.o".into(),
            output: "o".into(),
            at: Timestamp::from_millisecond(i64::try_from(at_ms).unwrap()).unwrap(),
            decision: ScaleDecision {
                current: from,
                desired: to,
                recommended: to,
                reason: format!("backlog {ready} at 100/replica: {from} → {to}"),
                signals: Default::default(),
                metrics_missing: false,
            },
            reading: Some(OutputReading {
                ready: Some(ready),
                unacked: Some(0),
                consumers: Some(u64::from(from)),
                publish_rate: Some(10.0),
                ack_rate: Some(5.0),
                oldest_age: Some(Age::measured(1.0)),
                ..OutputReading::default()
            }),
            error: None,
        }
    }

    fn kinds(events: &[Arc<StreamEvent>]) -> Vec<&'static str> {
        events.iter().map(|e| e.kind.name()).collect()
    }

    #[test]
    fn a_record_updates_figures_and_a_change_is_a_decision_event() {
        let d = Dashboard::default();
        d.record(&record("ns/a", 1_000, 5, 1, 1));
        d.record(&record("ns/a", 3_000, 450, 1, 5));
        let snap = d.snapshot();
        assert_eq!(snap.pipelines.len(), 1);
        let o = &snap.pipelines[0].outputs[0];
        assert_eq!(o.figures.ready, Some(450));
        assert_eq!(o.history.len(), 1, "both samples fall in one 5 s bucket");
        assert_eq!(snap.decisions.len(), 1);
        assert_eq!(
            snap.decisions[0].reason,
            "backlog 450 at 100/replica: 1 → 5"
        );
        let replay = d.subscribe(Some(&format!("{}-0", epoch(&snap)))).replay;
        assert_eq!(kinds(&replay.events), ["sample", "sample", "scale"]);
        assert_eq!(snap.last_event_id, replay.events[2].id);
        assert_eq!(snap.decisions[0].id, replay.events[2].id);
    }

    fn epoch(snap: &Snapshot) -> &str {
        snap.last_event_id.rsplit_once('-').unwrap().0
    }

    #[test]
    fn an_error_is_an_event_when_it_starts_or_changes_not_every_poll() {
        let d = Dashboard::default();
        let failing = |at_ms, message: &str| {
            let mut r = record("ns/a", at_ms, 1, 1, 1);
            r.error = Some(message.into());
            r
        };
        d.record(&failing(1_000, "failed to scale: forbidden"));
        d.record(&failing(3_000, "failed to scale: forbidden"));
        d.record(&record("ns/a", 5_000, 1, 1, 1));
        d.record(&failing(7_000, "failed to scale: forbidden"));
        let replay = d
            .subscribe(Some(&format!("{}-0", epoch(&d.snapshot()))))
            .replay;
        assert_eq!(
            kinds(&replay.events),
            ["sample", "error", "sample", "sample", "sample", "error"]
        );
    }

    #[test]
    fn forgetting_a_pipeline_drops_it_and_its_decisions() {
        let d = Dashboard::default();
        d.record(&record("ns/a", 1_000, 450, 1, 5));
        d.record(&record("ns/b", 1_000, 450, 1, 5));
        d.forget("ns/a");
        let snap = d.snapshot();
        assert_eq!(
            snap.pipelines.iter().map(|p| &p.name).collect::<Vec<_>>(),
            ["ns/b"]
        );
        assert!(snap.decisions.iter().all(|x| x.pipeline == "ns/b"));
        let live = d.subscribe(Some(&format!("{}-4", epoch(&snap)))).replay;
        assert_eq!(kinds(&live.events), ["removed"]);
    }

    #[test]
    fn decisions_and_history_stay_bounded() {
        let d = Dashboard::new(DashboardSettings {
            decisions_kept: 3,
            history_window: Duration::from_secs(60),
            ..Default::default()
        });
        for i in 0..100u32 {
            d.record(&record("ns/a", u64::from(i) * 5_000, 1, i, i + 1));
        }
        let snap = d.snapshot();
        assert_eq!(
            snap.decisions.iter().map(|x| x.to).collect::<Vec<_>>(),
            [98, 99, 100]
        );
        assert_eq!(snap.pipelines[0].outputs[0].history.len(), 12);
    }

    #[tokio::test]
    async fn feed_records_what_the_autoscaler_broadcasts_and_ends_with_it() {
        let d = Arc::new(Dashboard::default());
        let (tx, rx) = broadcast::channel(4);
        let task = tokio::spawn(d.clone().feed(rx, None));
        // More than the channel holds before the feed runs: it lags, skips, and goes on.
        for i in 0..10 {
            tx.send(record("ns/a", i * 1_000, i, 1, 1)).unwrap();
        }
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("feed ends when the autoscaler is gone")
            .unwrap();
        let snap = d.snapshot();
        assert_eq!(snap.pipelines[0].outputs[0].figures.ready, Some(9));
    }
}
