//! The worker process: HTTP endpoints, signal handling, and the connect → consume → reconnect
//! loop with backoff. A SIGTERM (or SIGINT) stops consumption and settles in-flight work within
//! the configured grace period.

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use tokio::{net::TcpListener, sync::watch};
use tracing::{info, warn};

use crate::{
    delivery::{dedup::DedupCache, dedup_store::DedupStore, retry_ladder::Ladder},
    metrics::Metrics,
    server::{self, Health},
    session::{ProcessState, Session, SessionEnd, Worker},
    settings::Settings,
    sink::{Sink, health::SinkHealth},
};

/// First pause before reconnecting after the broker connection was lost or refused.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between reconnection attempts.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why the worker process failed (as opposed to stopping when asked).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The HTTP port could not be bound.
    #[error("failed to listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("failed to install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The shared dedup store's client could not be set up.
    #[error("failed to set up the shared dedup store: {0}")]
    DedupStore(String),
}

/// Runs the worker until SIGTERM or SIGINT.
pub async fn run(settings: Settings, sink: Arc<dyn Sink>) -> Result<(), RuntimeError> {
    let config = Arc::new(settings.config.clone());
    let metrics = Arc::new(Metrics::new(&config.pipeline, &config.output));
    let ready = Arc::new(AtomicBool::new(false));
    let dedup_store = match &settings.dedup_store {
        Some(client) => {
            let scope = format!("{}/{}/{}", config.namespace, config.pipeline, config.output);
            let store = DedupStore::new(
                client,
                &scope,
                config.dedup.window.as_std(),
                Arc::clone(&metrics),
            )
            .map_err(|e| RuntimeError::DedupStore(e.to_string()))?;
            info!("dedup: ids are shared with the other replicas through Redis");
            Some(Arc::new(store))
        }
        None => None,
    };
    let worker = Worker {
        ladder: Ladder::new(config.max_attempts, config.retry.len()),
        config: Arc::clone(&config),
        sink,
        metrics: Arc::clone(&metrics),
        ready: Arc::clone(&ready),
        dedup_store,
    };

    let listener =
        TcpListener::bind(settings.listen)
            .await
            .map_err(|source| RuntimeError::Listen {
                addr: settings.listen,
                source,
            })?;
    // The bound address: with port 0 the system picks one, and the log line below tells which.
    let listen = listener.local_addr().unwrap_or(settings.listen);
    let (stop_tx, mut stop) = watch::channel(false);
    let mut server_stop = stop.clone();
    let health = Health {
        metrics: Arc::clone(&metrics),
        ready,
    };
    let server = tokio::spawn(server::serve(listener, health, async move {
        let _ = server_stop.wait_for(|stopping| *stopping).await;
    }));
    info!(%listen, "serving /metrics, /healthz and /readyz");

    let signals = wait_for_signal().map_err(RuntimeError::Signals)?;
    tokio::spawn(async move {
        signals.await;
        info!("stop signal received");
        let _ = stop_tx.send(true);
    });

    let broker = settings.broker.to_string();
    let mut state = ProcessState {
        dedup: DedupCache::new(
            usize::try_from(config.dedup.capacity).unwrap_or(usize::MAX),
            config.dedup.window.as_std(),
        ),
        sink: SinkHealth::new(),
    };
    let mut backoff = RECONNECT_BACKOFF_MIN;
    let mut was_connected = false;
    while !*stop.borrow() {
        let started = tokio::select! {
            started = Session::start(&worker, &settings.broker) => started,
            _ = stop.wait_for(|stopping| *stopping) => break,
        };
        match started {
            Ok(session) => {
                if was_connected {
                    metrics.reconnects.inc();
                    info!(%broker, "reconnected");
                } else {
                    info!(%broker, "connected");
                }
                was_connected = true;
                backoff = RECONNECT_BACKOFF_MIN;
                match session
                    .run(&mut stop, &mut state, config.shutdown_grace.as_std())
                    .await
                {
                    SessionEnd::Stopped { settled } => {
                        info!(settled, "stopped");
                        break;
                    }
                    SessionEnd::Lost(e) => warn!("{e}; reconnecting"),
                }
            }
            Err(e) => warn!("{e}; retrying in {backoff:?}"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|stopping| *stopping) => break,
        }
        backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }
    let _ = server.await;
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT.
fn wait_for_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
