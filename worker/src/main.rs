//! `logstream-worker --config <file> [--listen <addr:port>]`: consumes one LogStream output.
//!
//! Exit codes ([`logstream_api::exit`]): 0 after a requested stop (SIGTERM, SIGINT); 1 when the
//! command line, the configuration, the `LOGSTREAM_AMQP_URI` environment variable or the sink
//! settings are unusable; 2 when the worker fails at run time (e.g. its HTTP port is taken).
//! Every failure is one `error: ...` line on stderr, without the broker's password.

use std::{fmt::Display, io::IsTerminal, path::PathBuf, process::ExitCode};

use clap::Parser;
use logstream_api::{
    exit,
    worker_config::{AMQP_PASSWORD_ENV, AMQP_URI_ENV, AMQP_USERNAME_ENV},
};
use logstream_worker::{
    runtime,
    settings::Settings,
    sink::{self, SinkLabels},
};
use tracing_subscriber::EnvFilter;

/// Consumes one LogStream output's queue and writes its logs to the output's sink.
#[derive(Debug, Parser)]
#[command(name = "logstream-worker", version, about, long_about = None, after_help = exit::HELP)]
struct Args {
    /// Worker configuration file (YAML or JSON), as rendered by the operator. The broker URI
    /// comes from the environment variable LOGSTREAM_AMQP_URI; LOGSTREAM_AMQP_USERNAME and
    /// LOGSTREAM_AMQP_PASSWORD, when both are set, replace its user and password.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Address of /metrics, /healthz and /readyz; overrides the configuration's `listen`.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<String>,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            // `--help` and `--version` print to stdout and succeed; clap's code for a usage
            // mistake, 2, is LogStream's runtime failure.
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::SUCCESS
            });
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let uri = std::env::var(AMQP_URI_ENV).ok();
    let (username, password) = (
        std::env::var(AMQP_USERNAME_ENV).ok(),
        std::env::var(AMQP_PASSWORD_ENV).ok(),
    );
    let settings = match Settings::load(&args.config, args.listen.as_deref(), uri.as_deref()) {
        Ok(settings) => settings.with_broker_user(username.as_deref(), password.as_deref()),
        Err(e) => return fail(&e, exit::USAGE),
    };
    let labels = SinkLabels {
        namespace: settings.config.namespace.clone(),
        pipeline: settings.config.pipeline.clone(),
        output: settings.config.output.clone(),
    };
    let sink = match sink::build(&settings.config.sink, labels, &settings.config.secrets) {
        Ok(sink) => sink,
        Err(e) => return fail(&e, exit::USAGE),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return fail(
                &format!("failed to start the async runtime: {e}"),
                exit::FAILURE,
            );
        }
    };
    match runtime.block_on(runtime::run(settings, sink)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e, exit::FAILURE),
    }
}

/// Prints `error` as the one `error: ...` line on stderr and returns exit code `code`.
fn fail(error: &dyn Display, code: u8) -> ExitCode {
    eprintln!("error: {}", error.to_string().replace('\n', " "));
    ExitCode::from(code)
}
