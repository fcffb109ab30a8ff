//! The end-to-end scenario on kind:
//!
//! 1. a cluster (created, or `KIND_CLUSTER` reused), the three images built and loaded;
//! 2. `helm install` of the chart with the bundled RabbitMQ; the examples and the burst
//!    pipeline applied, and every pipeline Ready;
//! 3. poison logs, then a burst, published by `logstream produce` Jobs in the cluster;
//! 4. asserted: the workers scale up; one worker pod deleted mid-run loses nothing (every
//!    good log reaches the sink, counted by message id); every poison log is in the DLQ with
//!    its failure headers (`logstream dlq list` in a Job); the workers scale back down;
//!    `kubectl get lp` shows the printer columns.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;

use crate::{
    cmd::{self, CmdError},
    config::Config,
    manifests::{self, OUTPUT, PIPELINE, SINK},
    wait::{self, POLL, Timeout},
};

/// Why the scenario failed.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// A command failed.
    #[error(transparent)]
    Cmd(#[from] CmdError),
    /// A condition did not hold in time.
    #[error(transparent)]
    Timeout(#[from] Timeout),
    /// A tool answered something unreadable.
    #[error("failed to read the output of {what}: {reason}")]
    Unreadable {
        /// Which command.
        what: String,
        /// Why.
        reason: String,
    },
    /// An assertion failed.
    #[error("check failed: {0}")]
    Check(String),
}

type Result<T> = std::result::Result<T, ScenarioError>;

/// The tools, bound to one cluster and namespace.
struct Cluster<'a> {
    config: &'a Config,
    root: PathBuf,
}

impl Cluster<'_> {
    fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        Ok(cmd::run_in(&self.root, program, args, None, false)?)
    }

    fn kubectl_with(&self, args: &[&str], stdin: Option<&str>, quiet: bool) -> Result<String> {
        let context = self.config.context();
        let mut all = vec![
            "--context",
            context.as_str(),
            "-n",
            self.config.namespace.as_str(),
        ];
        all.extend_from_slice(args);
        Ok(cmd::run_in(&self.root, "kubectl", &all, stdin, quiet)?)
    }

    fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_with(args, None, false)
    }

    /// `kubectl get … -o json`, quietly (it is polled).
    fn get_json(&self, args: &[&str]) -> Result<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let text = self.kubectl_with(&all, None, true)?;
        serde_json::from_str(&text).map_err(|e| ScenarioError::Unreadable {
            what: format!("kubectl get {}", args.join(" ")),
            reason: e.to_string(),
        })
    }

    fn apply(&self, yaml: &str) -> Result<()> {
        self.kubectl_with(&["apply", "-f", "-"], Some(yaml), false)?;
        Ok(())
    }

    fn deadline(&self, secs: u64) -> Duration {
        self.config.deadline(Duration::from_secs(secs))
    }
}

/// Runs the scenario; returns a one-line summary of what it saw.
pub fn run(config: &Config) -> Result<String> {
    let root = workspace_root();
    let cluster = Cluster {
        config,
        root: root.clone(),
    };
    let created = ensure_cluster(&cluster)?;
    let outcome = scenario(&cluster);
    if created && !config.keep_cluster {
        if outcome.is_err() {
            dump_state(&cluster);
        }
        let _ = cluster.run("kind", &["delete", "cluster", "--name", &config.cluster]);
    } else if outcome.is_err() {
        dump_state(&cluster);
    }
    outcome
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Creates the cluster unless it exists; true when this run created it.
fn ensure_cluster(cluster: &Cluster<'_>) -> Result<bool> {
    let name = &cluster.config.cluster;
    let existing = cluster.run("kind", &["get", "clusters"])?;
    if existing.lines().any(|l| l.trim() == name) {
        return Ok(false);
    }
    if cluster.config.reuse_cluster {
        return Err(ScenarioError::Check(format!(
            "KIND_CLUSTER={name} names no kind cluster (kind get clusters: {})",
            existing.split_whitespace().collect::<Vec<_>>().join(", ")
        )));
    }
    cluster.run(
        "kind",
        &["create", "cluster", "--name", name, "--wait", "180s"],
    )?;
    Ok(true)
}

fn scenario(cluster: &Cluster<'_>) -> Result<String> {
    let config = cluster.config;
    let ns = config.namespace.as_str();
    build_and_load(cluster)?;
    install(cluster)?;

    cluster.apply(&manifests::sink(ns))?;
    for example in ["quickstart", "fanout", "priority-dlq"] {
        cluster.kubectl(&["apply", "-f", &format!("examples/{example}.yaml")])?;
    }
    cluster.apply(&manifests::pipeline(ns))?;
    cluster.kubectl(&[
        "rollout",
        "status",
        &format!("deployment/{SINK}"),
        &format!("--timeout={}s", cluster.deadline(180).as_secs()),
    ])?;
    for pipeline in [PIPELINE, "quickstart"] {
        wait_ready(cluster, pipeline)?;
    }

    // Poison first, so the dead letters exist while the burst flows.
    run_job(
        cluster,
        "e2e-poison",
        &manifests::poison_args(ns, config.poison),
        cluster.deadline(120),
    )?;
    let burst = "e2e-burst";
    start_job(cluster, burst, &manifests::burst_args(ns, config.messages))?;

    let peak = scale_up_and_kill_one(cluster)?;
    wait_job(cluster, burst, cluster.deadline(600))?;

    let delivered = wait::until(
        &format!("all {} good logs in the sink", config.messages),
        cluster.deadline(600),
        POLL,
        || -> Result<std::result::Result<u64, String>> {
            let stats = sink_stats(cluster)?;
            let unique = stats["unique"].as_u64().unwrap_or(0);
            Ok(if unique >= config.messages {
                Ok(unique)
            } else {
                Err(stats.to_string())
            })
        },
    )?;
    if delivered != config.messages {
        return Err(ScenarioError::Check(format!(
            "the sink holds {delivered} distinct logs, {} were published",
            config.messages
        )));
    }
    let lines = sink_stats(cluster)?["lines"].as_u64().unwrap_or(0);

    let dead = wait::until(
        &format!("{} dead letters and an empty main queue", config.poison),
        cluster.deadline(180),
        POLL,
        || -> Result<std::result::Result<u64, String>> {
            let lp = cluster.get_json(&["logpipeline", PIPELINE])?;
            let status = &lp["status"];
            let depth = status["depth"].as_u64();
            let dead = status["deadLettered"].as_u64();
            Ok(match (depth, dead) {
                (Some(0), Some(d)) if d == config.poison => Ok(d),
                _ => Err(status.to_string()),
            })
        },
    )?;
    check_dead_letters(cluster)?;

    wait::until(
        &format!(
            "the workers to scale back down to {}",
            manifests::MIN_REPLICAS
        ),
        cluster.deadline(300),
        POLL,
        || -> Result<std::result::Result<(), String>> {
            let replicas = worker_replicas(cluster)?;
            Ok(if replicas <= manifests::MIN_REPLICAS {
                Ok(())
            } else {
                Err(format!("{replicas} replicas"))
            })
        },
    )?;

    check_printer_columns(cluster)?;
    Ok(format!(
        "workers scaled 1 -> {peak} -> {}; {delivered} of {} logs written ({lines} writes, duplicates allowed) with a worker pod deleted mid-run; {dead} poison logs dead-lettered with their headers",
        manifests::MIN_REPLICAS,
        config.messages
    ))
}

fn build_and_load(cluster: &Cluster<'_>) -> Result<()> {
    let config = cluster.config;
    for name in ["operator", "worker", "cli"] {
        let image = config.image(name);
        if !config.skip_build {
            cluster.run(
                "docker",
                &[
                    "build",
                    "-f",
                    &format!("images/{name}.Dockerfile"),
                    "-t",
                    &image,
                    ".",
                ],
            )?;
        }
        cluster.run(
            "kind",
            &["load", "docker-image", &image, "--name", &config.cluster],
        )?;
    }
    Ok(())
}

fn install(cluster: &Cluster<'_>) -> Result<()> {
    let config = cluster.config;
    let context = config.context();
    let timeout = format!("{}s", cluster.deadline(600).as_secs());
    cluster.run(
        "helm",
        &[
            "upgrade",
            "--install",
            "logstream",
            "charts/logstream",
            "--kube-context",
            &context,
            "--namespace",
            &config.namespace,
            "--create-namespace",
            "--wait",
            "--timeout",
            &timeout,
            "--set",
            "rabbitmq.enabled=true",
            "--set",
            "image.repository=logstream-operator",
            "--set",
            &format!("image.tag={}", config.image_tag),
            "--set",
            "image.pullPolicy=Never",
            "--set",
            "workerImage.repository=logstream-worker",
            "--set",
            &format!("workerImage.tag={}", config.image_tag),
        ],
    )?;
    Ok(())
}

fn wait_ready(cluster: &Cluster<'_>, pipeline: &str) -> Result<()> {
    wait::until(
        &format!("LogPipeline {pipeline} to be Ready"),
        cluster.deadline(240),
        POLL,
        || -> Result<std::result::Result<(), String>> {
            let lp = cluster.get_json(&["logpipeline", pipeline])?;
            let ready = lp["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            Ok(if ready {
                Ok(())
            } else {
                Err(lp["status"].to_string())
            })
        },
    )?;
    Ok(())
}

fn start_job(cluster: &Cluster<'_>, name: &str, args: &[String]) -> Result<()> {
    let _ = cluster.kubectl(&["delete", "job", name, "--ignore-not-found"]);
    let image = cluster.config.image("cli");
    cluster.apply(&manifests::cli_job(
        &cluster.config.namespace,
        name,
        &image,
        args,
    ))
}

fn wait_job(cluster: &Cluster<'_>, name: &str, timeout: Duration) -> Result<String> {
    let finished = wait::until(
        &format!("Job {name} to finish"),
        timeout,
        POLL,
        || -> Result<std::result::Result<bool, String>> {
            let job = cluster.get_json(&["job", name])?;
            let status = &job["status"];
            Ok(if status["succeeded"].as_u64().unwrap_or(0) > 0 {
                Ok(true)
            } else if status["failed"].as_u64().unwrap_or(0) > 0 {
                Ok(false)
            } else {
                Err(status.to_string())
            })
        },
    )?;
    let logs = cluster.kubectl_with(&["logs", &format!("job/{name}")], None, true)?;
    if !finished {
        return Err(ScenarioError::Check(format!("Job {name} failed:\n{logs}")));
    }
    Ok(logs)
}

fn run_job(
    cluster: &Cluster<'_>,
    name: &str,
    args: &[String],
    timeout: Duration,
) -> Result<String> {
    start_job(cluster, name, args)?;
    wait_job(cluster, name, timeout)
}

/// Desired replicas of the burst output's Deployment.
fn worker_replicas(cluster: &Cluster<'_>) -> Result<u32> {
    let d = cluster.get_json(&["deployment", &format!("{PIPELINE}-{OUTPUT}")])?;
    Ok(d["spec"]["replicas"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0))
}

/// Waits for the burst to scale the workers past one replica, deletes one running worker
/// pod (forcefully: its unacknowledged deliveries must come back, not vanish), and returns
/// the most replicas seen while the burst runs.
fn scale_up_and_kill_one(cluster: &Cluster<'_>) -> Result<u32> {
    let peak = wait::until(
        "the burst to scale the workers past one replica",
        cluster.deadline(300),
        Duration::from_secs(1),
        || -> Result<std::result::Result<u32, String>> {
            let replicas = worker_replicas(cluster)?;
            Ok(if replicas > 1 {
                Ok(replicas)
            } else {
                Err(format!("{replicas} replica(s)"))
            })
        },
    )?;
    let selector = format!("logstream.io/pipeline={PIPELINE},logstream.io/output={OUTPUT}");
    let pods = cluster.get_json(&["pods", "-l", &selector])?;
    let victim = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["status"]["phase"] == "Running")
        .and_then(|p| p["metadata"]["name"].as_str())
        .ok_or_else(|| ScenarioError::Check("no running worker pod to delete".into()))?
        .to_owned();
    cluster.kubectl(&[
        "delete",
        "pod",
        &victim,
        "--grace-period=0",
        "--force",
        "--wait=false",
    ])?;
    // Keep watching while the burst runs, to report the peak.
    let mut peak = peak;
    let _ = wait::until(
        "the burst Job to finish (peak replicas)",
        cluster.deadline(600),
        Duration::from_secs(1),
        || -> Result<std::result::Result<(), String>> {
            peak = peak.max(worker_replicas(cluster)?);
            let job = cluster.get_json(&["job", "e2e-burst"])?;
            let done = job["status"]["succeeded"].as_u64().unwrap_or(0)
                + job["status"]["failed"].as_u64().unwrap_or(0);
            Ok(if done > 0 {
                Ok(())
            } else {
                Err(format!("peak {peak}"))
            })
        },
    );
    Ok(peak)
}

fn sink_stats(cluster: &Cluster<'_>) -> Result<Value> {
    let text = cluster.kubectl_with(
        &[
            "exec",
            &format!("deployment/{SINK}"),
            "--",
            "python3",
            "-c",
            "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8080/stats').read().decode())",
        ],
        None,
        true,
    )?;
    serde_json::from_str(text.trim()).map_err(|e| ScenarioError::Unreadable {
        what: "the sink's /stats".into(),
        reason: e.to_string(),
    })
}

/// `logstream dlq list --json` in a Job: every poison log, with its failure headers.
fn check_dead_letters(cluster: &Cluster<'_>) -> Result<()> {
    let config = cluster.config;
    let logs = run_job(
        cluster,
        "e2e-dlq-list",
        &manifests::dlq_list_args(&config.namespace, config.poison + 10),
        cluster.deadline(120),
    )?;
    let letters: Vec<Value> = logs
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| ScenarioError::Unreadable {
            what: "logstream dlq list --json".into(),
            reason: e.to_string(),
        })?;
    if letters.len() as u64 != config.poison {
        return Err(ScenarioError::Check(format!(
            "dlq list shows {} dead letters, {} poison logs were published",
            letters.len(),
            config.poison
        )));
    }
    let mut ids = BTreeSet::new();
    for letter in &letters {
        let error = letter["error"].as_str().unwrap_or_default();
        let routing_key = letter["routing_key"].as_str().unwrap_or_default();
        if !error.contains("over the limit")
            || letter["class"] != "permanent"
            || !routing_key.starts_with(manifests::POISON_SERVICE)
            || letter["attempts"].as_i64().unwrap_or(0) < 1
        {
            return Err(ScenarioError::Check(format!(
                "a dead letter lacks the poison's failure headers: {letter}"
            )));
        }
        ids.extend(letter["message_id"].as_str().map(str::to_owned));
    }
    if ids.len() != letters.len() {
        return Err(ScenarioError::Check(format!(
            "{} dead letters carry {} distinct message ids",
            letters.len(),
            ids.len()
        )));
    }
    Ok(())
}

fn check_printer_columns(cluster: &Cluster<'_>) -> Result<()> {
    let table = cluster.kubectl(&["get", "lp"])?;
    print!("{table}");
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    for column in ["NAME", "READY", "DEPTH", "AGE", "DLQ", "REPLICAS"] {
        if !header.contains(&column) {
            return Err(ScenarioError::Check(format!(
                "kubectl get lp lacks column {column}: {header:?}"
            )));
        }
    }
    if !table.lines().any(|l| l.starts_with(PIPELINE)) {
        return Err(ScenarioError::Check(format!(
            "kubectl get lp lists no {PIPELINE}"
        )));
    }
    Ok(())
}

/// Prints what a person would look at first after a failure.
fn dump_state(cluster: &Cluster<'_>) {
    for args in [
        vec!["get", "lp,deploy,pods,jobs", "-o", "wide"],
        vec!["logs", "deployment/logstream-operator", "--tail=80"],
        vec!["get", "events", "--sort-by=.lastTimestamp"],
    ] {
        match cluster.kubectl(&args) {
            Ok(out) => eprintln!("{out}"),
            Err(e) => eprintln!("{e}"),
        }
    }
}
