//! The HTTP port of the operator and of `logstream dev`: `/metrics` (OpenMetrics text),
//! `/healthz` (the process answers) and `/readyz` (startup checks passed), plus any routes
//! merged in with [`router_with`] (the dashboard).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::net::TcpListener;

/// What `/metrics` serves: a registry's text exposition.
pub trait MetricsText: Send + Sync {
    /// The OpenMetrics text of every metric.
    fn render(&self) -> String;
}

/// Metrics shared by the server and the code that records them.
pub type SharedMetrics = Arc<dyn MetricsText>;

/// Readiness of this replica.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    /// Marks the replica ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether the replica is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct Shared {
    metrics: SharedMetrics,
    health: Arc<Health>,
}

/// The routes of the HTTP port.
pub fn router(metrics: SharedMetrics, health: Arc<Health>) -> Router {
    router_with(metrics, health, Router::new())
}

/// The routes of the HTTP port with `extra` routes merged in, e.g.
/// `router_with(metrics, health, dashboard::router(dashboard))`.
pub fn router_with(metrics: SharedMetrics, health: Arc<Health>, extra: Router) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(Shared { metrics, health })
        .merge(extra)
}

/// Serves [`router`] on `listener` until the process ends.
pub async fn serve(
    listener: TcpListener,
    metrics: SharedMetrics,
    health: Arc<Health>,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, health)).await
}

async fn metrics_text(State(shared): State<Shared>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.render(),
    )
}

async fn readyz(State(shared): State<Shared>) -> impl IntoResponse {
    if shared.health.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::{encoding::text::encode, metrics::gauge::Gauge, registry::Registry};

    use super::*;

    struct OneGauge(Registry);

    impl MetricsText for OneGauge {
        fn render(&self) -> String {
            let mut text = String::new();
            let _ = encode(&mut text, &self.0);
            text
        }
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness_on_one_port() {
        let mut registry = Registry::default();
        let gauge = Gauge::<i64>::default();
        registry.register("logstream_test_gauge", "a gauge", gauge.clone());
        gauge.set(1);
        let health = Arc::new(Health::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(serve(
            listener,
            Arc::new(OneGauge(registry)),
            health.clone(),
        ));
        let get = |path: &str| {
            let url = format!("{base}{path}");
            async move {
                let r = reqwest::get(url).await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        };
        assert_eq!(get("/healthz").await, (200, "ok".to_owned()));
        assert_eq!(get("/readyz").await.0, 503);
        health.set_ready(true);
        assert_eq!(get("/readyz").await, (200, "ready".to_owned()));
        let (code, text) = get("/metrics").await;
        assert_eq!(code, 200);
        assert!(text.contains("logstream_test_gauge 1"), "{text}");
    }
}
