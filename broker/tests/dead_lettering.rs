//! Quorum queues dead-letter at least once: a dead letter whose target cannot take it is kept by
//! its source queue instead of being dropped, on RabbitMQ 3.10 and 4 alike.
//!
//! Each test runs the same story twice, each in a vhost of its own: once with the arguments
//! LogStream declared before (`x-dead-letter-strategy` absent: the broker's default, at most
//! once), where the message is lost, and once with the plan as it is now, where it is kept and
//! arrives once its target is back.
//!
//! The broker's dead-letter worker sends a kept message again every
//! `dead_letter_worker_publisher_confirm_timeout` (180 s by default; measured: 174 s on 3.10.8,
//! over 160 s on 4.0.5), or at once when the source queue's policy changes. The tests
//! change an unrelated policy key (`TestBroker::resend_dead_letters`) rather than wait three
//! minutes.

use std::time::Duration;

use lapin::options::{BasicGetOptions, BasicRejectOptions};
use logstream_api::{
    TopologyPlan,
    manifest::parse_pipeline,
    plan,
    topology::{QueueRole, args},
};
use logstream_broker::{BrokerAdmin, QueueStats};
use logstream_testkit::{TestVhost, endpoint, eventually, publish};

/// A quorum pipeline `test/app` with output `o` and one short retry step, planned for `vhost`.
fn quorum_plan(vhost: &TestVhost) -> TopologyPlan {
    let yaml = "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {name: app, namespace: test}\nspec:\n  broker: {secretRef: {name: r}}\n  queueType: quorum\n  outputs:\n    - name: o\n      retry: {maxAttempts: 3, backoff: [200ms]}\n      sink: {stdout: {}}\n";
    let pipeline = parse_pipeline(yaml).unwrap();
    let mut p = plan("test", "app", &pipeline.spec).unwrap();
    p.vhost.clone_from(&vhost.name);
    p
}

/// `p` as LogStream planned it before quorum queues dead-lettered at least once.
fn at_most_once(mut p: TopologyPlan) -> TopologyPlan {
    for queue in &mut p.queues {
        if queue.arguments.remove(args::DEAD_LETTER_STRATEGY).is_some()
            && !queue.arguments.contains_key(args::MAX_LENGTH)
        {
            queue.arguments.remove(args::OVERFLOW);
        }
    }
    p
}

/// Which arguments a story runs with.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Strategy {
    /// What LogStream declared before: the broker's default.
    AtMostOnce,
    /// What the plan declares now.
    AtLeastOnce,
}

async fn setup(label: &str, strategy: Strategy) -> (TestVhost, TopologyPlan, BrokerAdmin) {
    let vhost = TestVhost::new(label).await;
    let planned = quorum_plan(&vhost);
    let declared = match strategy {
        Strategy::AtMostOnce => at_most_once(planned.clone()),
        Strategy::AtLeastOnce => planned.clone(),
    };
    let admin = BrokerAdmin::connect(&endpoint(), &vhost.name)
        .await
        .unwrap();
    admin.apply(&declared).await.unwrap();
    (vhost, declared, admin)
}

async fn stats(vhost: &TestVhost, queue: &str) -> Option<QueueStats> {
    vhost
        .management
        .queues(&vhost.name)
        .await
        .unwrap()
        .into_iter()
        .find(|q| q.name == queue)
}

/// Deletes `queue` as someone might by hand (the operator's next reconcile re-declares it).
async fn delete_by_hand(vhost: &TestVhost, queue: &str) {
    let conn = vhost.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(queue.into(), Default::default())
        .await
        .unwrap();
    let _ = conn.close(200, "bye".into()).await;
}

/// Whether a message reaches `queue` within 10 s.
async fn arrives(admin: &BrokerAdmin, queue: &str) -> bool {
    tokio::time::timeout(Duration::from_secs(10), async {
        while admin.queue_depth(queue).await.unwrap().map(|d| d.ready) != Some(1) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .is_ok()
}

/// What a story ends with: where the message is, and how many the source queue kept meanwhile.
#[derive(Debug, PartialEq)]
struct Outcome {
    kept_by_source: u64,
    arrived: bool,
}

/// A worker's copy waits in the retry step while the main queue is missing (deleted by hand);
/// its wait ends; then the main queue is re-declared (the operator's drift repair).
async fn retry_while_main_is_missing(strategy: Strategy) -> Outcome {
    let (vhost, p, admin) = setup("dlx-retry", strategy).await;
    let main = p.queue("o", QueueRole::Main).unwrap().name.clone();
    let retry = p.queue("o", QueueRole::Retry(0)).unwrap().name.clone();
    delete_by_hand(&vhost, &main).await;

    let (_conn, channel) = vhost.confirm_channel().await;
    assert!(publish(&channel, "", &retry, b"retry me").await.is_ack());
    // The 200 ms wait ends; the broker dead-letters the copy towards the missing main queue.
    let left = eventually(
        Duration::from_secs(30),
        "the copy to leave the retry step's ready messages",
        || async {
            let s = stats(&vhost, &retry).await?;
            // A sample taken after the publish (the management API lags), with the quorum
            // queue's dead-letter figures (RabbitMQ 4.0.5 leaves them out of a queue's first
            // samples).
            let sampled =
                s.published_total() == 1 && s.messages_ready == Some(0) && s.messages_dlx.is_some();
            sampled.then_some(s)
        },
    )
    .await;
    let kept_by_source = left.messages_dlx.unwrap_or(0);
    eprintln!(
        "{strategy:?}: retry step after the wait: {:?} messages, {:?} kept for dead-lettering",
        left.messages, left.messages_dlx
    );

    admin.apply(&p).await.unwrap();
    vhost.resend_dead_letters(&retry).await;
    let arrived = arrives(&admin, &main).await;
    if arrived {
        let m = channel
            .basic_get(main.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.delivery.data, b"retry me");
    }
    admin.close().await;
    Outcome {
        kept_by_source,
        arrived,
    }
}

/// A poison message is rejected from the main queue while the DLQ is missing (deleted by hand);
/// then the DLQ and its binding are re-declared.
async fn dead_letter_while_dlq_is_missing(strategy: Strategy) -> Outcome {
    let (vhost, p, admin) = setup("dlx-dlq", strategy).await;
    let main = p.queue("o", QueueRole::Main).unwrap().name.clone();
    let dlq = p.queue("o", QueueRole::DeadLetter).unwrap().name.clone();
    delete_by_hand(&vhost, &dlq).await;

    let (_conn, channel) = vhost.confirm_channel().await;
    assert!(publish(&channel, "", &main, b"poison").await.is_ack());
    let m = channel
        .basic_get(main.as_str().into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .unwrap();
    channel
        .basic_reject(
            m.delivery.delivery_tag,
            BasicRejectOptions { requeue: false },
        )
        .await
        .unwrap();
    let left = eventually(
        Duration::from_secs(30),
        "the rejected message to leave the main queue's unacknowledged messages",
        || async {
            let s = stats(&vhost, &main).await?;
            let after_the_reject = s.delivered_total() == 1
                && s.messages_unacknowledged == Some(0)
                && s.messages_ready == Some(0)
                && s.messages_dlx.is_some();
            after_the_reject.then_some(s)
        },
    )
    .await;
    let kept_by_source = left.messages_dlx.unwrap_or(0);
    eprintln!(
        "{strategy:?}: main queue after the reject: {:?} messages, {:?} kept for dead-lettering",
        left.messages, left.messages_dlx
    );

    admin.apply(&p).await.unwrap();
    vhost.resend_dead_letters(&main).await;
    let arrived = arrives(&admin, &dlq).await;
    admin.close().await;
    Outcome {
        kept_by_source,
        arrived,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_whose_main_queue_is_missing_is_kept_until_the_queue_is_back() {
    let (before, now) = tokio::join!(
        retry_while_main_is_missing(Strategy::AtMostOnce),
        retry_while_main_is_missing(Strategy::AtLeastOnce),
    );
    assert_eq!(
        before,
        Outcome {
            kept_by_source: 0,
            arrived: false
        },
        "at most once, the broker drops a retry it cannot route: the test would not show anything"
    );
    assert_eq!(
        now,
        Outcome {
            kept_by_source: 1,
            arrived: true
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_whose_dlq_is_missing_is_kept_until_the_dlq_is_back() {
    let (before, now) = tokio::join!(
        dead_letter_while_dlq_is_missing(Strategy::AtMostOnce),
        dead_letter_while_dlq_is_missing(Strategy::AtLeastOnce),
    );
    assert_eq!(
        before,
        Outcome {
            kept_by_source: 0,
            arrived: false
        },
        "at most once, the broker drops a dead letter it cannot route"
    );
    assert_eq!(
        now,
        Outcome {
            kept_by_source: 1,
            arrived: true
        }
    );
}
