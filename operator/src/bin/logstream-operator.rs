//! `logstream-operator`: parses settings, checks the CRD, serves `/metrics`, `/healthz` and
//! `/readyz`, and runs the LogPipeline controller while this replica holds the leader Lease.
//! Everything else lives in the library. Exits 0 when stopped, 1 on a usage or configuration
//! mistake, 2 on a runtime failure, with one `error: ...` line on stderr.

use std::{net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use clap::{ArgAction, Parser};
use kube::{Api, Client};
use logstream_api::exit;
use logstream_autoscaler::{
    dashboard::{self, Dashboard},
    serve::{self, Health},
};
use logstream_operator::{
    controller::{self, Context, Scope},
    leader::{self, LeaderElector, LeaderError, LeaseSettings},
    metrics::Metrics,
    scaling::Autoscalers,
    settings::{self, Settings},
    startup::{self, StartupError},
};
use tokio::{net::TcpListener, sync::watch};
use tracing::info;
use tracing_subscriber::EnvFilter;

/// The log filter without `RUST_LOG`. lapin logs every channel the broker closes as an error,
/// including the passive declarations that probe whether an object exists; the operator
/// reports the failures that matter itself.
const DEFAULT_LOG: &str = "info,lapin::channel=off";

/// Runs LogStream's LogPipeline controller.
#[derive(Debug, Parser)]
#[command(version, about, after_help = exit::HELP)]
struct Args {
    /// Worker image for outputs that do not set `worker.image`.
    #[arg(long, env = "LOGSTREAM_WORKER_IMAGE", default_value = settings::DEFAULT_WORKER_IMAGE)]
    worker_image: String,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "LOGSTREAM_LISTEN", default_value = settings::LISTEN)]
    listen: SocketAddr,

    /// Manage LogPipelines of these namespaces only, comma-separated or repeated (default:
    /// every namespace). The operator then needs Roles in these namespaces only.
    #[arg(long, env = "LOGSTREAM_WATCH_NAMESPACE", value_delimiter = ',')]
    namespace: Vec<String>,

    /// How often a healthy pipeline is checked again to repair drift on the broker.
    #[arg(long, env = "LOGSTREAM_RECHECK_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    recheck_interval: Duration,

    /// First retry delay after a transient failure (doubles up to 5m).
    #[arg(long, env = "LOGSTREAM_ERROR_BACKOFF", default_value = "5s", value_parser = parse_duration)]
    error_backoff: Duration,

    /// Pipelines reconciled at the same time.
    #[arg(long, env = "LOGSTREAM_CONCURRENCY", default_value_t = settings::CONCURRENCY)]
    concurrency: u16,

    /// Elect a leader through a Lease, so that several replicas can run.
    #[arg(long, env = "LOGSTREAM_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    leader_election: bool,

    /// Name of the leader Lease.
    #[arg(long, env = "LOGSTREAM_LEASE_NAME", default_value = leader::LEASE_NAME)]
    lease_name: String,

    /// Namespace of the leader Lease (default: the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,

    /// This replica's identity in the Lease and on Events (default: the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    text.parse::<logstream_api::Duration>()
        .map(Duration::from)
        .map_err(|e| e.to_string())
}

// One thread runs every reconcile: the work is I/O-bound, and with a single allocating
// thread glibc keeps one heap instead of one arena per worker thread, each holding its own
// peak (the 100-pipeline benchmark in docs/benchmarks.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match startup::parse_args::<Args>() {
        Ok(args) => args,
        Err(code) => return code,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG)),
        )
        .init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => startup::fail(&e, e.exit_code()),
    }
}

/// Why the operator stopped on its own.
#[derive(Debug, thiserror::Error)]
enum Failed {
    /// It could not start.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// It lost the leader Lease (Kubernetes restarts it as a standby).
    #[error(transparent)]
    Leading(#[from] LeaderError),
}

impl Failed {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Startup(e) => e.exit_code(),
            Self::Leading(_) => exit::FAILURE,
        }
    }
}

async fn run(args: Args) -> Result<(), Failed> {
    let client = Client::try_default()
        .await
        .map_err(StartupError::ClientConfig)?;
    startup::check_crd_installed(client.clone(), args.namespace.first().map(String::as_str))
        .await?;

    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| StartupError::Listen {
            address: args.listen,
            source,
        })?;
    // The autoscalers (started by the reconciles while this replica leads) feed the
    // dashboard served on the same port.
    let autoscalers = Arc::new(Autoscalers::new(client.clone()));
    let dashboard = Arc::new(Dashboard::default());
    tokio::spawn(
        dashboard
            .clone()
            .feed(autoscalers.subscribe(), Some(autoscalers.removals())),
    );
    let router = serve::router_with(
        metrics.clone(),
        health.clone(),
        dashboard::router(dashboard),
    );
    info!(address = %args.listen, "serving the dashboard, /metrics, /healthz and /readyz");
    tokio::spawn(async move { axum::serve(listener, router).await });

    let (stop, stopping) = watch::channel(false);
    tokio::spawn(async move {
        logstream_autoscaler::shutdown::signalled().await;
        info!("shutting down: finishing reconciles in flight");
        let _ = stop.send(true);
    });
    let shutdown = move || {
        let mut stopping = stopping.clone();
        async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        }
    };

    let identity = args.identity.clone().unwrap_or_else(|| {
        std::env::var("HOSTNAME")
            .unwrap_or_else(|_| format!("logstream-operator-{}", std::process::id()))
    });
    let settings = Settings {
        worker_image: args.worker_image.clone(),
        recheck_interval: args.recheck_interval,
        error_backoff_min: args.error_backoff,
        ..Settings::default()
    };
    tokio::spawn(
        autoscalers
            .clone()
            .report(metrics.clone(), Some(identity.clone())),
    );
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            settings,
            metrics.clone(),
            Some(identity.clone()),
        )
        .with_autoscalers(autoscalers.clone()),
    );
    let scope = Scope::of(args.namespace.clone());
    let controller = controller::run(ctx, scope, args.concurrency, shutdown());
    health.set_ready(true);

    if !args.leader_election {
        metrics.set_leader(true);
        controller.await;
        return Ok(());
    }
    let lease_namespace = args
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let mut elector = LeaderElector::new(
        Api::namespaced(client, &lease_namespace),
        LeaseSettings {
            name: args.lease_name.clone(),
            ..LeaseSettings::new(identity)
        },
        Arc::new(k8s_openapi::jiff::Timestamp::now),
    );
    info!(lease = %args.lease_name, namespace = %lease_namespace, "waiting to lead");
    let leading = elector
        .lead(controller, shutdown(), || metrics.set_leader(true))
        .await;
    metrics.set_leader(false);
    leading?;
    Ok(())
}
