//! What the operator's binaries do once at startup: read the command line, check the cluster,
//! and fail fast with a hint a person can act on and the exit code of
//! [`logstream_api::exit`].

use std::{fmt::Display, net::SocketAddr, process::ExitCode};

use kube::{Api, Client, api::ListParams};
use logstream_api::{LogPipeline, exit};

/// What to run when the CRD is missing.
pub const INSTALL_HINT: &str = "kubectl apply -f crds/logstream.io_logpipelines.yaml, or helm install logstream charts/logstream";

/// Why the operator cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Neither the in-cluster configuration nor a kubeconfig is usable.
    #[error("failed to configure the Kubernetes client (in-cluster or KUBECONFIG): {0}")]
    ClientConfig(#[source] kube::Error),
    /// The LogPipeline CRD is not installed in the cluster.
    #[error("CRD logpipelines.logstream.io is not installed: {INSTALL_HINT}")]
    CrdMissing,
    /// The API server could not be asked.
    #[error("failed to list LogPipelines to check that the CRD is installed: {0}")]
    Api(#[source] kube::Error),
    /// The HTTP port could not be opened (in use, not permitted).
    #[error("failed to listen on {address}: {source}")]
    Listen {
        /// The `--listen` address.
        address: SocketAddr,
        /// The system's error.
        source: std::io::Error,
    },
}

impl StartupError {
    /// The exit code: a configuration that cannot work is a usage mistake; a cluster that
    /// cannot be reached or lacks the CRD, or a port in use, is a runtime failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::ClientConfig(_) => exit::USAGE,
            Self::CrdMissing | Self::Api(_) | Self::Listen { .. } => exit::FAILURE,
        }
    }
}

/// Fails with [`StartupError::CrdMissing`] when the API server does not serve LogPipelines.
/// Listing one pipeline needs no permission beyond the ones the controller uses anyway.
pub async fn check_crd_installed(
    client: Client,
    namespace: Option<&str>,
) -> Result<(), StartupError> {
    let api: Api<LogPipeline> = match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        // A path the API server does not serve answers 404 with a plain-text body, which
        // has no Status reason: the code is what tells.
        Err(kube::Error::Api(status)) if status.code == 404 => Err(StartupError::CrdMissing),
        Err(e) => Err(StartupError::Api(e)),
    }
}

/// Parses the command line into `A`. `--help` and `--version` print and exit 0; a usage
/// mistake prints clap's message and exits 1 (clap's own code, 2, is LogStream's runtime
/// failure).
pub fn parse_args<A: clap::Parser>() -> Result<A, ExitCode> {
    A::try_parse().map_err(|e| {
        let _ = e.print();
        ExitCode::from(if e.use_stderr() {
            exit::USAGE
        } else {
            exit::SUCCESS
        })
    })
}

/// Prints `error` as the one `error: ...` line on stderr and returns exit code `code`.
pub fn fail(error: &dyn Display, code: u8) -> ExitCode {
    eprintln!("error: {}", error.to_string().replace('\n', " "));
    ExitCode::from(code)
}
