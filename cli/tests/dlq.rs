//! `logstream dlq` against the real broker: listing leaves the queue as it was, replays move
//! matching dead letters back into the main flow (at least once, even when killed), and purge
//! asks first.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Stdio,
    time::Duration,
};

use lapin::{
    BasicProperties,
    options::{BasicGetOptions, BasicPublishOptions, BasicRejectOptions},
    types::AMQPValue,
};
use logstream_api::contract::{
    HEADER_ATTEMPT, HEADER_ERROR, HEADER_ERROR_CLASS, HEADER_FIRST_FAILED_AT,
    HEADER_ORIGIN_ROUTING_KEY, HEADER_REPLAY_COUNT,
};
use serde_json::Value;
use support::{DeadLetterSpec, PipelineVhost, Taken, body, eventually, header, put_dead_letters};

/// `n` dead letters: ids `m-0`.., bodies numbered, errors cycling through three causes.
fn letters(n: usize) -> Vec<DeadLetterSpec<'static>> {
    const CAUSES: [(&str, &str, Option<&str>); 3] = [
        ("sink answered HTTP 503", "transient", Some("api.error")),
        ("invalid JSON at byte 3", "permanent", Some("auth.info")),
        (
            "sink timed out after 10s",
            "transient",
            Some("api.critical"),
        ),
    ];
    (0..n)
        .map(|i| {
            let (error, class, origin) = CAUSES[i % 3];
            DeadLetterSpec {
                id: format!("m-{i}"),
                body: format!("{{\"message\":\"dead letter {i}\"}}"),
                error,
                class,
                attempts: 5,
                origin,
            }
        })
        .collect()
}

fn bodies(messages: &[Taken]) -> Vec<String> {
    messages.iter().map(body).collect()
}

fn expected_bodies(letters: &[DeadLetterSpec<'_>]) -> Vec<String> {
    letters.iter().map(|l| l.body.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_shows_every_field_and_leaves_the_same_messages_in_the_same_order() {
    let vhost = PipelineVhost::new("list").await;
    let all = letters(50);
    put_dead_letters(&vhost, &vhost.dlq(), &all).await;

    // A partial listing (the head is fetched, the rest is not) and two full ones.
    let head = vhost
        .logstream(&["dlq", "list", "app", "out", "--limit", "7"])
        .await;
    assert_eq!(head.code, 0, "{head:?}");
    assert!(
        head.stdout
            .starts_with("7 of 50 dead letters in logstream.test.app.out.dlq"),
        "{}",
        head.stdout
    );
    let table = vhost.logstream(&["dlq", "list", "app", "out"]).await;
    assert_eq!(table.code, 0, "{table:?}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 52, "title, header and 50 rows");
    for column in [
        "MESSAGE ID",
        "FIRST FAILED",
        "ATTEMPTS",
        "CLASS",
        "ROUTING KEY",
        "REASON",
        "BODY",
    ] {
        assert!(lines[1].contains(column), "{}", lines[1]);
    }
    let first: Vec<&str> = lines[2]
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        first,
        [
            "1",
            "m-0",
            "2026-05-01T12:00:00.000Z",
            "5",
            "transient",
            "api.error",
            "0",
            "sink answered HTTP 503",
            "{\"message\":\"dead letter 0\"}"
        ]
    );
    let json = vhost
        .logstream(&["dlq", "list", "app", "out", "--json"])
        .await;
    assert_eq!(json.code, 0, "{json:?}");
    let rows: Vec<Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 50);
    assert_eq!(rows[1]["message_id"], "m-1");
    assert_eq!(rows[1]["error"], "invalid JSON at byte 3");
    assert_eq!(rows[1]["class"], "permanent");
    assert_eq!(rows[1]["attempts"], 5);
    assert_eq!(rows[1]["first_failed_at"], "2026-05-01T12:00:00.000Z");
    assert_eq!(rows[1]["routing_key"], "auth.info");
    assert_eq!(rows[1]["body"], "{\"message\":\"dead letter 1\"}");
    assert_eq!(rows[49]["position"], 50);

    let after = vhost.drain(&vhost.dlq()).await;
    assert_eq!(
        bodies(&after),
        expected_bodies(&all),
        "same messages, same order"
    );
    let ids: Vec<String> = after
        .iter()
        .map(|m| m.properties.message_id().clone().unwrap().to_string())
        .collect();
    assert_eq!(ids, (0..50).map(|i| format!("m-{i}")).collect::<Vec<_>>());
    assert!(
        after.iter().all(|m| header(m, HEADER_ERROR).is_some()),
        "headers kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_keeps_the_order_of_a_quorum_dlq_too() {
    let vhost = PipelineVhost::with_pipeline(
        "list-quorum",
        "  queueType: quorum\n  outputs:\n    - {name: out, sink: {stdout: {}}}\n",
    )
    .await;
    let all = letters(20);
    put_dead_letters(&vhost, &vhost.dlq(), &all).await;
    for limit in ["5", "20"] {
        let run = vhost
            .logstream(&["dlq", "list", "app", "out", "--limit", limit])
            .await;
        assert_eq!(run.code, 0, "{run:?}");
    }
    // A replay stopped early by its limit keeps the order of what it leaves.
    let run = vhost
        .logstream(&[
            "dlq",
            "replay",
            "app",
            "out",
            "--class",
            "permanent",
            "--limit",
            "2",
        ])
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    let all: Vec<_> = all
        .into_iter()
        .filter(|l| !["m-1", "m-4"].contains(&l.id.as_str()))
        .collect();
    // The quorum queue may still be applying the returns; wait until all are ready again.
    let dlq = vhost.dlq();
    eventually(
        Duration::from_secs(10),
        "every dead letter ready",
        || async { (vhost.ready(&dlq).await == 18).then_some(()) },
    )
    .await;
    assert_eq!(bodies(&vhost.drain(&dlq).await), expected_bodies(&all));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_refused_by_a_full_main_queue_is_listed_as_such_and_replayed_once_there_is_room() {
    let vhost = PipelineVhost::with_pipeline(
        "backlog",
        "  outputs:\n    - {name: out, maxBacklog: 1, retry: {backoff: [300ms]}, sink: {stdout: {}}}\n",
    )
    .await;
    let main = vhost.main_queue();
    let dlq = vhost.dlq();
    let retry0 = vhost.plan.names.retry_queue("out", 0);
    let fill = vhost
        .logstream(&["produce", "app", "--message", "fills the backlog"])
        .await;
    assert_eq!(fill.code, 0, "{fill:?}");
    let refused = vhost
        .logstream(&["produce", "app", "--message", "one too many"])
        .await;
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(refused.stderr.contains("nack"), "{}", refused.stderr);

    // A worker's retry copy whose wait ends while the main queue is full.
    let retry = DeadLetterSpec {
        id: "m-retry".into(),
        body: "{\"message\":\"retried\"}".into(),
        error: "sink answered HTTP 503",
        class: "transient",
        attempts: 2,
        origin: Some("api.error"),
    };
    put_dead_letters(&vhost, &retry0, std::slice::from_ref(&retry)).await;
    eventually(
        Duration::from_secs(10),
        "the retry to reach the DLQ",
        || async { (vhost.ready(&dlq).await == 1).then_some(()) },
    )
    .await;
    assert_eq!(vhost.ready(&main).await, 1, "the backlog is as it was");
    assert_eq!(vhost.ready(&retry0).await, 0);

    let listed = vhost
        .logstream(&["dlq", "list", "app", "out", "--json"])
        .await;
    assert_eq!(listed.code, 0, "{listed:?}");
    let row: Value = serde_json::from_str(listed.stdout.trim()).unwrap();
    assert_eq!(
        row["error"],
        "main queue full (maxBacklog) when its retry wait ended; last error: sink answered HTTP 503"
    );
    assert_eq!(row["attempts"], 2);
    assert_eq!(row["routing_key"], "api.error");
    assert_eq!(vhost.ready(&dlq).await, 1, "listing leaves it");

    // Room again: the replay puts it back into the main flow, with the producer's key.
    let drained = vhost.drain(&main).await;
    assert_eq!(bodies(&drained).len(), 1);
    let replay = vhost
        .logstream(&["dlq", "replay", "app", "out", "--reason", "maxbacklog"])
        .await;
    assert_eq!(replay.code, 0, "{replay:?}");
    let back = vhost.drain(&main).await;
    assert_eq!(bodies(&back), [retry.body]);
    assert_eq!(back[0].routing_key.as_str(), "api.error");
    assert_eq!(vhost.ready(&dlq).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_sends_matching_dead_letters_back_fresh_and_keeps_the_others_in_order() {
    let vhost = PipelineVhost::new("replay").await;
    let all = letters(30);
    put_dead_letters(&vhost, &vhost.dlq(), &all).await;

    let run = vhost
        .logstream(&["dlq", "replay", "app", "out", "--reason", "http 503"])
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .starts_with("replayed 10, skipped 20 by filters, failed 0; examined 30 of 30"),
        "{}",
        run.stdout
    );
    let replayed = vhost.drain(&vhost.main_queue()).await;
    assert_eq!(replayed.len(), 10);
    for m in &replayed {
        assert_eq!(m.routing_key.as_str(), "api.error");
        assert_eq!(m.exchange.as_str(), "logstream.test.app");
        for cleared in [
            HEADER_ATTEMPT,
            HEADER_ERROR,
            HEADER_ERROR_CLASS,
            HEADER_FIRST_FAILED_AT,
        ] {
            assert_eq!(header(m, cleared), None, "{cleared} kept");
        }
        assert_eq!(
            header(m, HEADER_REPLAY_COUNT),
            Some(AMQPValue::LongLongInt(1))
        );
        assert_eq!(m.properties.priority(), &Some(2), "properties kept");
        assert_eq!(m.properties.timestamp(), &Some(1_777_636_800));
    }
    let kept: Vec<_> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(_, l)| l.body.clone())
        .collect();
    let dlq = vhost.drain(&vhost.dlq()).await;
    assert_eq!(bodies(&dlq), kept, "the others stay, in their order");

    // The class filter and the limit, on what is left.
    put_dead_letters(
        &vhost,
        &vhost.dlq(),
        &all.iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(_, l)| l.clone())
            .collect::<Vec<_>>(),
    )
    .await;
    let run = vhost
        .logstream(&[
            "dlq",
            "replay",
            "app",
            "out",
            "--class",
            "permanent",
            "--limit",
            "4",
        ])
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("replayed 4,"), "{}", run.stdout);
    let replayed = vhost.drain(&vhost.main_queue()).await;
    let keys: BTreeSet<&str> = replayed.iter().map(|m| m.routing_key.as_str()).collect();
    assert_eq!(replayed.len(), 4);
    assert_eq!(keys, BTreeSet::from(["auth.info"]));
    assert_eq!(vhost.ready(&vhost.dlq()).await, 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_replay_reaches_only_the_output_whose_dead_letters_they_are() {
    let vhost = PipelineVhost::with_pipeline(
        "direct",
        "  outputs:\n    - {name: out, sink: {stdout: {}}}\n    - {name: archive, sink: {stdout: {}}}\n",
    )
    .await;
    let archive = vhost.plan.names.main_queue("archive");
    put_dead_letters(&vhost, &vhost.dlq(), &letters(3)).await;
    let run = vhost
        .logstream(&["dlq", "replay", "app", "out", "--direct"])
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .ends_with("copies went straight to queue logstream.test.app.out\n"),
        "{}",
        run.stdout
    );
    assert_eq!(
        vhost.ready(&archive).await,
        0,
        "the other output got nothing"
    );
    let replayed = vhost.drain(&vhost.main_queue()).await;
    assert_eq!(replayed.len(), 3);
    assert_eq!(
        header(&replayed[0], HEADER_ORIGIN_ROUTING_KEY),
        Some(AMQPValue::LongString("api.error".into())),
        "the original key is kept for a later replay"
    );

    // Through the exchange, every output bound to the key gets the log.
    put_dead_letters(&vhost, &vhost.dlq(), &letters(3)).await;
    let run = vhost.logstream(&["dlq", "replay", "app", "out"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(vhost.ready(&vhost.main_queue()).await, 3);
    assert_eq!(vhost.ready(&archive).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_changes_nothing() {
    let vhost = PipelineVhost::new("dry").await;
    let all = letters(9);
    put_dead_letters(&vhost, &vhost.dlq(), &all).await;
    let run = vhost
        .logstream(&[
            "dlq",
            "replay",
            "app",
            "out",
            "--dry-run",
            "--class",
            "transient",
        ])
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout
            .lines()
            .filter(|l| l.starts_with("would replay m-"))
            .count(),
        6
    );
    assert!(
        run.stdout
            .contains("dry run: would replay 6, skipped 3 by filters"),
        "{}",
        run.stdout
    );
    assert_eq!(vhost.ready(&vhost.main_queue()).await, 0);
    assert_eq!(
        bodies(&vhost.drain(&vhost.dlq()).await),
        expected_bodies(&all)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_without_a_routing_key_stays_and_the_run_fails_clearly() {
    let vhost = PipelineVhost::new("nokey").await;
    let mut all = letters(3);
    all[1].origin = None;
    put_dead_letters(&vhost, &vhost.dlq(), &all).await;
    let run = vhost.logstream(&["dlq", "replay", "app", "out"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stdout
            .starts_with("replayed 2, skipped 0 by filters, failed 1"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains(
            "dead letter m-1: not replayed: it has no x-logstream-origin-routing-key header"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.trim_end().lines().last().unwrap().starts_with(
            "error: 1 dead letters were not replayed and stay in logstream.test.app.out.dlq"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(vhost.ready(&vhost.main_queue()).await, 2);
    assert_eq!(
        bodies(&vhost.drain(&vhost.dlq()).await),
        [all[1].body.clone()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_x_death_routing_key_is_used_when_the_worker_header_is_missing() {
    // A quorum-style broker dead-lettering: rejected from the main queue without requeue.
    let vhost = PipelineVhost::new("xdeath").await;
    let (connection, channel) = vhost.confirm_channel().await;
    channel
        .basic_publish(
            vhost.exchange().as_str().into(),
            "game.auth.error".into(),
            BasicPublishOptions::default(),
            b"{\"message\":\"poison\"}",
            BasicProperties::default()
                .with_message_id("p-1".into())
                .with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let got = channel
        .basic_get(
            vhost.main_queue().as_str().into(),
            BasicGetOptions { no_ack: false },
        )
        .await
        .unwrap()
        .unwrap();
    channel
        .basic_reject(
            got.delivery.delivery_tag,
            BasicRejectOptions { requeue: false },
        )
        .await
        .unwrap();
    let _ = connection.close(200, "bye".into()).await;
    let dlq = vhost.dlq();
    eventually(
        Duration::from_secs(10),
        "the broker dead-letters the message",
        || async { (vhost.ready(&dlq).await == 1).then_some(()) },
    )
    .await;

    let list = vhost
        .logstream(&["dlq", "list", "app", "out", "--json"])
        .await;
    let row: Value = serde_json::from_str(list.stdout.trim()).unwrap();
    assert_eq!(row["routing_key"], "game.auth.error", "{list:?}");
    let run = vhost.logstream(&["dlq", "replay", "app", "out"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let replayed = vhost.drain(&vhost.main_queue()).await;
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].routing_key.as_str(), "game.auth.error");
    assert_eq!(
        header(&replayed[0], "x-death"),
        None,
        "the broker's history is cleared"
    );
    assert_eq!(
        header(&replayed[0], HEADER_ORIGIN_ROUTING_KEY),
        Some(AMQPValue::LongString("game.auth.error".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_killed_with_sigkill_mid_run_and_run_again_loses_no_dead_letter() {
    const N: usize = 3000;
    let vhost = PipelineVhost::new("sigkill").await;
    let all = letters(N);
    put_dead_letters(&vhost, &vhost.dlq(), &all).await;

    let mut child = support::command(&[
        "--vhost",
        &vhost.name,
        "-n",
        "test",
        "dlq",
        "replay",
        "app",
        "out",
        "--rate",
        "1000",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let main = vhost.main_queue();
    eventually(
        Duration::from_secs(30),
        "the replay to be under way",
        || async { (vhost.ready(&main).await >= 300).then_some(()) },
    )
    .await;
    child.start_kill().unwrap(); // SIGKILL
    let status = child.wait().await.unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );

    let dlq = vhost.dlq();
    // Unacknowledged dead letters come back once the broker notices the dead connection.
    let (in_main, in_dlq) =
        eventually(Duration::from_secs(30), "the broker to requeue", || async {
            let (m, d) = (vhost.ready(&main).await, vhost.ready(&dlq).await);
            (m as usize + d as usize >= N).then_some((m, d))
        })
        .await;
    eprintln!("after SIGKILL: {in_main} in the main queue, {in_dlq} still in the DLQ");
    assert!(
        in_main > 0 && (in_main as usize) < N,
        "killed mid-run: {in_main}"
    );

    let again = vhost.logstream(&["dlq", "replay", "app", "out"]).await;
    assert_eq!(again.code, 0, "{again:?}");
    eprintln!("second run: {}", again.stdout.trim());
    assert_eq!(vhost.ready(&dlq).await, 0);

    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for m in vhost.drain(&main).await {
        let id = m.properties.message_id().clone().unwrap().to_string();
        *seen.entry(id).or_default() += 1;
    }
    let missing: Vec<_> = all
        .iter()
        .filter(|l| !seen.contains_key(&l.id))
        .map(|l| l.id.clone())
        .collect();
    let duplicates = seen.values().filter(|&&c| c > 1).count();
    eprintln!(
        "{} distinct dead letters in the main flow, {duplicates} twice, {} missing",
        seen.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert_eq!(seen.len(), N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_refuses_without_a_terminal_unless_told_yes() {
    let vhost = PipelineVhost::new("purge").await;
    put_dead_letters(&vhost, &vhost.dlq(), &letters(5)).await;
    let refused = vhost.logstream(&["dlq", "purge", "app", "out"]).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert_eq!(
        refused.stderr.trim(),
        "error: refusing to purge without confirmation: stdin is not a terminal; pass --yes"
    );
    assert_eq!(vhost.ready(&vhost.dlq()).await, 5);
    let purged = vhost
        .logstream(&["dlq", "purge", "app", "out", "--yes"])
        .await;
    assert_eq!(purged.code, 0, "{purged:?}");
    assert_eq!(
        purged.stdout.trim(),
        "purged 5 messages from logstream.test.app.out.dlq"
    );
    assert_eq!(vhost.ready(&vhost.dlq()).await, 0);
}
