//! The command line: every command, flag and default of `logstream`, as clap types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use logstream_api::{contract::ErrorClass, duration::Duration};

use crate::level_mix::LevelMix;

/// The broker when neither `--amqp` nor `LOGSTREAM_AMQP_URI` names one.
pub const DEFAULT_AMQP_URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Namespace of a pipeline when neither `-n` nor the manifest names one.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Published messages whose confirm may be outstanding at once.
pub const DEFAULT_CONFIRM_WINDOW: usize = 1000;
/// Dead letters `dlq list` shows when `--limit` is not given.
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// Service name of logs produced without `--service`.
pub const DEFAULT_SERVICE: &str = "logstream-cli";
/// Routing key of `produce --format otlp` without `--routing-key`: the OpenTelemetry
/// Collector's RabbitMQ exporter's default for logs.
pub const OTLP_ROUTING_KEY: &str = "otlp_logs";
/// How long `produce` keeps reconnecting after a lost connection without
/// `--reconnect-timeout`.
pub const DEFAULT_RECONNECT_TIMEOUT: &str = "30s";
/// Level mix of a load run without `--levels`.
pub const DEFAULT_LEVELS: &str = "info=90,warn=7,error=2.9,critical=0.1";

/// LogStream's command line: produce logs and load, inspect and replay dead letters, and see
/// how a pipeline's outputs are doing.
///
/// Exit codes: 0 success, 1 usage mistake, 2 runtime failure (broker unreachable, credentials
/// refused, pipeline or queue unknown, messages not accepted).
#[derive(Debug, Parser)]
#[command(
    name = "logstream",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Where the broker is and which pipeline is meant.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Broker and pipeline coordinates shared by every command.
#[derive(Clone, Debug, Args)]
pub struct BrokerArgs {
    /// AMQP URI of the broker; special characters in user and password percent-encoded. The
    /// nodes of a cluster are listed with commas (amqp://user:password@host1:5672,host2:5672/vhost)
    /// and tried in that order.
    #[arg(
        long,
        global = true,
        value_name = "URI",
        env = "LOGSTREAM_AMQP_URI",
        hide_env_values = true,
        default_value = DEFAULT_AMQP_URI
    )]
    pub amqp: String,

    /// Management API URL [default: http://<AMQP host>:15672, or https://<AMQP host>:15671 for
    /// amqps, on each AMQP host; credentials of the AMQP URI].
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "LOGSTREAM_MANAGEMENT_URI",
        hide_env_values = true
    )]
    pub management: Option<String>,

    /// CA certificates (PEM) the broker's certificate is checked against, instead of the
    /// system's, for amqps (and the management API over https).
    #[arg(long, global = true, value_name = "FILE", env = "LOGSTREAM_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// Client certificate (PEM) shown to an amqps broker that asks for one; with --key-file.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "LOGSTREAM_CERT_FILE",
        requires = "key_file"
    )]
    pub cert_file: Option<PathBuf>,

    /// Private key (PEM) of --cert-file.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "LOGSTREAM_KEY_FILE",
        requires = "cert_file"
    )]
    pub key_file: Option<PathBuf>,

    /// Virtual host [default: the manifest's spec.broker.vhost, else the AMQP URI's].
    #[arg(long, global = true, value_name = "VHOST")]
    pub vhost: Option<String>,

    /// Namespace of the pipeline [default: the manifest's, else "default"].
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// LogPipeline manifest to read the exchange name, vhost and outputs from; without it,
    /// broker names follow the naming convention for <namespace>/<pipeline>.
    #[arg(short = 'f', long = "file", global = true, value_name = "MANIFEST")]
    pub file: Option<PathBuf>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish logs: one from flags, JSON lines from stdin, or a load run (--count,
    /// --duration or --rate). Every log is persistent and confirmed by the broker.
    Produce(ProduceArgs),
    /// Look at, replay or purge an output's dead-letter queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// A table of pipeline outputs: ready, unacked, oldest age, DLQ depth, consumers, rates.
    Status(StatusArgs),
    /// Run the pipelines of a manifest on this machine: apply their topology to the broker,
    /// autoscale local logstream-worker processes from queue depth and message age, print
    /// each scaling decision, serve /metrics and the dashboard. Ctrl-C stops gracefully.
    Dev(DevArgs),
}

/// Where `logstream dev` serves its page and metrics when `--listen` is not given.
pub const DEFAULT_DEV_LISTEN: &str = "127.0.0.1:9464";

/// `logstream dev`.
#[derive(Clone, Debug, Args)]
pub struct DevArgs {
    /// Address of the dashboard and /metrics (port 0 picks a free port; the address is
    /// printed).
    #[arg(long, value_name = "ADDR:PORT", default_value = DEFAULT_DEV_LISTEN)]
    pub listen: std::net::SocketAddr,

    /// The logstream-worker binary [default: the one next to logstream, else on PATH].
    #[arg(long, value_name = "PATH")]
    pub worker_binary: Option<PathBuf>,

    /// Directory for the worker configurations and output [default: a new directory under
    /// the system's temporary directory].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

/// `logstream produce`.
#[derive(Clone, Debug, Args)]
pub struct ProduceArgs {
    /// Pipeline to publish to [default: the only pipeline of the -f manifest].
    pub pipeline: Option<String>,

    /// Publish to this exchange instead of the pipeline's.
    #[arg(long, value_name = "NAME")]
    pub exchange: Option<String>,

    /// Service that emits the logs (routing key <service>.<level>); in a load run, a
    /// comma-separated list is used in turn.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_SERVICE)]
    pub service: String,

    /// Level of a single log, and of stdin lines that carry none.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = parse_level)]
    pub level: logstream_api::contract::Level,

    /// Publish this one log.
    #[arg(long, short = 'm', value_name = "TEXT", conflicts_with_all = ["count", "duration", "rate"])]
    pub message: Option<String>,

    /// Extra field of every log (repeatable); the value is JSON when it parses as JSON
    /// (`code=500`, `ok=true`), else a string.
    #[arg(long = "field", value_name = "KEY=VALUE", value_parser = parse_field)]
    pub fields: Vec<(String, String)>,

    /// Load run: publish this many logs.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,

    /// Load run: publish for this long (e.g. 30s, 2m); with --count, whichever ends first.
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// Load run: average logs per second [default: as fast as confirms allow].
    #[arg(long, value_name = "PER_SECOND", value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Load run: share of each level, as weights (normalized).
    #[arg(long, value_name = "LEVEL=WEIGHT,...", default_value = DEFAULT_LEVELS)]
    pub levels: LevelMix,

    /// Load run with --rate: send logs in bursts of this many, one burst every
    /// burst/rate seconds (the average rate stays --rate).
    #[arg(long, value_name = "N", default_value_t = 1, requires = "rate", value_parser = clap::value_parser!(u64).range(1..))]
    pub burst: u64,

    /// Load run: pad every log body to at least this many bytes.
    #[arg(long, value_name = "BYTES")]
    pub size: Option<usize>,

    /// Published logs whose confirm may be outstanding at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONFIRM_WINDOW, value_parser = parse_window)]
    pub window: usize,

    /// Message encoding: `json` (LogStream's message contract) or `otlp` (a protobuf OTLP
    /// LogsData per log, as the OpenTelemetry Collector's RabbitMQ exporter publishes it).
    #[arg(long, value_name = "FORMAT", default_value = "json")]
    pub format: ProduceFormat,

    /// Routing key of every log [default: <service>.<level>; with --format otlp, otlp_logs].
    #[arg(long, value_name = "KEY", value_parser = parse_routing_key)]
    pub routing_key: Option<String>,

    /// When the connection to the broker is lost (a node restarts or dies), keep reconnecting,
    /// through any host of --amqp, for this long, and publish again every log whose confirm
    /// had not come; 0s stops at the first loss.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_RECONNECT_TIMEOUT)]
    pub reconnect_timeout: Duration,
}

/// How `produce` encodes logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProduceFormat {
    /// A JSON body with the contract's properties (message id, timestamp, priority).
    #[default]
    Json,
    /// A protobuf OTLP `LogsData` with `content_type: application/x-protobuf`, persistent,
    /// without message id, timestamp or priority.
    Otlp,
}

impl ProduceArgs {
    /// True when a load run was asked for.
    pub fn is_load(&self) -> bool {
        self.count.is_some() || self.duration.is_some() || self.rate.is_some()
    }
}

/// An output's dead-letter queue.
#[derive(Clone, Debug, Args)]
pub struct DlqTarget {
    /// The pipeline.
    pub pipeline: String,
    /// The output whose dead-letter queue is meant.
    pub output: String,
}

/// `logstream dlq ...`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Show dead letters (reason, class, attempts, first failure, routing key, body) and
    /// leave the queue exactly as it was: same messages, same order.
    List {
        /// Which dead-letter queue.
        #[command(flatten)]
        target: DlqTarget,
        /// Show at most this many dead letters, from the head of the queue.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_LIST_LIMIT)]
        limit: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Publish dead letters back to the pipeline's exchange with their original routing
    /// key; a message leaves the DLQ only after the broker confirmed its copy.
    Replay(ReplayArgs),
    /// Delete every message of a dead-letter queue (asks first, unless --yes).
    Purge {
        /// Which dead-letter queue.
        #[command(flatten)]
        target: DlqTarget,
        /// Do not ask (required when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// `logstream dlq replay`.
#[derive(Clone, Debug, Args)]
pub struct ReplayArgs {
    /// Which dead-letter queue.
    #[command(flatten)]
    pub target: DlqTarget,
    /// Only dead letters whose error contains this text (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Only dead letters of this error class (transient, permanent, redelivered).
    #[arg(long, value_name = "CLASS")]
    pub class: Option<ErrorClass>,
    /// Replay at most this many dead letters.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Replay at most this many dead letters per second.
    #[arg(long, value_name = "PER_SECOND", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Show what would be replayed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Publish the copies straight to this output's main queue instead of the pipeline's
    /// exchange, so other outputs bound to the same routing key do not get them again.
    #[arg(long)]
    pub direct: bool,
    /// Replayed copies whose confirm may be outstanding at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONFIRM_WINDOW, value_parser = parse_window)]
    pub window: usize,
}

/// `logstream status`.
#[derive(Clone, Debug, Args)]
pub struct StatusArgs {
    /// Only this pipeline [default: every pipeline of the namespace].
    pub pipeline: Option<String>,
    /// Pipelines of every namespace.
    #[arg(long, short = 'A', conflicts_with = "pipeline")]
    pub all_namespaces: bool,
    /// One JSON object per output instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also show each LogPipeline's Ready condition, replicas (ready/desired) and last
    /// scaling reason from the cluster of this kubeconfig.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
}

fn parse_level(raw: &str) -> Result<logstream_api::contract::Level, String> {
    raw.parse()
        .map_err(|e: logstream_api::contract::UnknownLevel| e.to_string())
}

fn parse_routing_key(raw: &str) -> Result<String, String> {
    if raw.len() > 255 {
        return Err("a routing key is at most 255 bytes long".into());
    }
    Ok(raw.to_owned())
}

fn parse_field(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected KEY=VALUE, got {raw:?}")),
    }
}

fn parse_rate(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "expected a positive number of messages per second, got {raw:?}"
        )),
    }
}

fn parse_window(raw: &str) -> Result<usize, String> {
    match raw.parse::<usize>() {
        Ok(n) if (1..=65_535).contains(&n) => Ok(n),
        _ => Err(format!("expected a number from 1 to 65535, got {raw:?}")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_single_log_cannot_be_a_load_run_too() {
        let err = Cli::try_parse_from(["logstream", "produce", "app", "-m", "hi", "--count", "5"])
            .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn broker_flags_are_accepted_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "logstream",
            "dlq",
            "list",
            "app",
            "out",
            "--vhost",
            "v",
            "-n",
            "ns",
        ])
        .unwrap();
        assert_eq!(cli.broker.vhost.as_deref(), Some("v"));
        assert_eq!(cli.broker.namespace.as_deref(), Some("ns"));
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let err = Cli::try_parse_from(["logstream", "status", "--cert-file", "c.pem"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let cli = Cli::try_parse_from([
            "logstream",
            "status",
            "--ca-file",
            "ca.pem",
            "--cert-file",
            "c.pem",
            "--key-file",
            "k.pem",
        ])
        .unwrap();
        assert_eq!(cli.broker.ca_file, Some(PathBuf::from("ca.pem")));
    }

    #[test]
    fn fields_rates_and_windows_are_checked() {
        assert_eq!(parse_field("code=500"), Ok(("code".into(), "500".into())));
        assert_eq!(parse_field("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_field("novalue").is_err());
        assert!(parse_field("=x").is_err());
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-3").is_err());
        assert!(parse_rate("inf").is_err());
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        assert!(parse_window("0").is_err());
        assert_eq!(parse_window("64"), Ok(64));
    }
}
