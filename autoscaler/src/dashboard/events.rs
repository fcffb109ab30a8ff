//! The dashboard's numbered event log: every event gets an id `<epoch>-<seq>`, and the last few
//! are kept so that a client reconnecting with `Last-Event-ID` receives what it missed. The
//! epoch changes with every process, so an id from before a restart is recognised as foreign
//! instead of silently hiding the new process's first events.

use std::{collections::VecDeque, sync::Arc};

/// The kinds of event the stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The latest figures of one output, once per output per poll.
    Sample,
    /// A scaling decision that changed the replica count.
    Scale,
    /// An autoscaling failure (reported when it starts or changes).
    Error,
    /// A pipeline left the dashboard.
    Removed,
}

impl EventKind {
    /// The SSE `event:` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sample => "sample",
            Self::Scale => "scale",
            Self::Error => "error",
            Self::Removed => "removed",
        }
    }
}

/// One event of the stream, its JSON data already rendered (once, for every client).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamEvent {
    /// Position in this process's log.
    pub seq: u64,
    /// The SSE `id:`: `<epoch>-<seq>`.
    pub id: String,
    /// The SSE `event:`.
    pub kind: EventKind,
    /// The SSE `data:` (one line of JSON).
    pub data: String,
}

/// What a client reconnecting after some id receives before the live events.
#[derive(Debug, Default, PartialEq)]
pub struct Replay {
    /// The kept events it has not seen, oldest first.
    pub events: Vec<Arc<StreamEvent>>,
    /// Set when events it has not seen are no longer kept (or its id is from another process):
    /// how many were lost, when known. The client reloads the snapshot.
    pub gap: Option<Option<u64>>,
}

/// The numbered, bounded event log.
#[derive(Debug)]
pub struct EventLog {
    epoch: String,
    next_seq: u64,
    capacity: usize,
    kept: VecDeque<Arc<StreamEvent>>,
}

impl EventLog {
    /// An empty log for process epoch `epoch`, keeping `capacity` events.
    pub fn new(epoch: impl Into<String>, capacity: usize) -> Self {
        Self {
            epoch: epoch.into(),
            next_seq: 1,
            capacity: capacity.max(1),
            kept: VecDeque::with_capacity(capacity.max(1)),
        }
    }

    /// The id the next event will get.
    pub fn next_id(&self) -> String {
        self.id_of(self.next_seq)
    }

    fn id_of(&self, seq: u64) -> String {
        format!("{}-{seq}", self.epoch)
    }

    /// The id of the last event, or `<epoch>-0` before the first.
    pub fn last_id(&self) -> String {
        self.id_of(self.next_seq - 1)
    }

    /// The sequence number of the last event, 0 before the first.
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Appends an event and returns it.
    pub fn push(&mut self, kind: EventKind, data: String) -> Arc<StreamEvent> {
        let event = Arc::new(StreamEvent {
            seq: self.next_seq,
            id: self.id_of(self.next_seq),
            kind,
            data,
        });
        self.next_seq += 1;
        if self.kept.len() == self.capacity {
            self.kept.pop_front();
        }
        self.kept.push_back(event.clone());
        event
    }

    /// The sequence number `id` names in this log, if it is one of ours.
    pub fn seq_of(&self, id: &str) -> Option<u64> {
        let (epoch, seq) = id.trim().rsplit_once('-')?;
        let seq: u64 = seq.parse().ok()?;
        (epoch == self.epoch && seq < self.next_seq).then_some(seq)
    }

    /// What a client that saw everything up to sequence number `seq` has missed.
    pub fn after(&self, seq: u64) -> Replay {
        let events: Vec<_> = self.kept.iter().filter(|e| e.seq > seq).cloned().collect();
        let first_kept = self.kept.front().map_or(self.next_seq, |e| e.seq);
        let gap = (first_kept > seq + 1).then(|| Some(first_kept - seq - 1));
        Replay { events, gap }
    }

    /// What a client that saw everything up to event `id` has missed.
    pub fn since(&self, id: &str) -> Replay {
        match self.seq_of(id) {
            Some(seq) => self.after(seq),
            // Another process's id, or garbage: the client cannot be caught up event by event.
            None => Replay {
                events: Vec::new(),
                gap: Some(None),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(n: u64, capacity: usize) -> EventLog {
        let mut log = EventLog::new("e1", capacity);
        for i in 0..n {
            log.push(EventKind::Sample, format!("{i}"));
        }
        log
    }

    fn seqs(r: &Replay) -> Vec<u64> {
        r.events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn a_client_that_saw_event_n_gets_the_ones_after_it() {
        let log = log_with(10, 100);
        assert_eq!(log.last_id(), "e1-10");
        let r = log.since("e1-7");
        assert_eq!(seqs(&r), [8, 9, 10]);
        assert_eq!(r.gap, None);
        assert_eq!(log.since("e1-10"), Replay::default());
    }

    #[test]
    fn events_dropped_from_the_backlog_are_reported_as_a_gap() {
        let log = log_with(10, 4);
        let r = log.since("e1-2");
        assert_eq!(seqs(&r), [7, 8, 9, 10]);
        assert_eq!(r.gap, Some(Some(4)), "3, 4, 5 and 6 are gone");
    }

    #[test]
    fn an_id_from_another_process_or_the_future_is_a_gap_of_unknown_size() {
        let log = log_with(3, 10);
        for id in ["e0-2", "e1-99", "nonsense", ""] {
            let r = log.since(id);
            assert!(r.events.is_empty(), "{id}");
            assert_eq!(r.gap, Some(None), "{id}");
        }
    }

    #[test]
    fn the_id_before_the_first_event_replays_everything_kept() {
        let log = log_with(3, 10);
        assert_eq!(seqs(&log.since("e1-0")), [1, 2, 3]);
        assert_eq!(EventLog::new("e1", 4).last_id(), "e1-0");
    }
}
