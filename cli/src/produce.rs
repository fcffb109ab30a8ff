//! `logstream produce`: one log from flags, JSON lines from stdin, or a load run; every log
//! published persistently with pipelined publisher confirms and accounted for at the end.
//!
//! A lost connection (a broker node restarted or died) does not end the run: the producer
//! reconnects, through any host of `--amqp`, for up to `--reconnect-timeout`, and publishes
//! again every log whose confirm had not come (same message id, so a worker's dedup drops the
//! copy when the first did arrive). A log counts as confirmed once, when a confirm came for it;
//! one that no confirm ever covered counts as unconfirmed, never as sent and stored. When the
//! broker closes the channel on a live connection (a missing exchange), the run stops, as
//! before.

use std::{collections::VecDeque, io::IsTerminal, time::Duration};

use jiff::Timestamp;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    time::Instant,
};

use logstream_api::pipeline::QueueType;
use logstream_broker::{
    BrokerConnection,
    publish::{ConfirmWindow, MainProblem, PublishOutcome, Tally},
};

use crate::{
    Context,
    args::ProduceArgs,
    envelope::{self, Envelope},
    error::CliError,
    pacing::Pacer,
    progress::{Progress, UPDATE_EVERY},
    stop::StopSignal,
};

/// First pause between attempts to reconnect.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between attempts to reconnect.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Runs `produce`.
pub async fn run(ctx: &Context, args: &ProduceArgs) -> Result<(), CliError> {
    if !args.is_load() && args.message.is_none() && std::io::stdin().is_terminal() {
        return Err(CliError::Usage(
            "nothing to send: give --message, pipe logs (JSON lines) to stdin, or start a load run with --count, --duration or --rate".into(),
        ));
    }
    // The priority table is the queue type's: a manifest says it, else classic's.
    let (exchange, vhost, hint, queue_type) =
        match (&args.exchange, &args.pipeline, &ctx.broker.file) {
            (Some(exchange), None, None) => (
                exchange.clone(),
                ctx.default_vhost(),
                "create it, or name the pipeline instead of --exchange".to_owned(),
                QueueType::Classic,
            ),
            (exchange, pipeline, _) => {
                let target = ctx.target(pipeline.as_deref())?;
                let exchange = exchange.clone().unwrap_or_else(|| target.exchange.clone());
                let queue_type = target.queue_type.unwrap_or(QueueType::Classic);
                (
                    exchange,
                    target.vhost.clone(),
                    target.missing_hint(),
                    queue_type,
                )
            }
        };
    let connection = ctx.connect(&vhost).await?;
    connection
        .require_exchange(&exchange)
        .await
        .map_err(|e| CliError::with_hint(e, &hint))?;
    let channel = connection.confirm_channel().await?;
    let mut sender = Sender {
        ctx,
        vhost,
        window: ConfirmWindow::new(channel, args.window),
        connection,
        capacity: args.window,
        queue: VecDeque::new(),
        unsettled: Vec::new(),
        last_loss: None,
        reconnect_for: args.reconnect_timeout.as_std(),
        reconnects: 0,
        republished: 0,
        stopped: false,
        tally: Tally::default(),
        exchange,
        queue_type,
        main_problem: MainProblem::default(),
        started: Instant::now(),
        elapsed: 0.0,
    };

    let skipped = if let Some(message) = &args.message {
        let fields = envelope::field_values(&args.fields);
        let now = Timestamp::now();
        let body = envelope::log_body(&args.service, args.level, message, &fields, now);
        sender
            .send(encode(
                args,
                sender.queue_type,
                &args.service,
                args.level,
                &body,
                now,
            ))
            .await?;
        0
    } else if args.is_load() {
        load(&mut sender, args).await?;
        0
    } else {
        from_stdin(&mut sender, args).await?
    };
    sender.finish().await?;
    sender.connection.close().await;

    say!("{}", sender.summary());
    let tally = sender.tally;
    if tally.failed() > 0 {
        return Err(CliError::Incomplete(format!(
            "{} of {} logs were not accepted by the broker: {}",
            tally.failed(),
            tally.sent,
            sender.main_problem.into_text().unwrap_or_default()
        )));
    }
    if skipped > 0 {
        return Err(CliError::Incomplete(format!(
            "{skipped} input lines were not logs and were skipped"
        )));
    }
    Ok(())
}

/// Publishes and counts, through lost connections.
struct Sender<'a> {
    ctx: &'a Context,
    vhost: String,
    connection: BrokerConnection,
    window: ConfirmWindow<Envelope>,
    /// `--window`.
    capacity: usize,
    /// Logs to publish (again) before the next new one.
    queue: VecDeque<Envelope>,
    /// Logs whose channel closed before their confirm came: published again after a
    /// reconnect, or counted as unconfirmed.
    unsettled: Vec<Envelope>,
    /// How the last of them was lost, for the error when they stay unconfirmed.
    last_loss: Option<PublishOutcome>,
    /// `--reconnect-timeout`.
    reconnect_for: Duration,
    reconnects: u64,
    /// Logs published again after a reconnect (each counts once in `tally.sent`).
    republished: u64,
    /// Nothing more can be sent: the broker closed the channel on a live connection, or the
    /// connection did not come back.
    stopped: bool,
    tally: Tally,
    exchange: String,
    /// The pipeline's queue type, whose priority table the logs take.
    queue_type: QueueType,
    main_problem: MainProblem,
    started: Instant,
    /// Seconds from the first publish to the last confirm, once finished.
    elapsed: f64,
}

impl Sender<'_> {
    /// Publishes a new log.
    async fn send(&mut self, envelope: Envelope) -> Result<(), CliError> {
        self.tally.sent += 1;
        self.queue.push_back(envelope);
        self.pump().await
    }

    /// Publishes what is queued; recovers when the channel closes.
    async fn pump(&mut self) -> Result<(), CliError> {
        while let Some(envelope) = self.queue.pop_front() {
            if self.stopped {
                self.unsettled.push(envelope);
                continue;
            }
            let (routing_key, body, properties) = (
                envelope.routing_key.clone(),
                envelope.body.clone(),
                envelope.properties.clone(),
            );
            let done = self
                .window
                .publish(envelope, &self.exchange, &routing_key, body, properties)
                .await?;
            self.settle(done);
            if self.window.is_closed() {
                self.recover().await?;
            }
        }
        if self.stopped {
            self.give_up();
        }
        Ok(())
    }

    /// Hands what was sent to the connection now (before waiting for anything else).
    fn flush(&mut self) {
        let done = self.window.flush();
        self.settle(done);
    }

    /// True once nothing more can be sent.
    fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Counts known outcomes; keeps the logs whose fate the closed channel left unknown.
    fn settle(&mut self, done: Vec<(Envelope, PublishOutcome)>) {
        for (envelope, outcome) in done {
            if let PublishOutcome::Lost { after_close, .. } = outcome {
                self.unsettled.push(envelope);
                // The loss that says why the channel closed, before one that only saw it
                // closing.
                if !after_close || self.last_loss.is_none() {
                    self.last_loss = Some(outcome);
                }
            } else {
                self.record(&outcome);
            }
        }
    }

    /// The channel closed: waits for what is outstanding, then reconnects and queues the logs
    /// without a confirm first, or stops when the connection is alive (the broker closed the
    /// channel for a reason of its own) or does not come back within `--reconnect-timeout`.
    async fn recover(&mut self) -> Result<(), CliError> {
        let done = self.window.drain().await;
        self.settle(done);
        if self.connection.is_connected() || self.reconnect_for.is_zero() {
            self.stopped = true;
            return Ok(());
        }
        let lost_at = Instant::now();
        let host = self.connection.host().to_string();
        eprintln!(
            "connection to {host} lost; reconnecting for up to {:?}",
            self.reconnect_for
        );
        let deadline = lost_at + self.reconnect_for;
        let mut backoff = RECONNECT_BACKOFF_MIN;
        let (connection, channel) = loop {
            let attempt = async {
                let connection = self.ctx.connect(&self.vhost).await?;
                let channel = connection.confirm_channel().await?;
                Ok::<_, CliError>((connection, channel))
            };
            match attempt.await {
                Ok(opened) => break opened,
                Err(e) if Instant::now() + backoff >= deadline => {
                    self.stopped = true;
                    self.main_problem.offer_text(format!(
                        "the connection to the broker was lost and did not come back within {:?}: {e}",
                        self.reconnect_for
                    ));
                    return Ok(());
                }
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                }
            }
        };
        self.connection.close().await;
        self.connection = connection;
        self.window = ConfirmWindow::new(channel, self.capacity);
        self.reconnects += 1;
        let again = std::mem::take(&mut self.unsettled);
        eprintln!(
            "reconnected to {} after {:.1}s; publishing {} logs without a confirm again",
            self.connection.host(),
            lost_at.elapsed().as_secs_f64(),
            again.len()
        );
        self.republished += again.len() as u64;
        for envelope in again.into_iter().rev() {
            self.queue.push_front(envelope);
        }
        Ok(())
    }

    /// Counts every log still without a confirm as unconfirmed.
    fn give_up(&mut self) {
        let lost = self.unsettled.len() + self.queue.len();
        self.unsettled.clear();
        self.queue.clear();
        let outcome = self.last_loss.take().unwrap_or(PublishOutcome::Lost {
            reason: "the connection closed".into(),
            after_close: false,
        });
        for _ in 0..lost {
            self.record(&outcome);
        }
    }

    fn record(&mut self, outcome: &PublishOutcome) {
        self.tally.record(outcome);
        let exchange = &self.exchange;
        self.main_problem.offer(outcome, || match outcome {
            PublishOutcome::Confirmed => None,
            PublishOutcome::Nacked => Some(format!(
                "the broker refused them (nack): is a queue bound to exchange {exchange:?} full (maxBacklog)?"
            )),
            PublishOutcome::Returned { reply, routing_key } => Some(format!(
                "returned as unroutable ({reply}): no queue is bound to exchange {exchange:?} for routing keys like {routing_key:?}"
            )),
            PublishOutcome::Lost { .. } | PublishOutcome::Unconfirmed { .. } => outcome.problem(),
        });
    }

    /// Waits for every confirm, reconnecting and publishing again as long as logs lack one.
    async fn finish(&mut self) -> Result<(), CliError> {
        loop {
            let done = self.window.drain().await;
            self.settle(done);
            if self.unsettled.is_empty() || self.stopped {
                break;
            }
            self.recover().await?;
            self.pump().await?;
        }
        self.give_up();
        self.elapsed = self.started.elapsed().as_secs_f64();
        Ok(())
    }

    fn summary(&self) -> String {
        let t = &self.tally;
        let secs = self.elapsed;
        let rate = if secs > 0.0 {
            t.confirmed as f64 / secs
        } else {
            0.0
        };
        let mut line = format!(
            "sent {}, confirmed {}, nacked {}, returned {}, unconfirmed {} in {secs:.2}s ({rate:.0} logs/s) to exchange {:?}",
            t.sent, t.confirmed, t.nacked, t.returned, t.lost, self.exchange
        );
        if self.reconnects > 0 {
            line.push_str(&format!(
                "; {} reconnect(s), {} logs published again after a lost connection (each counted once)",
                self.reconnects, self.republished
            ));
        }
        line
    }
}

async fn load(sender: &mut Sender<'_>, args: &ProduceArgs) -> Result<(), CliError> {
    let services: Vec<&str> = args
        .service
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let services = if services.is_empty() {
        vec![crate::args::DEFAULT_SERVICE]
    } else {
        services
    };
    let fields = envelope::field_values(&args.fields);
    // The deadline starts first, so a burst due exactly at the end is not sent.
    let deadline = args.duration.map(|d| Instant::now() + d.as_std());
    let pacer = Pacer::new(args.rate, args.burst);
    let mut levels = args.levels.schedule();
    let progress = Progress::new(args.count, "produce");
    let mut stop = StopSignal::on_ctrl_c();

    let mut k: u64 = 0;
    loop {
        if args.count.is_some_and(|count| k >= count) || stop.is_stopped() || sender.is_stopped() {
            break;
        }
        if !pacer.is_due(k) {
            sender.flush();
        }
        let due = tokio::select! {
            () = pacer.wait_for(k) => true,
            () = sleep_until_opt(deadline) => false,
            () = stop.stopped() => false,
        };
        if !due || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let level = levels.next().unwrap_or(args.level);
        let service = services[(k % services.len() as u64) as usize];
        let now = Timestamp::now();
        let mut body =
            envelope::log_body(service, level, &format!("load test log {k}"), &fields, now);
        if let Some(size) = args.size {
            envelope::pad_to(&mut body, size);
        }
        sender
            .send(encode(args, sender.queue_type, service, level, &body, now))
            .await?;
        k += 1;
        if k.is_multiple_of(UPDATE_EVERY) {
            progress.set(k);
        }
    }
    progress.set(k);
    progress.finish();
    Ok(())
}

/// The envelope of one log in the `--format` asked for, with `--routing-key` when given.
fn encode(
    args: &ProduceArgs,
    queue_type: QueueType,
    service: &str,
    level: logstream_api::contract::Level,
    body: &serde_json::Map<String, serde_json::Value>,
    now: Timestamp,
) -> Envelope {
    let mut env = envelope::encode(
        args.format,
        queue_type,
        service,
        level,
        body,
        envelope::new_message_id(),
        now,
    );
    if let Some(key) = &args.routing_key {
        env.routing_key.clone_from(key);
    }
    env
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Publishes every line of stdin; returns how many lines were skipped (and said why on
/// stderr).
async fn from_stdin(sender: &mut Sender<'_>, args: &ProduceArgs) -> Result<u64, CliError> {
    let fields = envelope::field_values(&args.fields);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut number = 0u64;
    let mut skipped = 0u64;
    while let Some(line) = lines.next_line().await.map_err(|source| CliError::Io {
        action: "read stdin",
        source,
    })? {
        number += 1;
        let now = Timestamp::now();
        match envelope::log_from_line(&line, &args.service, args.level, &fields, now) {
            Ok(Some(log)) => {
                let env = encode(
                    args,
                    sender.queue_type,
                    &log.service,
                    log.level,
                    &log.body,
                    now,
                );
                if env.routing_key.len() > 255 {
                    eprintln!("line {number}: skipped: service name is longer than 250 bytes");
                    skipped += 1;
                    continue;
                }
                sender.send(env).await?;
                // Lines may come slowly (`tail -f`): each goes out at once.
                sender.flush();
                if sender.is_stopped() {
                    break;
                }
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("line {number}: skipped: {e}");
                skipped += 1;
            }
        }
    }
    Ok(skipped)
}
