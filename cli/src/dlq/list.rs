//! `logstream dlq list`: shows dead letters from the head of the queue and puts every one of
//! them back where it was.
//!
//! Messages are fetched with `basic.get` without acknowledging them, then returned together by
//! one `basic.nack(multiple, requeue)`: a classic queue puts a returned message back at its
//! original position, so the queue keeps the same messages in the same order (their
//! `redelivered` flag is set, which a replay does not carry over). A quorum queue on RabbitMQ
//! 3.x puts returned messages at the back instead, so there every message is taken and all are
//! given back: a full rotation, which ends in the old order. `basic.nack` (not `reject`) keeps
//! RabbitMQ 4.3+ from counting the return as a failed delivery. If the command dies half-way,
//! closing the connection returns the messages the same way.

use lapin::options::BasicGetOptions;
use serde_json::json;

use super::{
    OpenDlq,
    dead_letter::{DeadLetter, PREVIEW_CHARS, one_line},
};
use logstream_broker::error::short_string;

use crate::{Context, args::DlqTarget, error::CliError, table};

/// Characters of the reason the table shows.
const REASON_CHARS: usize = 50;

/// Runs `dlq list`.
pub async fn run(
    ctx: &Context,
    which: &DlqTarget,
    limit: usize,
    json: bool,
) -> Result<(), CliError> {
    let dlq = OpenDlq::open(ctx, which).await?;
    let channel = dlq.connection.channel().await?;
    let main_queue = dlq.main_queue();
    let prefix = dlq.target.names.prefix();
    let wanted = limit.min(dlq.messages as usize);
    // Where a requeued message may go to the back, every message is taken and given back, so
    // the queue comes out of the rotation in its old order.
    let fetch = if dlq.requeue_may_reorder {
        dlq.messages as usize
    } else {
        wanted
    };
    let mut letters = Vec::with_capacity(wanted);
    let mut last_tag = None;
    let queue = short_string(&dlq.queue, "queue")?;
    for _ in 0..fetch {
        let got = channel
            .basic_get(queue.clone(), BasicGetOptions { no_ack: false })
            .await
            .map_err(|e| CliError::amqp("read from", &dlq.queue, &e))?;
        let Some(message) = got else { break };
        last_tag = Some(message.delivery.delivery_tag);
        if letters.len() < wanted {
            letters.push(DeadLetter::read(
                &message.delivery.properties,
                &message.delivery.data,
                &main_queue,
                &prefix,
            ));
        }
    }
    if let Some(tag) = last_tag {
        super::give_back(&channel, &dlq.queue, tag, "return the listed messages to").await?;
    }
    let _ = channel.close(200, "listed".into()).await;
    dlq.connection.close().await;

    if json {
        for (i, letter) in letters.iter().enumerate() {
            let mut line = json!(letter);
            line["position"] = json!(i + 1);
            say!("{line}");
        }
        return Ok(());
    }
    say!(
        "{} of {} dead letters in {} (head first)",
        letters.len(),
        dlq.messages,
        dlq.queue
    );
    if letters.is_empty() {
        return Ok(());
    }
    let rows: Vec<Vec<String>> = letters
        .iter()
        .enumerate()
        .map(|(i, l)| {
            vec![
                (i + 1).to_string(),
                l.message_id.clone().unwrap_or_else(|| "-".into()),
                l.first_failed_at.clone().unwrap_or_else(|| "-".into()),
                l.attempts.map_or_else(|| "-".into(), |a| a.to_string()),
                l.class.clone().unwrap_or_else(|| "-".into()),
                l.routing_key.clone().unwrap_or_else(|| "(unknown)".into()),
                l.replay_count.to_string(),
                one_line(l.error.as_deref().unwrap_or("-"), REASON_CHARS),
                l.preview(PREVIEW_CHARS),
            ]
        })
        .collect();
    say!(
        "{}",
        table::render(
            &[
                "#",
                "MESSAGE ID",
                "FIRST FAILED",
                "ATTEMPTS",
                "CLASS",
                "ROUTING KEY",
                "REPLAYS",
                "REASON",
                "BODY",
            ],
            &rows
        )
        .trim_end()
    );
    Ok(())
}
