//! The webhook's HTTP routes: content type and body checks, then [`review`].

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prometheus_client::metrics::counter::Counter;
use serde_json::Value;

use super::review::review;
use crate::source::MAX_TEXT_BYTES;

/// The paths the webhook answers on (Istio's names: one generic, one per component).
pub const WEBHOOK_PATHS: [&str; 3] = ["/validate", "/admitpilot", "/admitmixer"];

/// Counters of the webhook.
#[derive(Debug, Clone, Default)]
pub struct WebhookMetrics {
    /// `galley_webhook_allowed_total`: reviews answered `allowed: true`.
    pub allowed: Counter,
    /// `galley_webhook_denied_total`: reviews answered `allowed: false`.
    pub denied: Counter,
    /// `galley_webhook_bad_requests_total`: requests answered 400 or 415.
    pub bad_requests: Counter,
}

impl WebhookMetrics {
    pub fn register(metrics: &mesh_runtime::Metrics) -> WebhookMetrics {
        let m = WebhookMetrics::default();
        metrics.register(|r| {
            r.register(
                "galley_webhook_allowed",
                "Admission reviews allowed",
                m.allowed.clone(),
            );
            r.register(
                "galley_webhook_denied",
                "Admission reviews denied",
                m.denied.clone(),
            );
            r.register(
                "galley_webhook_bad_requests",
                "Admission requests refused (not JSON, empty, not an AdmissionReview)",
                m.bad_requests.clone(),
            );
        });
        m
    }
}

/// The webhook routes ([`WEBHOOK_PATHS`]).
pub fn webhook_router(metrics: WebhookMetrics) -> Router {
    let mut router = Router::new();
    for path in WEBHOOK_PATHS {
        router = router.route(path, post(admit));
    }
    router
        .layer(DefaultBodyLimit::max(MAX_TEXT_BYTES))
        .with_state(metrics)
}

fn refuse(m: &WebhookMetrics, status: StatusCode, message: String) -> Response {
    m.bad_requests.inc();
    tracing::debug!(status = status.as_u16(), %message, "admission request refused");
    (status, message).into_response()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

async fn admit(State(m): State<WebhookMetrics>, headers: HeaderMap, body: Bytes) -> Response {
    if !is_json(&headers) {
        return refuse(
            &m,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content type must be application/json".into(),
        );
    }
    if body.is_empty() {
        return refuse(&m, StatusCode::BAD_REQUEST, "empty body".into());
    }
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return refuse(
                &m,
                StatusCode::BAD_REQUEST,
                format!("body is not JSON: {e}"),
            );
        }
    };
    // The checks are CPU work: keep them off the I/O threads.
    let answer = tokio::task::spawn_blocking(move || review(&value)).await;
    match answer {
        Ok(Ok(answer)) => {
            if answer["response"]["allowed"] == Value::Bool(true) {
                m.allowed.inc();
            } else {
                m.denied.inc();
            }
            axum::Json(answer).into_response()
        }
        Ok(Err(e)) => refuse(&m, StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => {
            tracing::error!(error = %e, "admission review task failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "review failed").into_response()
        }
    }
}
