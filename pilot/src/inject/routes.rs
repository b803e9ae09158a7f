//! The webhook's HTTP route `POST /inject`: content type and body checks, then [`review`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::Value;

use super::review::{Outcome, review};
use super::sidecar::InjectConfig;

/// The path the API server calls.
pub const INJECT_PATH: &str = "/inject";
/// Largest review body read (a Pod with a large spec fits many times over).
const MAX_BODY: usize = 8 * 1024 * 1024;

/// Label of `pilot_inject_reviews_total`: `injected`, `skipped`, `denied` or `bad_request`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// `pilot_inject_reviews_total{result}`: admission reviews answered.
#[derive(Debug, Clone, Default)]
pub struct InjectMetrics {
    pub reviews: Family<ResultLabel, Counter>,
}

impl InjectMetrics {
    pub fn register(metrics: &mesh_runtime::Metrics) -> InjectMetrics {
        let m = InjectMetrics::default();
        metrics.register(|r| {
            r.register(
                "pilot_inject_reviews",
                "Sidecar-injection admission reviews answered, by result",
                m.reviews.clone(),
            );
        });
        m
    }

    fn count(&self, result: &str) {
        self.reviews
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }
}

#[derive(Clone)]
struct InjectState {
    config: Arc<InjectConfig>,
    metrics: InjectMetrics,
}

/// The webhook router (`POST /inject`).
pub fn inject_router(config: InjectConfig, metrics: InjectMetrics) -> Router {
    Router::new()
        .route(INJECT_PATH, post(inject))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(InjectState {
            config: Arc::new(config),
            metrics,
        })
}

fn refuse(m: &InjectMetrics, status: StatusCode, message: String) -> Response {
    m.count("bad_request");
    tracing::debug!(status = status.as_u16(), %message, "injection request refused");
    (status, message).into_response()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

async fn inject(State(s): State<InjectState>, headers: HeaderMap, body: Bytes) -> Response {
    if !is_json(&headers) {
        return refuse(
            &s.metrics,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content type must be application/json".into(),
        );
    }
    if body.is_empty() {
        return refuse(&s.metrics, StatusCode::BAD_REQUEST, "empty body".into());
    }
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return refuse(
                &s.metrics,
                StatusCode::BAD_REQUEST,
                format!("body is not JSON: {e}"),
            );
        }
    };
    match review(&value, &s.config) {
        Ok((answer, outcome)) => {
            s.metrics.count(match outcome {
                Outcome::Injected => "injected",
                Outcome::Skipped => "skipped",
                Outcome::Denied => "denied",
            });
            axum::Json(answer).into_response()
        }
        Err(e) => refuse(&s.metrics, StatusCode::BAD_REQUEST, e.to_string()),
    }
}
