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
//! `connect` starts a session; `settle_loop` is the task that owns the consumer channel and
//! sends every ACK and NACK; `receive` takes each delivery in on that task; `process` decodes
//! and writes batches and publishes copies, in tasks of their own.

mod connect;
mod process;
mod receive;
mod settle_loop;

use std::{
    collections::HashSet,
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
        dedup::DedupKey,
        retry_ladder::Ladder,
    },
    metrics::{Metrics, Settled},
    sink::Sink,
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

/// A delivery waiting for (or in) a sink write.
struct Pending {
    delivery: Delivery,
    key: DedupKey,
    received: Instant,
    received_at: Timestamp,
    failed_before: u32,
}

/// How one delivery is to be settled, as a task reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disposition {
    /// ACK it; count it as settled this way.
    Ack(Settled),
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
    /// The sink wrote it: its key goes into the dedup cache.
    written: bool,
    disposition: Disposition,
    received: Instant,
}

/// An open connection with its consumer.
pub struct Session {
    connection: BrokerConnection,
    /// The consumer's channel: only the settle loop uses it.
    consume: Channel,
    /// `None` once cancelled (by us or the broker) or lost.
    consumer: Option<Consumer>,
    consumer_tag: ShortString,
    ctx: Arc<TaskContext>,
    ready: Arc<AtomicBool>,
    tracker: AckTracker,
    batcher: Batcher<Pending>,
    /// Keys of the deliveries being written: a second copy arriving meanwhile is a duplicate.
    in_progress: HashSet<DedupKey>,
    /// Write and copy tasks; each reports its settlements.
    tasks: JoinSet<Vec<Settlement>>,
}
