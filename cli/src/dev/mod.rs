//! `logstream dev -f pipeline.yaml`: LogStream on one machine. Applies each pipeline's
//! topology to the broker, runs the operator's autoscaler over local `logstream-worker`
//! processes, prints every scaling decision, and serves `/metrics` (and the dashboard) on
//! `--listen`. Ctrl-C (or SIGTERM) stops the autoscalers, then the workers, each settling its
//! in-flight messages.

pub mod secrets;
pub mod workers;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use logstream_api::{
    LogPipeline,
    manifest::{parse_pipelines, parse_secrets},
    plan,
    worker_config::WorkerConfig,
};
use logstream_autoscaler::{
    OutputScaling, PipelineAutoscaler, ScaleRecord,
    dashboard::{self, Dashboard},
    metrics::{OutputGauges, OutputLabels, OutputMetrics},
    serve::{self, Health, MetricsText},
    shared::SharedAdmins,
    shutdown, supervise,
};
use logstream_broker::{BrokerAdmin, BrokerEndpoint, OutputReading};
use prometheus_client::{encoding::text::encode, registry::Registry};
use tokio::{
    net::TcpListener,
    sync::{broadcast, watch},
};

use crate::{Context, args::DevArgs, error::CliError};
use secrets::SecretStore;
use workers::{LocalWorkers, WorkerCommand, worker_binary};

/// Records kept for slow readers before the oldest are dropped.
const RECORD_BACKLOG: usize = 1024;

/// What `/metrics` shows under `logstream dev`: each output's figures and the autoscaler's
/// decisions, as the operator exports them.
struct DevMetrics {
    registry: Registry,
    outputs: OutputMetrics,
}

impl DevMetrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let outputs = OutputMetrics::register(&mut registry);
        Self { registry, outputs }
    }
}

impl MetricsText for DevMetrics {
    fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// One pipeline of the manifest, planned.
struct Planned {
    key: String,
    pipeline: LogPipeline,
    plan: logstream_api::TopologyPlan,
    namespace: String,
    /// The broker, on the plan's vhost: from the pipeline's broker Secret when the manifest
    /// holds it, else from the command line.
    endpoint: BrokerEndpoint,
}

/// Runs `logstream dev` until Ctrl-C or SIGTERM.
pub async fn run(ctx: &Context, args: &DevArgs) -> Result<(), CliError> {
    let path = ctx.broker.file.clone().ok_or_else(|| {
        CliError::Usage("logstream dev needs a manifest: -f pipeline.yaml".into())
    })?;
    let (planned, store) = read(ctx, &path)?;
    let binary = worker_binary(args.worker_binary.as_deref());
    let work_dir = args.work_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("logstream-dev-{}", std::process::id()))
    });
    std::fs::create_dir_all(&work_dir).map_err(|e| {
        CliError::Usage(format!(
            "failed to create the work directory {}: {e}",
            work_dir.display()
        ))
    })?;

    // The topology first: a broker that refuses stops here, with one line.
    for p in &planned {
        let admin = BrokerAdmin::connect(&p.endpoint, &p.plan.vhost).await?;
        let report = admin.apply(&p.plan).await;
        admin.close().await;
        let report = report?;
        say!(
            "{}: exchange {}, {} queues on vhost {} ({})",
            p.key,
            p.plan.exchange().name,
            p.plan.queues.len(),
            p.plan.vhost,
            if report.changes.is_empty() {
                "already in place".to_owned()
            } else {
                format!("{} changes", report.changes.len())
            }
        );
    }

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| CliError::Usage(format!("failed to listen on {}: {e}", args.listen)))?;
    let address = listener
        .local_addr()
        .map_err(|e| CliError::Usage(format!("failed to read the listening address: {e}")))?;
    let metrics = Arc::new(DevMetrics::new());
    let health = Arc::new(Health::default());
    let (records, _) = broadcast::channel::<ScaleRecord>(RECORD_BACKLOG);
    let dashboard = Arc::new(Dashboard::default());
    tokio::spawn(dashboard.clone().feed(records.subscribe(), None));
    let router = serve::router_with(
        metrics.clone(),
        health.clone(),
        dashboard::router(dashboard),
    );
    tokio::spawn(async move { axum_serve(listener, router).await });
    health.set_ready(true);
    say!("metrics on http://{address}/metrics");
    say!("dashboard on http://{address}/");
    say!(
        "worker binary {}; worker output in {}",
        binary.display(),
        work_dir.display()
    );

    // One autoscaler per pipeline, over local workers.
    let (stop, stopped) = watch::channel(false);
    let mut all_workers: Vec<(String, Arc<LocalWorkers>)> = Vec::new();
    let mut tasks = Vec::new();
    let admins = Arc::new(SharedAdmins::default());
    for p in &planned {
        let endpoint = p.endpoint.clone();
        let mut outputs = Vec::new();
        for output in &p.pipeline.spec.outputs {
            let mut config = WorkerConfig::from_plan(
                &p.plan,
                &p.namespace,
                &p.pipeline.metadata.name.clone().unwrap_or_default(),
                &p.pipeline.spec,
                &output.name,
            )
            .ok_or_else(|| CliError::Usage(format!("output {} is not in the plan", output.name)))?;
            let name = format!(
                "{}-{}",
                p.pipeline.metadata.name.clone().unwrap_or_default(),
                output.name
            );
            let secrets_dir = work_dir.join("secrets").join(&name);
            store.materialize(
                &mut config,
                &secrets_dir,
                &format!("output {}/{}", p.key, output.name),
            )?;
            if endpoint.is_tls() {
                secrets::materialize_tls_flags(&mut config, &secrets_dir, &ctx.broker)?;
            }
            let config_path = work_dir.join(format!("{name}.yaml"));
            write_config(&config_path, &config.to_yaml())?;
            let workers = Arc::new(LocalWorkers::new(WorkerCommand {
                binary: binary.clone(),
                config: config_path,
                amqp_uri: endpoint.amqp_uri_with_password(),
                log_dir: work_dir.clone(),
                name,
            }));
            all_workers.push((format!("{}/{}", p.key, output.name), workers.clone()));
            outputs.push(
                OutputScaling::for_output(
                    &p.plan,
                    &output.name,
                    output.scaling_settings(),
                    Box::new(workers),
                )
                .ok_or_else(|| {
                    CliError::Usage(format!("output {} is not in the plan", output.name))
                })?,
            );
        }
        let autoscaler = PipelineAutoscaler::new(p.key.clone(), p.plan.vhost.clone(), outputs);
        say!(
            "{}: autoscaling {} output(s) every {:?}",
            p.key,
            autoscaler.outputs().len(),
            autoscaler.poll_interval()
        );
        tasks.push(tokio::spawn(supervise(
            autoscaler,
            endpoint,
            admins.clone(),
            stopped.clone(),
            records.clone(),
        )));
    }
    let printer = tokio::spawn(print_records(
        records.subscribe(),
        metrics.clone(),
        all_workers.clone(),
    ));

    shutdown::signalled().await;
    say!("stopping: autoscalers first, then the workers (each settles what it holds)");
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    printer.abort();
    let mut clean = 0;
    let mut failed = 0;
    for (name, workers) in &all_workers {
        let (c, f) = workers.shutdown().await;
        if c + f > 0 {
            say!("{name}: {c} worker(s) stopped cleanly, {f} did not");
        }
        clean += c;
        failed += f;
    }
    say!("stopped: {clean} worker(s) exited cleanly, {failed} did not");
    if failed > 0 {
        return Err(CliError::Usage(format!(
            "{failed} worker(s) did not stop cleanly"
        )));
    }
    Ok(())
}

/// Reads and plans every pipeline of the manifest, and its Secrets.
fn read(ctx: &Context, path: &Path) -> Result<(Vec<Planned>, SecretStore), CliError> {
    let manifest_error = |reason: String| CliError::Manifest {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| manifest_error(e.to_string()))?;
    let pipelines = parse_pipelines(&text).map_err(|e| manifest_error(e.to_string()))?;
    if pipelines.is_empty() {
        return Err(manifest_error("it holds no LogPipeline".into()));
    }
    let store = SecretStore::new(parse_secrets(&text).map_err(|e| manifest_error(e.to_string()))?);
    let planned = pipelines
        .into_iter()
        .map(|pipeline| {
            let name = pipeline.metadata.name.clone().unwrap_or_default();
            let namespace = ctx
                .broker
                .namespace
                .clone()
                .or_else(|| pipeline.metadata.namespace.clone())
                .unwrap_or_else(|| crate::args::DEFAULT_NAMESPACE.to_owned());
            let mut planned = plan(&namespace, &name, &pipeline.spec)
                .map_err(|e| manifest_error(format!("LogPipeline {name} is invalid: {e}")))?;
            // The broker Secret of the manifest, as in a cluster; else the command line.
            let (endpoint, secret_vhost) = match store.broker(&pipeline)? {
                Some(secret) => {
                    say!(
                        "{namespace}/{name}: broker {} from the manifest's Secret",
                        secret.endpoint
                    );
                    (secret.endpoint, secret.vhost)
                }
                None => (
                    ctx.endpoint(&ctx.default_vhost()),
                    Some(ctx.default_vhost()),
                ),
            };
            // spec.broker.tls from the manifest's Secrets, else --ca-file and --cert-file
            // (for an amqps broker).
            let tls = match store.broker_tls(&pipeline)? {
                Some(tls) => tls,
                None if endpoint.is_tls() => ctx.broker().tls().clone(),
                None => logstream_broker::TlsMaterial::default(),
            };
            let endpoint = endpoint
                .with_tls(tls)
                .map_err(|e| manifest_error(format!("LogPipeline {name}: {e}")))?;
            // --vhost, else the manifest's, else the broker URI's.
            planned.vhost = match &ctx.broker.vhost {
                Some(vhost) => vhost.clone(),
                None => pipeline.spec.vhost_with(secret_vhost.as_deref()).to_owned(),
            };
            Ok(Planned {
                key: format!("{namespace}/{name}"),
                endpoint: endpoint.with_vhost(&planned.vhost),
                pipeline,
                plan: planned,
                namespace,
            })
        })
        .collect::<Result<Vec<_>, CliError>>()?;
    Ok((planned, store))
}

fn write_config(path: &PathBuf, yaml: &str) -> Result<(), CliError> {
    std::fs::write(path, yaml)
        .map_err(|e| CliError::Usage(format!("failed to write {}: {e}", path.display())))
}

/// Prints each change of replicas, each gap in the readings and each outage of a sink, keeps `/metrics` current,
/// and reports workers that exited on their own.
async fn print_records(
    mut records: broadcast::Receiver<ScaleRecord>,
    metrics: Arc<DevMetrics>,
    workers: Vec<(String, Arc<LocalWorkers>)>,
) {
    let mut missing: HashMap<String, bool> = HashMap::new();
    let mut sink_down: HashMap<String, bool> = HashMap::new();
    loop {
        let record = match records.recv().await {
            Ok(record) => record,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let key = format!("{}/{}", record.pipeline, record.output);
        let now = jiff::Zoned::now().strftime("%H:%M:%S%.3f");
        if record.scaled() {
            say!("{now} {key} scaled: {}", record.decision.reason);
        } else if let Some(e) = &record.error {
            say!("{now} {key} not scaled: {e}");
        }
        let is_missing = record.decision.metrics_missing;
        if missing.insert(key.clone(), is_missing) != Some(is_missing) && is_missing {
            say!("{now} {key} holding replicas: {}", record.decision.reason);
        }
        let is_down = record
            .reading
            .as_ref()
            .is_some_and(OutputReading::sink_down);
        match (sink_down.insert(key.clone(), is_down), is_down) {
            (Some(false) | None, true) => {
                say!("{now} {key} holding replicas: {}", record.decision.reason);
            }
            (Some(true), false) => say!("{now} {key} the sink takes writes again"),
            _ => {}
        }
        metrics.outputs.autoscaled(&record);
        if let Some(reading) = record.reading {
            metrics.outputs.gauges(
                &OutputLabels::of(&record),
                &OutputGauges {
                    ready: reading.ready,
                    oldest_age_s: Some(record.decision.signals.age_s),
                    dead_lettered: reading.dead_lettered,
                    replicas: Some(record.decision.desired),
                },
            );
        }
        for (_, w) in &workers {
            for exit in w.take_exits() {
                say!("{now} {exit}");
            }
        }
    }
}

async fn axum_serve(listener: TcpListener, router: axum::Router) {
    let _ = axum::serve(listener, router).await;
}
