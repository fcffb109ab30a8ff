//! Throughput of the worker against a bare lapin consume+ACK loop, side by side, on the same
//! broker, queue and messages (1 KB persistent JSON logs of the message contract).
//!
//! - bare: `basic_qos(prefetch)`, `basic_consume`, and one awaited `basic.ack` per delivery
//!   (the baseline of issue 3);
//! - bare-multi (for reference): the same loop ACKing with `multiple=true` every 100
//!   deliveries, about the best lapin can do on this machine;
//! - worker: the real `logstream-worker` binary (consume, decode and normalize the JSON,
//!   dedup, write to a `file` sink on /dev/null, multiple ACKs), timed from its `/readyz` to
//!   its `logstream_messages_total{outcome="ok"}` reaching the message count; its peak
//!   resident memory is `VmHWM` from `/proc/<pid>/status`.
//!
//! Each round fills the queue and drains it once per contender (the order rotates between
//! rounds). Run with `make bench-worker`; settings by
//! environment: `LOGSTREAM_BENCH_MESSAGES` (default 50000), `LOGSTREAM_BENCH_ROUNDS` (3),
//! `LOGSTREAM_BENCH_QUEUE_TYPES` (`classic,quorum`), `LOGSTREAM_BENCH_PREFETCH` (200), and
//! `AMQP_ADDR` / `MANAGEMENT_ADDR` for the broker (default: loopback, guest).

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use futures::StreamExt;
use lapin::{
    BasicProperties, Channel, Confirmation,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions,
    },
    types::FieldTable,
};
use logstream_api::{
    manifest::parse_pipeline,
    plan,
    worker_config::{AMQP_URI_ENV, WorkerConfig},
};
use logstream_broker::{BrokerAdmin, BrokerEndpoint, ManagementClient};

mod common;

use common::{connect, endpoint, env_or, metric};

const BODY_BYTES: usize = 1024;

struct Settings {
    messages: u64,
    rounds: usize,
    queue_types: Vec<String>,
    prefetch: u16,
}

/// A 1 KB log of the message contract.
fn body(seq: u64) -> Vec<u8> {
    let head = serde_json::json!({
        "ts": "2024-05-01T10:00:00.123Z",
        "level": "info",
        "service": "bench",
        "seq": seq,
        "message": "",
    })
    .to_string();
    let padding = BODY_BYTES.saturating_sub(head.len());
    let body = serde_json::json!({
        "ts": "2024-05-01T10:00:00.123Z",
        "level": "info",
        "service": "bench",
        "seq": seq,
        "message": "x".repeat(padding),
    })
    .to_string();
    body.into_bytes()
}

async fn fill(channel: &Channel, queue: &str, n: u64, round: usize) {
    let mut pending = Vec::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for seq in 0..n {
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(format!("bench-{round}-{seq}").into())
            .with_timestamp(now)
            .with_priority(0);
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body(seq),
                properties,
            )
            .await
            .expect("publish");
        pending.push(confirm);
        if pending.len() >= 1000 {
            for c in pending.drain(..) {
                assert!(matches!(c.await.expect("confirm"), Confirmation::Ack(_)));
            }
        }
    }
    for c in pending {
        assert!(matches!(c.await.expect("confirm"), Confirmation::Ack(_)));
    }
}

/// The bare loop: consume with prefetch and ACK each delivery (or, with `ack_every` > 1, every
/// `ack_every`-th delivery with `multiple=true`). Returns messages per second.
async fn bare(
    endpoint: &BrokerEndpoint,
    vhost: &str,
    queue: &str,
    n: u64,
    prefetch: u16,
    ack_every: u64,
) -> f64 {
    let connection = connect(endpoint, vhost).await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .unwrap();
    let start = Instant::now();
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "bare-bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut count = 0;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery.expect("delivery");
        count += 1;
        if ack_every <= 1 {
            delivery.ack(BasicAckOptions::default()).await.expect("ack");
        } else if count % ack_every == 0 || count == n {
            delivery
                .ack(BasicAckOptions { multiple: true })
                .await
                .expect("ack");
        }
        if count == n {
            break;
        }
    }
    let elapsed = start.elapsed();
    let _ = connection.close(200, "bye".into()).await;
    n as f64 / elapsed.as_secs_f64()
}

struct WorkerRun {
    rate: f64,
    peak_rss_kib: u64,
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The worker binary draining the queue. Returns its rate and peak RSS.
async fn worker(endpoint: &BrokerEndpoint, config: &WorkerConfig, n: u64) -> WorkerRun {
    let dir = std::env::temp_dir().join(format!("logstream-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("worker.yaml");
    std::fs::write(&config_path, config.to_yaml()).unwrap();
    let listen = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_logstream-worker"))
        .arg("--config")
        .arg(&config_path)
        .arg("--listen")
        .arg(&listen)
        .env(
            AMQP_URI_ENV,
            endpoint.with_vhost(&config.vhost).amqp_uri_with_password(),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start logstream-worker");
    let client = reqwest::Client::new();
    let start = loop {
        let ready = client
            .get(format!("http://{listen}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let deadline = start + Duration::from_secs(600);
    loop {
        let ok = metric(
            &client,
            &listen,
            "logstream_messages_total",
            &[("outcome", "ok")],
        )
        .await;
        if ok.is_some_and(|ok| ok >= n as f64) {
            break;
        }
        assert!(Instant::now() < deadline, "the worker did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    let peak_rss_kib = vm_hwm_kib(child.id());
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid"));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let status = child.wait().expect("worker exit");
    assert!(status.success(), "the worker stops cleanly: {status}");
    let _ = std::fs::remove_dir_all(&dir);
    WorkerRun {
        rate: n as f64 / elapsed.as_secs_f64(),
        peak_rss_kib,
    }
}

/// Rates of each contender (per round) and the worker's peak RSS (KiB) on one queue type.
struct Results {
    bare: Vec<f64>,
    bare_multi: Vec<f64>,
    worker: Vec<f64>,
    peak_rss_kib: u64,
}

async fn bench_queue_type(settings: &Settings, queue_type: &str) -> Results {
    let endpoint = endpoint();
    let management = ManagementClient::new(endpoint.management().clone());
    let vhost = format!("logstream-bench-{queue_type}-{}", std::process::id());
    management.create_vhost(&vhost).await.expect("create vhost");
    management
        .grant_all(&vhost, endpoint.username())
        .await
        .expect("grant");

    let yaml = format!(
        "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {{name: bench, namespace: bench}}\nspec:\n  broker: {{secretRef: {{name: r}}}}\n  queueType: {queue_type}\n  outputs:\n    - name: out\n      sink: {{file: {{path: /dev/null}}}}\n      worker: {{prefetch: {}}}\n",
        settings.prefetch
    );
    let spec = parse_pipeline(&yaml).expect("bench pipeline").spec;
    let mut topology = plan("bench", "bench", &spec).expect("valid");
    topology.vhost.clone_from(&vhost);
    let admin = BrokerAdmin::connect(&endpoint, &vhost)
        .await
        .expect("admin");
    admin.apply(&topology).await.expect("topology");
    admin.close().await;
    let config = WorkerConfig::from_plan(&topology, "bench", "bench", &spec, "out").unwrap();
    let queue = config.queue.clone();

    let publisher = connect(&endpoint, &vhost).await;
    let channel = publisher.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();

    let mut results = Results {
        bare: Vec::new(),
        bare_multi: Vec::new(),
        worker: Vec::new(),
        peak_rss_kib: 0,
    };
    let contenders = ["bare", "worker", "bare-multi"];
    for round in 0..settings.rounds {
        for i in 0..contenders.len() {
            let contender = contenders[(i + round) % contenders.len()];
            fill(&channel, &queue, settings.messages, round).await;
            let n = settings.messages;
            match contender {
                "worker" => {
                    let run = worker(&endpoint, &config, n).await;
                    eprintln!(
                        "{queue_type} round {}: worker     {:>9.0} msg/s, peak RSS {:.1} MiB",
                        round + 1,
                        run.rate,
                        run.peak_rss_kib as f64 / 1024.0
                    );
                    results.worker.push(run.rate);
                    results.peak_rss_kib = results.peak_rss_kib.max(run.peak_rss_kib);
                }
                "bare" => {
                    let rate = bare(&endpoint, &vhost, &queue, n, settings.prefetch, 1).await;
                    eprintln!(
                        "{queue_type} round {}: bare       {rate:>9.0} msg/s",
                        round + 1
                    );
                    results.bare.push(rate);
                }
                _ => {
                    let rate = bare(&endpoint, &vhost, &queue, n, settings.prefetch, 100).await;
                    eprintln!(
                        "{queue_type} round {}: bare-multi {rate:>9.0} msg/s",
                        round + 1
                    );
                    results.bare_multi.push(rate);
                }
            }
        }
    }
    let _ = publisher.close(200, "bye".into()).await;
    let _ = management.delete_vhost(&vhost).await;
    results
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let settings = Settings {
        messages: env_or("LOGSTREAM_BENCH_MESSAGES", 50_000),
        rounds: env_or("LOGSTREAM_BENCH_ROUNDS", 3),
        queue_types: env_or("LOGSTREAM_BENCH_QUEUE_TYPES", "classic,quorum".to_owned())
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        prefetch: env_or("LOGSTREAM_BENCH_PREFETCH", 200),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    eprintln!(
        "{} messages of {BODY_BYTES} bytes per run, {} rounds, prefetch {}",
        settings.messages, settings.rounds, settings.prefetch
    );
    let mut rows = Vec::new();
    for queue_type in &settings.queue_types {
        let r = runtime.block_on(bench_queue_type(&settings, queue_type));
        rows.push(format!(
            "| {queue_type} | {:.0} | {:.0} | {:.2} | {:.1} MiB | {:.0} |",
            median(&r.worker),
            median(&r.bare),
            median(&r.worker) / median(&r.bare),
            r.peak_rss_kib as f64 / 1024.0,
            median(&r.bare_multi),
        ));
    }
    println!(
        "\n| queue type | worker (msg/s, median) | bare lapin, ACK per message (msg/s, median) | ratio | worker peak RSS | bare lapin, multiple ACK per 100 (msg/s, median, reference) |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for row in rows {
        println!("{row}");
    }
}
