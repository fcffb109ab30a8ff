//! One broker connection's life: consume the main queue, batch deliveries to the sink, settle
//! each delivery exactly once, and on shutdown stop consuming and settle what is in flight.
//!
//! One task owns the consumer channel and everything about ACKs, so settlements reach the
//! wire in the order they were decided: a NACK always goes out before a later multiple ACK
//! that would otherwise cover it. Sink writes and copy publishes run in other tasks and report
//! back. When the connection dies, nothing more is sent on it: its open deliveries come back
//! by redelivery, and logs that were written before the loss are remembered in the dedup cache
//! so that their redeliveries are ACKed without a second write.
//!
//! When the sink is down (see [`crate::sink::narrow`] and [`crate::sink::health`]) the session
//! cancels its consumer and *holds* the deliveries it has, unacknowledged and uncharged; it
//! probes the sink by rewriting them with backoff (taking one batch with `basic.get` when it
//! holds nothing), consumes again once a write succeeds, and puts what it holds back in the
//! queue (unchanged) before `holdLimit` runs out.
//!
//! `connect` starts a session; `settle_loop` is the task that owns the consumer channel and
//! sends every ACK and NACK; `receive` takes each delivery in on that task; `outage` holds,
//! probes and resumes; `process` decodes and writes batches and publishes copies, in tasks of
//! their own.

mod connect;
mod outage;
mod process;
mod receive;
mod settle_loop;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use jiff::Timestamp;
use lapin::{Channel, Consumer, message::Delivery, types::ShortString};
use logstream_api::worker_config::WorkerConfig;
use logstream_broker::{BrokerConnection, BrokerError};
use tokio::task::JoinSet;

use crate::{
    delivery::{
        ack_tracker::{AckTracker, DeliveryTag},
        batch::Batcher,
        dedup::{DedupCache, DedupKey},
        dedup_store::DedupStore,
        retry_ladder::Ladder,
    },
    metrics::{Metrics, Returned, Settled},
    sink::{Sink, health::SinkHealth},
};
use process::TaskContext;

/// Longest wait for the broker to confirm a retry or dead-letter copy.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause before a delivery whose copy was refused goes back to the queue, so that a full DLQ
/// does not turn into a hot redelivery loop.
pub const REFUSED_REQUEUE_PAUSE: Duration = Duration::from_secs(1);

/// What every session of one worker process shares.
pub struct Worker {
    /// The configuration.
    pub config: Arc<WorkerConfig>,
    /// The retry ladder.
    pub ladder: Ladder,
    /// The sink.
    pub sink: Arc<dyn Sink>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// `/readyz`: true while connected and consuming.
    pub ready: Arc<AtomicBool>,
    /// The shared dedup store, when the output has one.
    pub dedup_store: Option<Arc<DedupStore>>,
}

/// What outlives a session: the ids written recently and the sink's health.
#[derive(Debug)]
pub struct ProcessState {
    /// Ids this process wrote recently.
    pub dedup: DedupCache,
    /// The sink's health.
    pub sink: SinkHealth,
}

/// Why a session could not start or ended without being asked to.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The connection could not be opened (the error tells an unreachable broker from
    /// refused credentials or a missing vhost).
    #[error(transparent)]
    Connect(BrokerError),
    /// A queue the worker needs does not exist.
    #[error(
        "failed to find queue {queue} on vhost {vhost}: the pipeline's topology is not declared (the operator declares it)"
    )]
    MissingQueue {
        /// The queue.
        queue: String,
        /// The vhost.
        vhost: String,
    },
    /// A channel operation failed while setting up.
    #[error("failed to {action}: {source}")]
    Setup {
        /// What was being done.
        action: String,
        /// The broker's or client's words.
        source: BrokerError,
    },
    /// The connection or the consumer channel failed.
    #[error("lost the broker connection: {0}")]
    Lost(lapin::Error),
    /// The broker cancelled the consumer (the queue was deleted, or a quorum queue's leader
    /// moved away).
    #[error("the broker cancelled the consumer of queue {0}")]
    Cancelled(String),
    /// The channel copies are published on closed.
    #[error("the publishing channel closed")]
    PublishChannelClosed,
    /// A write task died; its deliveries cannot be settled on this channel any more.
    #[error("failed to finish a sink write: {0}")]
    Task(String),
    /// An ACK or NACK could not be sent.
    #[error("failed to settle deliveries: {0}")]
    Settle(lapin::Error),
}

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// Shutdown was requested; `settled` tells whether every delivery was settled in time.
    Stopped {
        /// False when the grace period ran out first.
        settled: bool,
    },
    /// The connection was lost; reconnect.
    Lost(SessionError),
}

/// A delivery waiting for (or in) a sink write, or held while the sink is down.
struct Pending {
    delivery: Delivery,
    key: DedupKey,
    received: Instant,
    received_at: Timestamp,
    failed_before: u32,
    /// A suspect: written in a batch of its own, at once, and never held.
    alone: bool,
}

/// How one delivery is to be settled, as a task reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disposition {
    /// ACK it; count it as settled this way.
    Ack(Settled),
    /// A copy of it went back to the main queue: ACK it; the copy is what will be settled.
    AckReturned(Returned),
    /// Its copy was refused: give it back to the queue.
    Requeue,
    /// The session died: leave it to the broker.
    Abandon,
}

/// One delivery's settlement, as a task reports it to the settle loop.
#[derive(Debug)]
struct Settlement {
    tag: DeliveryTag,
    /// Set when the delivery was in `in_progress`.
    key: Option<DedupKey>,
    /// Its key goes into the dedup cache: the sink wrote it (or a replica did).
    remember: bool,
    disposition: Disposition,
    received: Instant,
}

impl Settlement {
    /// The settlement of `pending`.
    fn of(pending: &Pending, disposition: Disposition, remember: bool) -> Self {
        Self {
            tag: pending.delivery.delivery_tag,
            key: Some(pending.key),
            remember,
            disposition,
            received: pending.received,
        }
    }
}

/// What a write or copy task reports to the settle loop.
#[derive(Default)]
struct TaskReport {
    settlements: Vec<Settlement>,
    /// Deliveries not written because the sink is down: the session holds them.
    held: Vec<Pending>,
    /// Why the sink failed the held deliveries (the first reason), for the outage's warning.
    down_reason: Option<String>,
    /// The sink wrote something: it is up.
    wrote: bool,
    /// The outage count when the task started ([`SinkHealth::epoch`]).
    epoch: u64,
    /// The task was a probe of a sink that was down.
    probe: bool,
    /// The task restamped the redelivery with this key as a suspect.
    restamped: Option<DedupKey>,
}

impl TaskReport {
    fn settled(settlements: Vec<Settlement>) -> Self {
        Self {
            settlements,
            ..Self::default()
        }
    }
}

/// Where the consumer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Consuming {
    /// Deliveries flow.
    Active,
    /// `basic.cancel` sent; deliveries already on their way still arrive. `resume`: consume
    /// again once the cancellation is through.
    Cancelling { resume: bool },
    /// No consumer.
    Idle,
}

/// An open connection with its consumer.
pub struct Session {
    connection: BrokerConnection,
    /// The consumer's channel: only the settle loop uses it.
    consume: Channel,
    /// The current consumer's deliveries; `None` once it ended (cancelled or lost).
    consumer: Option<Consumer>,
    consuming: Consuming,
    /// Tags of this session's consumers are `<consumer_tag>` then `<consumer_tag>.<n>`: a tag is
    /// never reused while the broker may still be cancelling it.
    consumer_tag: ShortString,
    consumers_started: u32,
    ctx: Arc<TaskContext>,
    ready: Arc<AtomicBool>,
    tracker: AckTracker,
    batcher: Batcher<Pending>,
    /// Keys of the deliveries being written or held: a second copy arriving meanwhile is a
    /// duplicate.
    in_progress: HashSet<DedupKey>,
    /// Write and copy tasks; each reports its settlements.
    tasks: JoinSet<TaskReport>,
    /// Deliveries held (unacknowledged, uncharged) while the sink is down, in probe order.
    held: VecDeque<Pending>,
    /// A probe is being written.
    probing: bool,
    /// Taking a delivery with `basic.get` to probe with: a suspect taken is written as the
    /// probe instead of going back to the queue.
    fetching: bool,
    /// Keys of redeliveries being restamped as suspects, and their suspect copies that came
    /// back before the original was ACKed: a copy is written only after that ACK, or a crash
    /// during its write would bring the original back too.
    restamping: HashMap<DedupKey, Vec<Pending>>,
    /// The outage count writes started now belong to.
    epoch: u64,
    /// Stopping or lost: nothing new is taken.
    winding_down: bool,
}
