//! Every default a user can feel, in one place.
//!
//! Defaults are applied in code when a field is read, never written back into the user's spec:
//! the stored LogPipeline keeps exactly what the user wrote, and changing a default here changes
//! the behaviour of every pipeline that did not set the field.

use crate::duration::Duration;

/// Exchange type when `spec.exchange.type` is absent.
pub const EXCHANGE_TYPE: &str = "topic";
/// Priority levels when `spec.priority.levels` is absent: `x-max-priority` = levels - 1 = 3,
/// which is the priority of a `critical` log in the message contract.
pub const PRIORITY_LEVELS: u8 = 4;
/// Highest accepted `spec.priority.levels`; RabbitMQ advises at most 10 priorities.
pub const MAX_PRIORITY_LEVELS: u8 = 10;

/// Delivery attempts before a message is dead-lettered (`retry.maxAttempts`).
pub const MAX_ATTEMPTS: u32 = 5;
/// Delay of each retry step (`retry.backoff`): one retry queue per entry.
pub const BACKOFF: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(10),
    Duration::from_secs(60),
];
/// Most retry steps (retry queues) an output may have.
pub const MAX_BACKOFF_STEPS: usize = 16;

/// Messages a dead-letter queue holds before it refuses new ones (`deadLetter.maxLength`).
pub const DLQ_MAX_LENGTH: u64 = 1_000_000;

/// Unacknowledged deliveries a worker holds at once (`worker.prefetch`).
pub const PREFETCH: u16 = 200;
/// Deliveries a worker processes in parallel (`worker.concurrency`).
pub const CONCURRENCY: u32 = 32;
/// Logs a worker writes to its sink in one batch (`worker.batch.maxMessages`).
pub const BATCH_MAX_MESSAGES: u32 = 100;
/// How long a worker waits for a batch to fill before writing it (`worker.batch.linger`).
pub const BATCH_LINGER: Duration = Duration::from_millis(50);
/// Largest message body a worker accepts (`worker.maxMessageBytes`); bigger ones are
/// dead-lettered as permanent failures.
pub const MAX_MESSAGE_BYTES: u32 = 256 * 1024;

/// Fewest worker replicas per output (`scaling.minReplicas`). One, so that logs flow without a
/// cold start; set 0 to let an idle output scale to zero.
pub const MIN_REPLICAS: u32 = 1;
/// Most worker replicas per output (`scaling.maxReplicas`).
pub const MAX_REPLICAS: u32 = 10;
/// Waiting messages one replica is expected to carry (`scaling.targetBacklogPerReplica`).
pub const TARGET_BACKLOG_PER_REPLICA: u32 = 1_000;
/// The age the oldest waiting message should stay under (`scaling.maxMessageAge`).
pub const MAX_MESSAGE_AGE: Duration = Duration::from_secs(30);
/// How long a lower replica count must hold before scaling down (`scaling.scaleDownDelay`).
pub const SCALE_DOWN_DELAY: Duration = Duration::from_secs(60);
/// How often the autoscaler reads the queue statistics (`scaling.pollInterval`).
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Shortest accepted `scaling.pollInterval`.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Virtual host when neither `spec.broker.vhost` nor the broker Secret's `uri` names one.
pub const VHOST: &str = "/";

/// Longest output name: it is part of queue, Deployment and Service names.
pub const MAX_OUTPUT_NAME_LEN: usize = 40;
/// Longest `<pipeline name>-<output name>`: the worker Service is named after it and Service
/// names are DNS labels of at most 63 characters.
pub const MAX_CHILD_NAME_LEN: usize = 63;
/// Most outputs a pipeline may have.
pub const MAX_OUTPUTS: usize = 32;
/// Most bindings an output may have.
pub const MAX_BINDINGS: usize = 64;

/// Message ids a worker remembers to drop duplicates (its dedup cache's capacity,
/// `worker.dedup.capacity`).
pub const DEDUP_CAPACITY: u32 = 100_000;
/// Most message ids a worker's own dedup cache may be asked to remember.
pub const MAX_DEDUP_CAPACITY: u32 = 10_000_000;
/// How long a worker remembers a message id (`worker.dedup.window`; also the time to live of
/// the ids in the shared Redis store).
pub const DEDUP_WINDOW: Duration = Duration::from_secs(600);
/// Longest accepted `worker.dedup.window`.
pub const MAX_DEDUP_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest time a worker keeps deliveries unacknowledged while its sink is down before it puts
/// them back in the main queue (unchanged) and takes new ones. Under RabbitMQ's default
/// `consumer_timeout` (30 min), after which the broker would close the worker's channel.
pub const SINK_HOLD_LIMIT: Duration = Duration::from_secs(25 * 60);
/// How long a worker may take after SIGTERM to settle in-flight work before it exits; the
/// worker pod's `terminationGracePeriodSeconds` leaves 5 s more.
pub const WORKER_SHUTDOWN_GRACE: Duration = Duration::from_secs(25);
/// Port of the worker's `/metrics`, `/healthz` and `/readyz`.
pub const WORKER_PORT: u16 = 9090;
