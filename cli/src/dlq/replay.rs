//! `logstream dlq replay`: publishes dead letters back to the pipeline's exchange with their
//! original routing key, so they flow through the output again (after the bug was fixed).
//!
//! Safety comes from the order of operations: a dead letter is fetched without acknowledging
//! it, its copy is published with a publisher confirm, and the dead letter is acknowledged
//! only once the broker confirmed the copy. A replay killed at any moment leaves every dead
//! letter either still in the DLQ (the broker requeues what was unacknowledged when the
//! connection dies) or confirmed in the main flow: at least once, never lost.
//!
//! The run is bounded by the DLQ's depth when it started, and dead letters that are skipped
//! (filters, `--dry-run`, no routing key, refused copy) are held unacknowledged until the end
//! and then returned together, in their original order: a replay never loops over them, and
//! never moves them to the back of the queue. (A quorum DLQ on RabbitMQ 3.x puts returned
//! messages at the back; there a run stopped by `--limit` still takes and returns the rest of
//! the queue, so that the rotation is complete and the order unchanged.)

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicQosOptions};
use tokio::time::Instant;

use logstream_broker::{
    error::short_string,
    headers,
    publish::{ConfirmWindow, MainProblem, PublishOutcome},
};

use super::{
    OpenDlq,
    dead_letter::{DeadLetter, Filter},
};
use crate::{
    Context,
    args::ReplayArgs,
    error::CliError,
    pacing::Pacer,
    progress::{Progress, UPDATE_EVERY},
    stop::StopSignal,
};

/// Counts of one replay run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    examined: u64,
    replayed: u64,
    skipped: u64,
    failed: u64,
    /// Matching dead letters handed to the broker (or listed, in a dry run).
    taken: u64,
}

/// Runs `dlq replay`.
pub async fn run(ctx: &Context, args: &ReplayArgs) -> Result<(), CliError> {
    let dlq = OpenDlq::open(ctx, &args.target).await?;
    let main_queue = dlq.main_queue();
    // --direct goes through the default exchange, where a queue's name is its routing key.
    let exchange = if args.direct {
        String::new()
    } else {
        dlq.target.exchange.clone()
    };
    if !args.dry_run {
        let hint = dlq.target.missing_hint();
        if args.direct {
            dlq.connection.require_queue(&main_queue).await.map(drop)
        } else {
            dlq.connection.require_exchange(&exchange).await
        }
        .map_err(|e| CliError::with_hint(e, &hint))?;
    }
    let get_channel = dlq.connection.channel().await?;
    let mut window = ConfirmWindow::new(dlq.connection.confirm_channel().await?, args.window);
    let filter = Filter::new(args.reason.as_deref(), args.class);
    let pacer = Pacer::new(args.rate, 1);
    let prefix = dlq.target.names.prefix();
    let queue = short_string(&dlq.queue, "queue")?;
    let progress = Progress::new(Some(dlq.messages), "replay");
    let shown_destination = destination(args.direct, &exchange, &main_queue);
    let mut stop = StopSignal::on_ctrl_c();
    let started = Instant::now();
    let mut counts = Counts::default();
    let mut main_failure = MainProblem::default();
    // The highest delivery tag held unacknowledged: everything held is returned up to it.
    let mut held: Option<u64> = None;

    let mut fail = |counts: &mut Counts,
                    id: &Option<String>,
                    outcome: Option<&PublishOutcome>,
                    why: String| {
        counts.failed += 1;
        let id = id.as_deref().unwrap_or("(no message id)");
        eprintln!("dead letter {id}: not replayed: {why}");
        match outcome {
            Some(outcome) => main_failure.offer(outcome, || Some(why)),
            None => main_failure.offer_text(why),
        }
    };

    let ledger = Ledger {
        channel: &get_channel,
        queue: &dlq.queue,
        destination: &shown_destination,
    };
    for _ in 0..dlq.messages {
        let limit_reached = args.limit.is_some_and(|limit| counts.taken >= limit);
        if stop.is_stopped() || window.is_closed() || (limit_reached && !dlq.requeue_may_reorder) {
            break;
        }
        let got = get_channel
            .basic_get(queue.clone(), BasicGetOptions { no_ack: false })
            .await
            .map_err(|e| CliError::amqp("read from", &dlq.queue, &e))?;
        let Some(message) = got else { break };
        let delivery = message.delivery;
        let tag = delivery.delivery_tag;
        if limit_reached {
            // Completes the rotation of a queue that puts returned messages at the back.
            hold(&mut held, tag);
            continue;
        }
        counts.examined += 1;
        if counts.examined.is_multiple_of(UPDATE_EVERY) {
            progress.set(counts.examined);
        }
        let letter = DeadLetter::read(&delivery.properties, &delivery.data, &main_queue, &prefix);
        if !filter.matches(&letter) {
            counts.skipped += 1;
            hold(&mut held, tag);
            continue;
        }
        let Some(routing_key) = letter.routing_key.clone() else {
            fail(
                &mut counts,
                &letter.message_id,
                None,
                format!(
                    "it has no {} header and its x-death names no routing key of {main_queue}",
                    logstream_api::contract::HEADER_ORIGIN_ROUTING_KEY
                ),
            );
            hold(&mut held, tag);
            continue;
        };
        counts.taken += 1;
        if args.dry_run {
            say!(
                "would replay {} with routing key {routing_key:?}{} ({})",
                letter.message_id.as_deref().unwrap_or("(no message id)"),
                shown_destination,
                letter.error.as_deref().unwrap_or("no reason recorded"),
            );
            hold(&mut held, tag);
            continue;
        }
        tokio::select! {
            () = pacer.wait_for(counts.taken - 1) => {}
            () = stop.stopped() => {}
        }
        let properties = headers::replay_copy(&delivery.properties, &routing_key);
        let publish_key = if args.direct {
            &main_queue
        } else {
            &routing_key
        };
        let mut settled = window
            .publish(
                (tag, letter.message_id),
                &exchange,
                publish_key,
                delivery.data,
                properties,
            )
            .await?;
        // The next step waits for the broker (basic.get): send the copy first.
        settled.extend(window.flush());
        ledger
            .settle(settled, &mut counts, &mut held, &mut fail)
            .await?;
    }
    ledger
        .settle(window.drain().await, &mut counts, &mut held, &mut fail)
        .await?;
    // Everything still unacknowledged is held: return it, in its order, in one go. (Naming a
    // tag already acknowledged would fail the channel with "unknown delivery tag".)
    if let Some(tag) = held {
        super::give_back(
            &get_channel,
            &dlq.queue,
            tag,
            "return skipped dead letters to",
        )
        .await?;
    }
    progress.set(counts.examined);
    progress.finish();
    // Acks and nacks have no reply; one round trip after them shows the broker took them all
    // (it closes the channel, with the reason, when it refuses one).
    get_channel
        .basic_qos(0, BasicQosOptions::default())
        .await
        .map_err(|e| CliError::amqp("settle the dead letters of", &dlq.queue, &e))?;
    let _ = get_channel.close(200, "replayed".into()).await;
    dlq.connection.close().await;

    let secs = started.elapsed().as_secs_f64();
    if args.dry_run {
        say!(
            "dry run: would replay {}, skipped {} by filters, {} without a routing key; examined {} of {} dead letters in {}; nothing changed",
            counts.taken,
            counts.skipped,
            counts.failed,
            counts.examined,
            dlq.messages,
            dlq.queue
        );
    } else {
        say!(
            "replayed {}, skipped {} by filters, failed {}; examined {} of {} dead letters in {} in {secs:.2}s; copies went{}",
            counts.replayed,
            counts.skipped,
            counts.failed,
            counts.examined,
            dlq.messages,
            dlq.queue,
            shown_destination
        );
    }
    if counts.failed > 0 && !args.dry_run {
        return Err(CliError::Incomplete(format!(
            "{} dead letters were not replayed and stay in {}: {}",
            counts.failed,
            dlq.queue,
            main_failure.into_text().unwrap_or_default()
        )));
    }
    Ok(())
}

/// Where the outcomes of replayed copies are settled: the dead letters' channel and queue, and
/// where the copies went (for the words of a failure).
struct Ledger<'a> {
    channel: &'a lapin::Channel,
    queue: &'a str,
    destination: &'a str,
}

impl Ledger<'_> {
    /// Acknowledges each dead letter whose copy was confirmed; any other outcome keeps it held
    /// and is told through `fail`.
    async fn settle(
        &self,
        outcomes: Vec<((u64, Option<String>), PublishOutcome)>,
        counts: &mut Counts,
        held: &mut Option<u64>,
        fail: &mut impl FnMut(&mut Counts, &Option<String>, Option<&PublishOutcome>, String),
    ) -> Result<(), CliError> {
        for ((tag, id), outcome) in outcomes {
            if outcome.is_confirmed() {
                self.channel
                    .basic_ack(tag, BasicAckOptions::default())
                    .await
                    .map_err(|e| {
                        CliError::amqp("acknowledge a replayed dead letter of", self.queue, &e)
                    })?;
                counts.replayed += 1;
            } else {
                hold(held, tag);
            }
            if let Some(why) = failure_text(&outcome, self.destination) {
                fail(counts, &id, Some(&outcome), why);
            }
        }
        Ok(())
    }
}

/// Keeps dead letter `tag` unacknowledged until the end of the run.
fn hold(held: &mut Option<u64>, tag: u64) {
    *held = (*held).max(Some(tag));
}

fn destination(direct: bool, exchange: &str, main_queue: &str) -> String {
    if direct {
        format!(" straight to queue {main_queue}")
    } else {
        format!(" to exchange {exchange:?}")
    }
}

fn failure_text(outcome: &PublishOutcome, destination: &str) -> Option<String> {
    match outcome {
        PublishOutcome::Confirmed => None,
        PublishOutcome::Nacked => Some(format!(
            "the copy sent{destination} was refused (nack): is the main queue full?"
        )),
        PublishOutcome::Returned { reply, .. } => Some(format!(
            "the copy sent{destination} was unroutable ({reply}): no queue is bound for its routing key"
        )),
        PublishOutcome::Lost { reason, .. } => {
            Some(format!("the copy was not confirmed: {reason}"))
        }
        PublishOutcome::Unconfirmed { .. } => outcome
            .problem()
            .map(|p| format!("the copy was not confirmed: {p}")),
    }
}
