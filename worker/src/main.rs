//! `logstream-worker --config <file> [--listen <addr:port>]`: consumes one LogStream output.
//!
//! Exit codes: 0 after a requested stop (SIGTERM, SIGINT), 2 when the configuration, the
//! `LOGSTREAM_AMQP_URI` environment variable or the sink settings are unusable, 1 when the
//! worker fails at run time (e.g. its HTTP port is taken).

use std::{io::IsTerminal, path::PathBuf, process::ExitCode};

use clap::Parser;
use logstream_api::worker_config::AMQP_URI_ENV;
use logstream_worker::{
    runtime,
    settings::Settings,
    sink::{self, SinkLabels},
};
use tracing_subscriber::EnvFilter;

/// Consumes one LogStream output's queue and writes its logs to the output's sink.
#[derive(Debug, Parser)]
#[command(name = "logstream-worker", version, about, long_about = None)]
struct Args {
    /// Worker configuration file (YAML or JSON), as rendered by the operator. The broker URI
    /// comes from the environment variable LOGSTREAM_AMQP_URI.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Address of /metrics, /healthz and /readyz; overrides the configuration's `listen`.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let uri = std::env::var(AMQP_URI_ENV).ok();
    let settings = match Settings::load(&args.config, args.listen.as_deref(), uri.as_deref()) {
        Ok(settings) => settings,
        Err(e) => return usage_error(&e),
    };
    let labels = SinkLabels {
        namespace: settings.config.namespace.clone(),
        pipeline: settings.config.pipeline.clone(),
        output: settings.config.output.clone(),
    };
    let sink = match sink::build(&settings.config.sink, labels) {
        Ok(sink) => sink,
        Err(e) => return usage_error(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("logstream-worker: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(runtime::run(settings, sink)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("logstream-worker: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage_error(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("logstream-worker: {e}");
    ExitCode::from(2)
}
