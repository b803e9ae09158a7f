//! The monitoring server every service runs: `/healthz`, `/readyz`, `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::readiness::Readiness;

/// The service's metric registry, shared between the code that registers metrics and `/metrics`.
#[derive(Clone, Default)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Runs `f` with the registry to register metrics.
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        f(&mut self.registry.lock());
    }

    /// The registry in OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry.lock()) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

#[derive(Clone)]
struct MonitoringState {
    readiness: Readiness,
    metrics: Metrics,
}

/// The monitoring routes, for services that mount extra routes beside them.
pub fn monitoring_router(readiness: Readiness, metrics: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(MonitoringState { readiness, metrics })
}

/// Serves the monitoring routes on `listener` until `shutdown` resolves.
pub async fn serve_monitoring(
    listener: TcpListener,
    readiness: Readiness,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, monitoring_router(readiness, metrics))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn readyz(State(s): State<MonitoringState>) -> impl IntoResponse {
    if s.readiness.is_ready() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", s.readiness.unmet().join(", ")),
        )
    }
}

async fn metrics_handler(State(s): State<MonitoringState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[tokio::test]
    async fn serves_health_readiness_and_metrics() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let readiness = Readiness::new(&["store"]);
        let metrics = Metrics::default();
        let c = Counter::<u64>::default();
        metrics.register(|r| r.register("test_events", "Events seen", c.clone()));
        c.inc();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_monitoring(
            listener,
            readiness.clone(),
            metrics,
            async move {
                let _ = rx.await;
            },
        ));
        let base = format!("http://{addr}");
        let get = |p: &str| reqwest::get(format!("{base}{p}"));
        assert_eq!(get("/healthz").await.unwrap().status(), 200);
        assert_eq!(get("/readyz").await.unwrap().status(), 503);
        readiness.set("store", true);
        assert_eq!(get("/readyz").await.unwrap().status(), 200);
        let body = get("/metrics").await.unwrap().text().await.unwrap();
        assert!(body.contains("test_events_total 1"), "{body}");
        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
