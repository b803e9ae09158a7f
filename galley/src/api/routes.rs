//! The HTTP apply API: `POST /apis/v1/apply`, `GET /apis/v1/{kind}`,
//! `DELETE /apis/v1/{kind}/{namespace}/{name}`, `GET /apis/v1/history`,
//! `POST /apis/v1/rollback/{rev}`.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use mesh_proto::config::Kind;
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use serde_json::json;

use super::kube::KubeWriter;
use crate::source::Document;
use crate::store::{Change, HistoryFilter, Store, StoreError};
use crate::validate::{Checked, ValidationError, check_document, check_text};

/// The header naming the source file of an apply body (used in error positions).
pub const SOURCE_HEADER: &str = "x-mesh-source";

/// Counters of the apply API.
#[derive(Debug, Clone, Default)]
pub struct ApiMetrics {
    /// `galley_api_applies_total`: accepted apply requests.
    pub applies: Counter,
    /// `galley_api_rejected_applies_total`: apply requests refused as invalid.
    pub rejected: Counter,
    /// `galley_api_kube_write_errors_total`: with `--kube`, writes the API server refused or
    /// that could not reach it.
    pub kube_write_errors: Counter,
    /// `galley_api_kube_read_your_write_timeouts_total`: with `--kube`, writes the API server
    /// took that this replica's watch did not deliver within the wait.
    pub kube_wait_timeouts: Counter,
}

impl ApiMetrics {
    pub fn register(metrics: &mesh_runtime::Metrics) -> ApiMetrics {
        let m = ApiMetrics::default();
        metrics.register(|r| {
            r.register(
                "galley_api_applies",
                "Apply requests stored",
                m.applies.clone(),
            );
            r.register(
                "galley_api_rejected_applies",
                "Apply requests rejected as invalid",
                m.rejected.clone(),
            );
            r.register(
                "galley_api_kube_write_errors",
                "Writes to the Kubernetes API server refused or failed (--kube)",
                m.kube_write_errors.clone(),
            );
            r.register(
                "galley_api_kube_read_your_write_timeouts",
                "Writes accepted by the API server but not delivered by this replica's watch in time (--kube)",
                m.kube_wait_timeouts.clone(),
            );
        });
        m
    }
}

#[derive(Clone)]
pub(super) struct ApiState {
    pub(super) store: Store,
    pub(super) metrics: ApiMetrics,
    /// `--kube`: the API server is the store; writes go there (`super::kube_routes`).
    pub(super) kube: Option<KubeWriter>,
}

/// The API routes over `store`.
pub fn api_router(store: Store, metrics: ApiMetrics) -> Router {
    router(ApiState {
        store,
        metrics,
        kube: None,
    })
}

/// The API routes with `--kube`: reads from `store` (fed by the watches), writes through
/// `writer` to the API server; history and rollback answer 501.
pub fn kube_api_router(store: Store, metrics: ApiMetrics, writer: KubeWriter) -> Router {
    router(ApiState {
        store,
        metrics,
        kube: Some(writer),
    })
}

fn router(state: ApiState) -> Router {
    Router::new()
        .route("/apis/v1/apply", post(apply))
        .route("/apis/v1/history", get(history))
        .route("/apis/v1/rollback/{rev}", post(rollback))
        .route("/apis/v1/{kind}", get(list))
        .route("/apis/v1/{kind}/{namespace}/{name}", delete(remove))
        .with_state(state)
}

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

async fn apply(State(s): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let source = headers
        .get(SOURCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .unwrap_or("request")
        .to_string();
    let Ok(text) = std::str::from_utf8(&body) else {
        s.metrics.rejected.inc();
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"errors": [{"file": source, "line": 0, "kind": "", "namespace": "", "name": "", "field": "", "message": "body is not UTF-8 text"}]})),
        )
            .into_response();
    };
    let report = check_text(&source, text);
    if !report.errors.is_empty() {
        s.metrics.rejected.inc();
        for e in &report.errors {
            tracing::info!(error = %e, "apply rejected");
        }
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"errors": report.errors})),
        )
            .into_response();
    }
    if let Some(writer) = &s.kube {
        return super::kube_routes::apply(&s, writer, &source, report).await;
    }
    let changes = report
        .objects
        .into_iter()
        .map(|v| Change::Put(v.kind, v.object))
        .collect();
    match s.store.apply(changes).await {
        Ok(res) => {
            s.metrics.applies.inc();
            tracing::info!(source = %source, objects = res.applied.len(), revision = res.revision, "apply stored");
            Json(json!({"applied": res.applied, "skipped": report.skipped})).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "apply could not be stored");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    namespace: Option<String>,
}

fn unknown_kind(name: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("unknown kind {name:?}"))
}

async fn list(
    State(s): State<ApiState>,
    Path(kind): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    let Some(kind) = Kind::from_name(&kind) else {
        return unknown_kind(&kind);
    };
    match s
        .store
        .list(kind, q.namespace.as_deref().filter(|n| !n.is_empty()))
    {
        Ok(items) => Json(json!({"items": items})).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn remove(
    State(s): State<ApiState>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Response {
    let Some(kind) = Kind::from_name(&kind) else {
        return unknown_kind(&kind);
    };
    if let Some(writer) = &s.kube {
        return super::kube_routes::remove(&s, writer, kind, &namespace, &name).await;
    }
    match s.store.delete(kind, &namespace, &name).await {
        Ok(Some(revision)) => Json(json!({"deleted": {
            "kind": kind.info().kind, "namespace": namespace, "name": name, "revision": revision
        }}))
        .into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("{} {namespace}/{name} not found", kind.info().kind),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

/// `GET /apis/v1/history[?kind=K&namespace=NS&name=N]` → `{"revision", "floor", "items":
/// [{"rev","time","op","kind","namespace","name"}]}`, oldest first.
async fn history(State(s): State<ApiState>, Query(q): Query<HistoryQuery>) -> Response {
    if s.kube.is_some() {
        return super::kube_routes::no_history();
    }
    let nonempty = |v: Option<String>| v.filter(|v| !v.is_empty());
    let kind = match nonempty(q.kind) {
        Some(k) => match Kind::from_name(&k) {
            Some(kind) => Some(kind),
            None => return unknown_kind(&k),
        },
        None => None,
    };
    let filter = HistoryFilter {
        kind,
        namespace: nonempty(q.namespace),
        name: nonempty(q.name),
    };
    let floor = match s.store.history_floor() {
        Ok(f) => f,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    match s.store.history(&filter) {
        Ok(entries) => {
            let items: Vec<_> = entries.iter().map(|e| e.summary()).collect();
            Json(json!({"revision": s.store.revision(), "floor": floor, "items": items}))
                .into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Every validation error of the objects a rollback would write back.
fn check_restored(target: u64, changes: &[Change]) -> Result<(), Vec<ValidationError>> {
    let mut errs = Vec::new();
    for change in changes {
        let Change::Put(_, obj) = change else {
            continue;
        };
        let value = match serde_json::to_value(obj) {
            Ok(v) => v,
            Err(e) => {
                errs.push(ValidationError {
                    file: format!("revision {target}"),
                    line: 0,
                    kind: obj.kind.clone(),
                    namespace: obj.metadata.namespace.clone(),
                    name: obj.metadata.name.clone(),
                    field: String::new(),
                    message: e.to_string(),
                });
                continue;
            }
        };
        let doc = Document {
            file: format!("revision {target}"),
            line: 0,
            value,
        };
        if let Checked::Invalid(e) = check_document(&doc) {
            errs.extend(e);
        }
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

/// `POST /apis/v1/rollback/{rev}`: the store's content becomes what it was at `rev`, as one new
/// revision → 200 `{"revision", "applied"}`; objects that no longer validate → 400 `{"errors"}`
/// and nothing changes; a revision after the current one → 404; before the history → 410.
async fn rollback(State(s): State<ApiState>, Path(rev): Path<String>) -> Response {
    if s.kube.is_some() {
        return super::kube_routes::no_history();
    }
    let Ok(target) = rev.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{rev:?} is not a revision number"),
        );
    };
    match s
        .store
        .rollback(target, |changes| check_restored(target, changes))
        .await
    {
        Ok(Ok(res)) => {
            s.metrics.applies.inc();
            let applied: Vec<_> = res.applied.iter().filter(|a| a.changed).collect();
            Json(json!({"revision": res.revision, "rolled_back_to": target, "applied": applied}))
                .into_response()
        }
        Ok(Err(errors)) => {
            s.metrics.rejected.inc();
            for e in &errors {
                tracing::info!(error = %e, target, "rollback rejected");
            }
            (StatusCode::BAD_REQUEST, Json(json!({"errors": errors}))).into_response()
        }
        Err(e @ StoreError::FutureRevision { .. }) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ StoreError::BeforeHistory { .. }) => error(StatusCode::GONE, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
