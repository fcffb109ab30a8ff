//! Waiting for the signal to stop, for the operator binary and `logstream dev` alike.

/// Resolves on SIGTERM (how Kubernetes stops a pod) or Ctrl-C (SIGINT).
pub async fn signalled() {
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
