//! Starting a session: open the broker connection, check that the pipeline's queues exist,
//! open the publishing channel (confirm mode) and the consuming channel (prefetch), and start
//! the consumer.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, atomic::Ordering},
};

use lapin::{
    Channel, Consumer,
    options::{BasicConsumeOptions, BasicQosOptions},
    types::{FieldTable, ShortString},
};
use logstream_api::worker_config::WorkerConfig;
use logstream_broker::{BrokerConnection, BrokerEndpoint, BrokerError, Purpose};
use tokio::task::JoinSet;
use tracing::{debug, info};

use super::{Consuming, Session, SessionError, Worker, process::TaskContext};
use crate::delivery::{ack_tracker::AckTracker, batch::Batcher};

impl Session {
    /// Connects to `broker`, checks the topology, and starts consuming.
    pub async fn start(worker: &Worker, broker: &BrokerEndpoint) -> Result<Self, SessionError> {
        let config = &worker.config;
        let name = format!("logstream-worker {}/{}", config.pipeline, config.output);
        let connection = BrokerConnection::open(broker, &name, Purpose::Messages)
            .await
            .map_err(SessionError::Connect)?;
        match open_channels(worker, &connection).await {
            Ok(channels) => Ok(Self::new(worker, connection, channels)),
            Err(e) => {
                connection.close().await;
                Err(e)
            }
        }
    }

    /// The session on `connection` whose consumer just started: ready from now on.
    fn new(worker: &Worker, connection: BrokerConnection, channels: Channels) -> Self {
        let Channels {
            publish,
            consume,
            consumer,
            consumer_tag,
        } = channels;
        let config = &worker.config;
        let batch_max = usize::try_from(config.consume.batch_max_messages).unwrap_or(1);
        worker.ready.store(true, Ordering::Relaxed);
        info!(queue = %config.queue, prefetch = config.consume.prefetch, "consuming");
        Self {
            connection,
            consume,
            consumer: Some(consumer),
            consuming: Consuming::Active,
            consumer_tag,
            consumers_started: 1,
            ctx: Arc::new(TaskContext::new(worker, publish)),
            ready: Arc::clone(&worker.ready),
            tracker: AckTracker::new(),
            batcher: Batcher::new(batch_max, config.consume.batch_linger.as_std()),
            in_progress: HashSet::new(),
            tasks: JoinSet::new(),
            held: VecDeque::new(),
            probing: false,
            fetching: false,
            restamping: HashMap::new(),
            epoch: 0,
            winding_down: false,
        }
    }

    /// Consumes the main queue again (after [`Self::pause`]) under a tag not used before.
    pub(super) async fn start_consumer(&mut self) -> Result<(), SessionError> {
        let queue = self.ctx.config.queue.clone();
        let tag = ShortString::from(format!("{}.{}", self.consumer_tag, self.consumers_started));
        let consumer = self
            .consume
            .basic_consume(
                ShortString::from(queue.as_str()),
                tag,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(SessionError::Lost)?;
        self.consumers_started += 1;
        debug!(consumer = %consumer.tag(), "consuming again");
        self.consumer = Some(consumer);
        self.consuming = Consuming::Active;
        Ok(())
    }
}

/// The channels of a session.
struct Channels {
    /// Confirm mode: retry and dead-letter copies.
    publish: Channel,
    /// Prefetch: the consumer's.
    consume: Channel,
    consumer: Consumer,
    consumer_tag: ShortString,
}

/// Checks the topology, opens the publishing channel (confirm mode) and the consuming channel
/// (prefetch), and starts the consumer.
async fn open_channels(
    worker: &Worker,
    connection: &BrokerConnection,
) -> Result<Channels, SessionError> {
    let config = &worker.config;
    let setup = |action: String| move |source| SessionError::Setup { action, source };

    check_topology(connection, config).await?;

    let publish = connection
        .confirm_channel()
        .await
        .map_err(setup("open the publishing channel".into()))?;
    let consume = connection
        .channel()
        .await
        .map_err(setup("open the consuming channel".into()))?;
    consume
        .basic_qos(config.consume.prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| connection.error("set prefetch on queue", &config.queue, &e))
        .map_err(setup(format!("set prefetch {}", config.consume.prefetch)))?;
    let consumer_tag = ShortString::from(consumer_tag());
    let consumer = consume
        .basic_consume(
            ShortString::from(config.queue.as_str()),
            consumer_tag.clone(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| connection.error("consume queue", &config.queue, &e))
        .map_err(setup(format!("consume queue {}", config.queue)))?;

    Ok(Channels {
        publish,
        consume,
        consumer,
        consumer_tag,
    })
}

/// Passively checks that the main queue, the retry steps and the DLQ exist.
async fn check_topology(
    connection: &BrokerConnection,
    config: &WorkerConfig,
) -> Result<(), SessionError> {
    let queues = std::iter::once(&config.queue)
        .chain(config.retry.iter().map(|s| &s.queue))
        .chain(std::iter::once(&config.dead_letter_queue));
    for queue in queues {
        match connection.require_queue(queue).await {
            Ok(_) => {}
            Err(BrokerError::NotFound { .. }) => {
                return Err(SessionError::MissingQueue {
                    queue: queue.clone(),
                    vhost: config.vhost.clone(),
                });
            }
            Err(source) => {
                return Err(SessionError::Setup {
                    action: format!("check queue {queue}"),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// A consumer tag that tells the worker apart in the management UI: the pod (host) name and
/// the process id.
fn consumer_tag() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    let tag = format!("logstream-worker.{host}.{}", std::process::id());
    // Consumer tags are AMQP short strings (at most 255 bytes).
    tag.chars().take(200).collect()
}
