//! Node loss on the three-node RabbitMQ 4 cluster of `make test-cluster`
//! (`scripts/test-cluster.sh`): a quorum pipeline, `logstream produce` publishing with
//! confirms, two `logstream-worker` processes consuming and the autoscaler polling, all given
//! every node of the cluster (`amqp://…@node1,node2,node3/vhost`). The leader of the output's
//! main queue is killed (`kill -9`) mid-stream, or every node is restarted in turn: every
//! confirmed log must be written, and producer, workers and autoscaler must carry on through a
//! surviving node. Each test prints published / confirmed / written counts.

mod support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use logstream_api::{
    LogPipeline, TopologyPlan,
    manifest::parse_pipeline,
    pipeline::SinkSpec,
    plan,
    worker_config::{AMQP_URI_ENV, WorkerConfig},
};
use logstream_autoscaler::{
    OutputScaling, PipelineAutoscaler, ScaleError, ScaleRecord, ScaleTarget, shared::SharedAdmins,
    supervise,
};
use logstream_broker::{BrokerAdmin, BrokerConnection, ManagementClient, Purpose};
use logstream_testkit::{cluster::Cluster, finish_in_drop, unique};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use support::{command, worker_binary};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::Child,
    sync::{broadcast, watch},
};

/// The longest a producer, a worker or the autoscaler may take to carry on after a node died.
const CARRY_ON_WITHIN: Duration = Duration::from_secs(10);
/// Logs per second the producer publishes.
const RATE: &str = "300";
const PIPELINE: &str = "nodeloss";
const NAMESPACE: &str = "test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a RabbitMQ cluster: make test-cluster"]
async fn cluster_killing_the_queue_leader_loses_no_confirmed_log() {
    let cluster = Cluster::from_env();
    let stream = Stream::start(&cluster, "leader-loss").await;
    stream.wait_written(2_000, Duration::from_secs(60)).await;

    let queue = stream.plan.names.main_queue("out");
    let leader = cluster.leader(&stream.vhost.name, &queue, Duration::from_secs(30));
    let before = stream.written_per_worker();
    let killed_at = Instant::now();
    cluster.kill(leader);
    eprintln!("killed node{leader}, the leader of {queue}");

    // Producer, both workers and the autoscaler carry on through a surviving node.
    let producer = stream
        .producer_resumed(killed_at, Duration::from_secs(30))
        .await;
    let workers = stream
        .workers_resumed(&before, killed_at, Duration::from_secs(30))
        .await;
    let autoscaler = stream
        .autoscaler_resumed(killed_at, Duration::from_secs(30))
        .await;
    eprintln!(
        "after the kill: producer reconnected in {producer:?}, workers wrote again in {workers:?}, the autoscaler decided on a reading again in {autoscaler:?}"
    );

    // The stream goes on for a while on two nodes, then the node comes back.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let decisions = stream.autoscaler_decisions_since(killed_at + autoscaler);
    cluster.restart(leader);
    let counts = stream.finish().await;
    counts.report(&format!("node{leader} (queue leader) killed"));
    counts.assert_nothing_lost();
    assert!(counts.reconnects >= 1, "the producer lost its connection");
    assert!(producer <= CARRY_ON_WITHIN, "producer: {producer:?}");
    for (i, resumed) in workers.iter().enumerate() {
        assert!(*resumed <= CARRY_ON_WITHIN, "worker {}: {resumed:?}", i + 1);
    }
    assert!(autoscaler <= CARRY_ON_WITHIN, "autoscaler: {autoscaler:?}");
    assert!(
        decisions >= 5,
        "the autoscaler kept deciding: {decisions} decisions in the 10 s after it resumed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a RabbitMQ cluster: make test-cluster"]
async fn cluster_rolling_restart_of_every_node_under_load_loses_nothing() {
    let cluster = Cluster::from_env();
    let stream = Stream::start(&cluster, "rolling").await;
    stream.wait_written(1_000, Duration::from_secs(60)).await;

    for node in [1, 2, 3] {
        // As an operator would: only stop a node whose quorum queues keep a majority.
        cluster.wait_until_not_quorum_critical(node, Duration::from_secs(60));
        let started = Instant::now();
        cluster.stop(node);
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.restart(node);
        eprintln!(
            "node{node} restarted in {:.1}s; {} logs written so far",
            started.elapsed().as_secs_f64(),
            stream.written_per_worker().iter().sum::<usize>()
        );
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let counts = stream.finish().await;
    counts.report("rolling restart of node1, node2, node3");
    counts.assert_nothing_lost();
}

/// The vhost of one test on the cluster; deleted on drop, pass or fail.
struct ClusterVhost {
    name: String,
    management: ManagementClient,
}

impl ClusterVhost {
    async fn new(cluster: &Cluster, label: &str) -> Self {
        let name = unique(&format!("cluster-{label}"));
        let management = ManagementClient::new(cluster.endpoint("/").management().clone());
        management.create_vhost(&name).await.unwrap();
        management.grant_all(&name, "guest").await.unwrap();
        Self { name, management }
    }
}

impl Drop for ClusterVhost {
    fn drop(&mut self) {
        let (management, name) = (self.management.clone(), self.name.clone());
        finish_in_drop(async move {
            let _ = management.delete_vhost(&name).await;
        });
    }
}

/// A scale target that stays at two replicas: the workers are the test's own processes.
struct TwoWorkers;

impl ScaleTarget for TwoWorkers {
    fn describe(&self) -> String {
        "the test's two workers".into()
    }

    fn replicas(&self) -> BoxFuture<'_, Result<u32, ScaleError>> {
        Box::pin(async { Ok(2) })
    }

    fn scale(&self, _replicas: u32) -> BoxFuture<'_, Result<(), ScaleError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Lines a child process printed, as they came, with when they came.
type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

fn collect_lines(out: impl AsyncRead + Unpin + Send + 'static) -> Lines {
    let lines = Lines::default();
    let sink = lines.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(out).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().unwrap().push((Instant::now(), line));
        }
    });
    lines
}

/// A pipeline on the cluster with its producer, two workers and its autoscaler running.
struct Stream {
    vhost: ClusterVhost,
    plan: TopologyPlan,
    dir: PathBuf,
    producer: Option<Child>,
    producer_out: Lines,
    producer_err: Lines,
    workers: Vec<Child>,
    sinks: Vec<PathBuf>,
    records: Arc<Mutex<Vec<(Instant, bool)>>>,
    stop_autoscaler: watch::Sender<bool>,
    cluster_uri: String,
    cluster_management: String,
}

impl Stream {
    async fn start(cluster: &Cluster, label: &str) -> Self {
        let vhost = ClusterVhost::new(cluster, label).await;
        let dir = std::env::temp_dir().join(unique(&format!("logstream-{label}")));
        std::fs::create_dir_all(&dir).unwrap();
        let manifest = format!(
            "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {{name: {PIPELINE}, namespace: {NAMESPACE}}}\nspec:\n  broker: {{secretRef: {{name: rabbitmq}}, vhost: {}}}\n  queueType: quorum\n  outputs:\n    - name: out\n      retry: {{maxAttempts: 10, backoff: [1s]}}\n      sink: {{file: {{path: {}}}}}\n      worker: {{prefetch: 100}}\n      scaling: {{minReplicas: 2, maxReplicas: 2, pollInterval: 1s}}\n",
            vhost.name,
            dir.join("unused.jsonl").display()
        );
        let manifest_path = dir.join("pipeline.yaml");
        std::fs::write(&manifest_path, &manifest).unwrap();
        let pipeline: LogPipeline = parse_pipeline(&manifest).unwrap();
        let plan = plan(NAMESPACE, PIPELINE, &pipeline.spec).unwrap();
        let endpoint = cluster.endpoint(&vhost.name);
        let admin = BrokerAdmin::connect(&endpoint, &vhost.name).await.unwrap();
        admin.apply(&plan).await.unwrap();
        admin.close().await;

        // Two workers, each writing to a file of its own.
        let cluster_uri = cluster.amqp_uri(&vhost.name);
        let mut workers = Vec::new();
        let mut sinks = Vec::new();
        for i in 1..=2 {
            let mut config =
                WorkerConfig::for_output(NAMESPACE, PIPELINE, &pipeline.spec, "out").unwrap();
            let sink = dir.join(format!("worker-{i}.jsonl"));
            config.sink = serde_json::from_value::<SinkSpec>(
                serde_json::json!({"file": {"path": sink.display().to_string()}}),
            )
            .unwrap();
            let config_path = dir.join(format!("worker-{i}.yaml"));
            std::fs::write(&config_path, config.to_yaml()).unwrap();
            let log = std::fs::File::create(dir.join(format!("worker-{i}.log"))).unwrap();
            let worker = tokio::process::Command::new(worker_binary())
                .arg("--config")
                .arg(&config_path)
                .arg("--listen")
                .arg("127.0.0.1:0")
                .env(AMQP_URI_ENV, &cluster_uri)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .expect("start logstream-worker");
            workers.push(worker);
            sinks.push(sink);
        }
        let queue = plan.names.main_queue("out");
        let watcher = BrokerConnection::open(&endpoint, "logstream-test", Purpose::Admin)
            .await
            .unwrap();
        support::eventually(Duration::from_secs(60), "two consumers", || async {
            let depth = watcher.queue_depth(&queue).await.ok().flatten()?;
            (depth.consumers == 2).then_some(())
        })
        .await;
        watcher.close().await;

        // The autoscaler, as the operator and `logstream dev` run it.
        let scaling = OutputScaling::for_output(
            &plan,
            "out",
            pipeline.spec.outputs[0].scaling_settings(),
            Box::new(TwoWorkers),
        )
        .unwrap();
        let autoscaler = PipelineAutoscaler::new(
            format!("{NAMESPACE}/{PIPELINE}"),
            vhost.name.clone(),
            vec![scaling],
        );
        let (records_tx, mut records_rx) = broadcast::channel::<ScaleRecord>(1024);
        let (stop_autoscaler, stopped) = watch::channel(false);
        tokio::spawn(supervise(
            autoscaler,
            endpoint.clone(),
            Arc::new(SharedAdmins::default()),
            stopped,
            records_tx,
        ));
        let records = Arc::new(Mutex::new(Vec::new()));
        let seen = records.clone();
        tokio::spawn(async move {
            while let Ok(record) = records_rx.recv().await {
                let decided_on_a_reading =
                    record.reading.is_some() && !record.decision.metrics_missing;
                seen.lock()
                    .unwrap()
                    .push((Instant::now(), decided_on_a_reading));
            }
        });

        // The producer: every node, confirms, reconnecting for up to a minute.
        let cluster_management = cluster.management_uri();
        let mut producer = command(&[
            "--amqp",
            &cluster_uri,
            "--management",
            &cluster_management,
            "produce",
            "-f",
            manifest_path.to_str().unwrap(),
            "--rate",
            RATE,
            "--duration",
            "30m",
            "--reconnect-timeout",
            "60s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start logstream produce");
        let producer_out = collect_lines(producer.stdout.take().unwrap());
        let producer_err = collect_lines(producer.stderr.take().unwrap());

        Self {
            vhost,
            plan,
            dir,
            producer: Some(producer),
            producer_out,
            producer_err,
            workers,
            sinks,
            records,
            stop_autoscaler,
            cluster_uri,
            cluster_management,
        }
    }

    /// Logs each worker wrote so far (lines of its file).
    fn written_per_worker(&self) -> Vec<usize> {
        self.sinks
            .iter()
            .map(|sink| {
                std::fs::read_to_string(sink)
                    .map(|text| text.lines().count())
                    .unwrap_or(0)
            })
            .collect()
    }

    /// Every written log's number (`load test log <k>`), with how often it was written.
    fn written(&self) -> BTreeMap<u64, usize> {
        let mut written = BTreeMap::new();
        for sink in &self.sinks {
            for line in std::fs::read_to_string(sink).unwrap_or_default().lines() {
                let record: serde_json::Value = serde_json::from_str(line).unwrap();
                let k = record["message"]
                    .as_str()
                    .and_then(|m| m.strip_prefix("load test log "))
                    .and_then(|k| k.parse().ok())
                    .unwrap_or_else(|| panic!("not a log of the producer: {line}"));
                *written.entry(k).or_insert(0) += 1;
            }
        }
        written
    }

    async fn wait_written(&self, n: usize, timeout: Duration) {
        support::eventually(timeout, &format!("{n} logs written"), || async {
            (self.written_per_worker().iter().sum::<usize>() >= n).then_some(())
        })
        .await;
    }

    /// How long after `since` the producer said it reconnected.
    async fn producer_resumed(&self, since: Instant, timeout: Duration) -> Duration {
        support::eventually(timeout, "the producer to reconnect", || async {
            self.producer_err
                .lock()
                .unwrap()
                .iter()
                .find(|(at, line)| *at >= since && line.starts_with("reconnected to "))
                .map(|(at, line)| {
                    eprintln!("producer: {line}");
                    *at - since
                })
        })
        .await
    }

    /// How long after `since` each worker wrote more than `before`.
    async fn workers_resumed(
        &self,
        before: &[usize],
        since: Instant,
        timeout: Duration,
    ) -> Vec<Duration> {
        let mut resumed = vec![None; before.len()];
        support::eventually(timeout, "both workers to write again", || {
            let now = self.written_per_worker();
            for (i, (now, before)) in now.iter().zip(before).enumerate() {
                if resumed[i].is_none() && now > before {
                    resumed[i] = Some(since.elapsed());
                }
            }
            let done = resumed.iter().all(Option::is_some);
            async move { done.then_some(()) }
        })
        .await;
        resumed.into_iter().map(Option::unwrap_or_default).collect()
    }

    /// How long after `since` the autoscaler decided on a reading again.
    async fn autoscaler_resumed(&self, since: Instant, timeout: Duration) -> Duration {
        support::eventually(timeout, "the autoscaler to decide on a reading", || async {
            self.records
                .lock()
                .unwrap()
                .iter()
                .find(|(at, on_reading)| *at > since && *on_reading)
                .map(|(at, _)| *at - since)
        })
        .await
    }

    /// Decisions on a reading since `since`.
    fn autoscaler_decisions_since(&self, since: Instant) -> usize {
        self.records
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, on_reading)| *at >= since && *on_reading)
            .count()
    }

    /// Stops the producer (Ctrl-C: it settles what it sent), waits until the workers wrote
    /// every confirmed log and the queues are empty, stops the workers and the autoscaler.
    async fn finish(mut self) -> Counts {
        let mut producer = self.producer.take().unwrap();
        let pid = Pid::from_raw(i32::try_from(producer.id().unwrap()).unwrap());
        kill(pid, Signal::SIGINT).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(90), producer.wait())
            .await
            .expect("the producer finished within 90 s")
            .unwrap();
        // Its output pipes close with it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let summary = self
            .producer_out
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .find(|l| l.starts_with("sent "))
            .unwrap_or_else(|| panic!("no summary; stderr: {:?}", self.producer_err));
        assert!(status.success(), "{status}: {summary}");
        let figure = |name: &str| -> u64 {
            summary
                .split([',', ';'])
                .find_map(|part| {
                    let part = part.trim();
                    part.strip_prefix(&format!("{name} "))
                        .or_else(|| part.strip_suffix(&format!(" {name}")))
                        .and_then(|n| n.split_whitespace().next()?.parse().ok())
                })
                .unwrap_or(0)
        };
        let sent = figure("sent");
        let confirmed = figure("confirmed");
        let unconfirmed = figure("unconfirmed");
        let reconnects = figure("reconnect(s)");
        let republished = summary
            .split("reconnect(s), ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);

        // Everything confirmed reaches a sink or the dead-letter queue.
        let endpoint = logstream_broker::BrokerEndpoint::from_uri(
            &self.cluster_uri,
            Some(&self.cluster_management),
        )
        .unwrap();
        let watcher = BrokerConnection::open(&endpoint, "logstream-test", Purpose::Admin)
            .await
            .unwrap();
        let queues: Vec<String> = self.plan.queues.iter().map(|q| q.name.clone()).collect();
        let dlq = self.plan.names.dead_letter_queue("out");
        let main = self.plan.names.main_queue("out");
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut dead_lettered = 0;
        loop {
            let written = self.written().len() as u64;
            let mut waiting = 0;
            for q in &queues {
                let depth = watcher
                    .queue_depth(q)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                if *q == dlq {
                    dead_lettered = depth.ready;
                } else {
                    waiting += depth.ready;
                }
            }
            let unacked = ManagementClient::new(endpoint.management().clone())
                .queues(&self.vhost.name)
                .await
                .ok()
                .and_then(|qs| qs.into_iter().find(|q| q.name == main))
                .and_then(|q| q.messages_unacknowledged)
                .unwrap_or(0);
            if written + dead_lettered >= confirmed && waiting == 0 && unacked == 0 {
                break;
            }
            if Instant::now() > deadline {
                eprintln!(
                    "gave up waiting: {written} written, {dead_lettered} dead-lettered, {waiting} waiting, {unacked} unacked of {confirmed} confirmed"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        watcher.close().await;

        let _ = self.stop_autoscaler.send(true);
        for worker in &mut self.workers {
            let pid = Pid::from_raw(i32::try_from(worker.id().unwrap()).unwrap());
            let _ = kill(pid, Signal::SIGTERM);
            let _ = tokio::time::timeout(Duration::from_secs(40), worker.wait()).await;
        }
        let written = self.written();
        let missing: Vec<u64> = (0..sent).filter(|k| !written.contains_key(k)).collect();
        let counts = Counts {
            sent,
            confirmed,
            unconfirmed,
            reconnects,
            republished,
            written: written.len() as u64,
            written_twice: written.values().filter(|n| **n > 1).count() as u64,
            dead_lettered,
            missing,
            summary,
            worker_logs: self.dir.clone(),
        };
        if counts.missing.is_empty() && counts.dead_lettered == 0 {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        counts
    }
}

/// What a run published, confirmed and wrote.
#[derive(Debug)]
struct Counts {
    sent: u64,
    confirmed: u64,
    unconfirmed: u64,
    reconnects: u64,
    republished: u64,
    written: u64,
    written_twice: u64,
    dead_lettered: u64,
    /// Numbers the producer sent that no worker wrote.
    missing: Vec<u64>,
    summary: String,
    worker_logs: PathBuf,
}

impl Counts {
    /// Prints the counts, and appends them to `target/test-artifacts/cluster-counts.txt`,
    /// which `make test-cluster` shows after the run.
    fn report(&self, what: &str) {
        let line = format!(
            "{what}: published {}, confirmed {}, unconfirmed {}, written {} ({} written twice), dead-lettered {}, lost {}; producer: {} reconnect(s), {} published again",
            self.sent,
            self.confirmed,
            self.unconfirmed,
            self.written,
            self.written_twice,
            self.dead_lettered,
            self.missing.len(),
            self.reconnects,
            self.republished
        );
        println!("{line}");
        println!("producer: {}", self.summary);
        let artifacts =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
        std::fs::create_dir_all(&artifacts).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(artifacts.join("cluster-counts.txt"))
            .unwrap();
        std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes()).unwrap();
    }

    fn assert_nothing_lost(&self) {
        let logs = Path::new(&self.worker_logs).display();
        assert!(self.sent > 0, "{self:?}");
        assert_eq!(
            self.confirmed, self.sent,
            "every log confirmed (the producer published again what a lost connection left unconfirmed): {self:?}"
        );
        assert!(
            self.missing.is_empty(),
            "{} confirmed logs were not written (first: {:?}); worker logs in {logs}",
            self.missing.len(),
            &self.missing[..self.missing.len().min(10)]
        );
        assert_eq!(
            self.dead_lettered, 0,
            "nothing dead-lettered; worker logs in {logs}"
        );
    }
}
