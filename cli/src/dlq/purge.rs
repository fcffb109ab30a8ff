//! `logstream dlq purge`: deletes every message of an output's dead-letter queue, after asking
//! on a terminal; without a terminal it refuses unless `--yes` says the caller meant it.

use std::io::{BufRead, IsTerminal, Write};

use lapin::options::QueuePurgeOptions;

use super::OpenDlq;
use logstream_broker::error::short_string;

use crate::{Context, args::DlqTarget, error::CliError};

/// Runs `dlq purge`.
pub async fn run(ctx: &Context, which: &DlqTarget, yes: bool) -> Result<(), CliError> {
    let interactive = std::io::stdin().is_terminal();
    if !yes && !interactive {
        return Err(CliError::Usage(
            "refusing to purge without confirmation: stdin is not a terminal; pass --yes".into(),
        ));
    }
    let dlq = OpenDlq::open(ctx, which).await?;
    if dlq.messages == 0 {
        say!("{} is already empty", dlq.queue);
        dlq.connection.close().await;
        return Ok(());
    }
    if !yes && !confirm(&dlq.queue, dlq.messages)? {
        say!("nothing purged");
        dlq.connection.close().await;
        return Ok(());
    }
    let channel = dlq.connection.channel().await?;
    let purged = channel
        .queue_purge(
            short_string(&dlq.queue, "queue")?,
            QueuePurgeOptions::default(),
        )
        .await
        .map_err(|e| CliError::amqp("purge", &dlq.queue, &e))?;
    let _ = channel.close(200, "purged".into()).await;
    dlq.connection.close().await;
    say!("purged {purged} messages from {}", dlq.queue);
    Ok(())
}

/// Asks on the terminal; only `y` or `yes` confirms.
fn confirm(queue: &str, messages: u64) -> Result<bool, CliError> {
    let io = |source| CliError::Io {
        action: "ask for confirmation",
        source,
    };
    let mut err = std::io::stderr();
    write!(
        err,
        "Delete all {messages} messages of {queue}? This cannot be undone. [y/N] "
    )
    .and_then(|()| err.flush())
    .map_err(io)?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).map_err(io)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
