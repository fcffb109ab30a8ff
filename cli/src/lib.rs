//! `logstream`, the command line of LogStream: produce logs and load, inspect, replay and purge
//! dead letters, and see how a pipeline's outputs are doing.
//!
//! `main.rs` only parses the command line and maps errors to exit codes; each command lives in
//! its own module and works on a [`Context`] (the broker flags, resolved once).

/// Prints a line to stdout. A closed pipe (`logstream dlq list | head`) ends the output
/// quietly instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

pub mod args;
pub mod cluster;
pub mod dev;
pub mod dlq;
pub mod envelope;
pub mod error;
pub mod level_mix;
pub mod pacing;
pub mod produce;
pub mod progress;
pub mod status;
pub mod stop;
pub mod table;
pub mod target;

use args::{BrokerArgs, Cli, Command, DEFAULT_NAMESPACE, DlqCommand};
use error::CliError;
use logstream_broker::{BrokerConnection, BrokerEndpoint, Purpose, TlsMaterial};
use target::Target;

/// Connection name of the CLI's connections in the management UI.
pub const CONNECTION_NAME: &str = "logstream-cli";

/// The broker flags of one invocation, checked.
pub struct Context {
    /// The flags as given.
    pub broker: BrokerArgs,
    endpoint: BrokerEndpoint,
}

impl Context {
    /// Reads the broker flags and the files they name; a malformed URI, an unreadable file or
    /// a CA for a broker without TLS is a usage mistake.
    pub fn new(broker: BrokerArgs) -> Result<Self, CliError> {
        let usage = |e: &dyn std::fmt::Display| CliError::Usage(e.to_string());
        let endpoint = BrokerEndpoint::from_uri(&broker.amqp, broker.management.as_deref())
            .map_err(|e| usage(&e))?
            .with_tls(tls_files(&broker)?)
            .map_err(|e| usage(&e))?;
        Ok(Self { broker, endpoint })
    }

    /// The broker, on the vhost of `--amqp`.
    pub fn broker(&self) -> &BrokerEndpoint {
        &self.endpoint
    }

    /// The broker on `vhost`.
    pub fn endpoint(&self, vhost: &str) -> BrokerEndpoint {
        self.endpoint.with_vhost(vhost)
    }

    /// `--vhost`, else the AMQP URI's vhost.
    pub fn default_vhost(&self) -> String {
        self.broker
            .vhost
            .clone()
            .unwrap_or_else(|| self.endpoint.vhost().to_owned())
    }

    /// `-n`, else `default`.
    pub fn namespace(&self) -> String {
        self.broker
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
    }

    /// Connects to `vhost` (named `logstream-cli` in the management UI).
    pub async fn connect(&self, vhost: &str) -> Result<BrokerConnection, CliError> {
        Ok(
            BrokerConnection::open(&self.endpoint(vhost), CONNECTION_NAME, Purpose::Messages)
                .await?,
        )
    }

    /// The pipeline meant by `pipeline` and the flags.
    pub fn target(&self, pipeline: Option<&str>) -> Result<Target, CliError> {
        Target::resolve(&self.broker, pipeline, self.endpoint.vhost())
    }
}

/// The CA and client certificate of `--ca-file`, `--cert-file` and `--key-file`.
fn tls_files(broker: &BrokerArgs) -> Result<TlsMaterial, CliError> {
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| CliError::Usage(format!("failed to read {flag} {}: {e}", path.display())))
    };
    let shown = |flag: &str, path: &std::path::Path| format!("{flag} {}", path.display());
    let mut tls = TlsMaterial::default();
    if let Some(path) = &broker.ca_file {
        tls = tls
            .with_ca(read("--ca-file", path)?, &shown("--ca-file", path))
            .map_err(|e| CliError::Usage(e.to_string()))?;
    }
    if let (Some(cert), Some(key)) = (&broker.cert_file, &broker.key_file) {
        tls = tls
            .with_client_cert(
                read("--cert-file", cert)?,
                read("--key-file", key)?,
                &format!(
                    "{} and {}",
                    shown("--cert-file", cert),
                    shown("--key-file", key)
                ),
            )
            .map_err(|e| CliError::Usage(e.to_string()))?;
    }
    Ok(tls)
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let ctx = Context::new(cli.broker)?;
    match &cli.command {
        Command::Produce(args) => produce::run(&ctx, args).await,
        Command::Dlq(DlqCommand::List {
            target,
            limit,
            json,
        }) => dlq::list::run(&ctx, target, *limit, *json).await,
        Command::Dlq(DlqCommand::Replay(args)) => dlq::replay::run(&ctx, args).await,
        Command::Dlq(DlqCommand::Purge { target, yes }) => {
            dlq::purge::run(&ctx, target, *yes).await
        }
        Command::Status(args) => status::run(&ctx, args).await,
        Command::Dev(args) => dev::run(&ctx, args).await,
    }
}
