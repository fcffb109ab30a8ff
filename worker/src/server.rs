//! The worker's HTTP endpoints on one port: `/metrics` (OpenMetrics text), `/healthz` (the
//! process answers) and `/readyz` (200 only while the broker connection and the consumer are
//! up, so a Service stops sending scrapes or probes nowhere useful).

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// The OpenMetrics text format's content type (what [`Metrics::render`] writes).
const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the endpoints report.
#[derive(Clone, Debug)]
pub struct Health {
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// True while the AMQP connection and the consumer are up.
    pub ready: Arc<AtomicBool>,
}

/// The routes.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(health)
}

async fn metrics(State(health): State<Health>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, OPENMETRICS_TEXT)],
        health.metrics.render(),
    )
}

async fn ready(State(health): State<Health>) -> impl IntoResponse {
    if health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no broker connection or consumer\n",
        )
    }
}

/// Serves the endpoints on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(health))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn metrics_are_openmetrics_text_and_readiness_follows_the_flag() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let health = Health {
            metrics: Arc::new(Metrics::new("app", "out")),
            ready: Arc::new(AtomicBool::new(false)),
        };
        let ready = Arc::clone(&health.ready);
        let server = tokio::spawn(serve(listener, health, std::future::pending()));
        let get = |path: &str| reqwest::get(format!("http://{address}{path}"));

        let metrics = get("/metrics").await.unwrap();
        assert_eq!(
            metrics.headers()[header::CONTENT_TYPE].to_str().unwrap(),
            OPENMETRICS_TEXT
        );
        let text = metrics.text().await.unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(get("/healthz").await.unwrap().status(), StatusCode::OK);
        assert_eq!(
            get("/readyz").await.unwrap().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        ready.store(true, Ordering::Relaxed);
        assert_eq!(get("/readyz").await.unwrap().status(), StatusCode::OK);
        server.abort();
    }
}
