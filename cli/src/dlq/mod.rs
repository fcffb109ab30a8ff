//! `logstream dlq`: list, replay and purge an output's dead-letter queue.

pub mod dead_letter;
pub mod list;
pub mod purge;
pub mod replay;

use logstream_api::pipeline::QueueType;
use logstream_broker::ManagementClient;

use logstream_broker::BrokerConnection;

use crate::{Context, args::DlqTarget, error::CliError, target::Target};

/// A dead-letter queue found on the broker.
pub struct OpenDlq {
    /// The pipeline.
    pub target: Target,
    /// The output.
    pub output: String,
    /// The dead-letter queue's name.
    pub queue: String,
    /// Messages ready in it when it was opened.
    pub messages: u64,
    /// True when a message given back (nack with requeue) may go to the back of the queue
    /// instead of its old place: quorum queues on RabbitMQ 3.x do that. Keeping the order then
    /// takes a full rotation: every message is taken and all are given back together.
    pub requeue_may_reorder: bool,
    /// The connection.
    pub connection: BrokerConnection,
}

impl OpenDlq {
    /// Resolves the pipeline, connects, and checks that the output's DLQ exists.
    pub async fn open(ctx: &Context, which: &DlqTarget) -> Result<Self, CliError> {
        let target = ctx.target(Some(&which.pipeline))?;
        target.check_output(&which.output)?;
        let queue = target.names.dead_letter_queue(&which.output);
        let connection = ctx.connect(&target.vhost).await?;
        let messages = connection
            .require_queue(&queue)
            .await
            .map_err(|e| CliError::with_hint(e, &target.missing_hint()))?
            .ready;
        let requeue_may_reorder = match target.queue_type {
            Some(kind) => kind != QueueType::Classic,
            None => {
                let management =
                    ManagementClient::new(ctx.endpoint(&target.vhost).management().clone());
                // Without the management API the type is unknown: assume the careful case.
                match management.queues(&target.vhost).await {
                    Ok(queues) => queues
                        .iter()
                        .find(|q| q.name == queue)
                        .is_none_or(|q| q.kind.as_deref() != Some("classic")),
                    Err(_) => true,
                }
            }
        };
        Ok(Self {
            output: which.output.clone(),
            queue,
            messages,
            requeue_may_reorder,
            connection,
            target,
        })
    }

    /// The output's main queue (where replayed messages are expected to land).
    pub fn main_queue(&self) -> String {
        self.target.names.main_queue(&self.output)
    }
}

/// Returns every message up to `tag` that `channel` holds of `queue` to it, in its order, in
/// one go (a multiple NACK with requeue); `action` says what that is for in an error.
pub async fn give_back(
    channel: &lapin::Channel,
    queue: &str,
    tag: u64,
    action: &'static str,
) -> Result<(), CliError> {
    channel
        .basic_nack(
            tag,
            lapin::options::BasicNackOptions {
                multiple: true,
                requeue: true,
            },
        )
        .await
        .map_err(|e| CliError::amqp(action, queue, &e))
}
