//! The dashboard's HTTP routes: the page itself and the JSON it polls.
//!
//! - `GET /`: the page.
//! - `GET /api/graph?window=SECONDS`: nodes and edges over the window (default 60 s), plus the
//!   outcome of the last scrape of every proxy.
//! - `GET /api/services/{name}?minutes=M`: the service's golden signals in 10 s steps over the
//!   last M minutes (default 5) and the configuration that applies to it, read from Galley.
//! - `GET /api/sync`: every proxy's xDS sync state, read from Pilot's `/debug/syncz`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use mesh_proto::config::ConfigObject;
use serde::Deserialize;
use serde_json::{Value, json};

use super::collector::SharedHistory;
use super::graph;
use crate::galley_api::GalleyApi;

/// The page, one self-contained file.
const PAGE: &str = include_str!("page.html");

/// Kinds whose objects can apply to a service.
const CONFIG_KINDS: [&str; 5] = [
    "VirtualService",
    "DestinationRule",
    "AuthorizationPolicy",
    "PeerAuthentication",
    "RequestAuthentication",
];

/// What the routes read.
#[derive(Clone)]
pub struct DashState {
    pub history: SharedHistory,
    pub galley: Arc<GalleyApi>,
    pub pilot_debug: String,
    pub http: reqwest::Client,
}

pub fn router(state: DashState) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/api/graph", get(graph_json))
        .route("/api/services/{name}", get(service_json))
        .route("/api/sync", get(sync_json))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

#[derive(Debug, Deserialize)]
struct GraphQuery {
    window: Option<f64>,
}

async fn graph_json(State(s): State<DashState>, Query(q): Query<GraphQuery>) -> Response {
    let window = q.window.unwrap_or(60.0).clamp(2.0, 600.0);
    let Ok(h) = s.history.read() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "history lock poisoned");
    };
    let Some((at, now)) = h.latest() else {
        return Json(json!({"window_seconds": window, "nodes": [], "edges": [], "scrapes": []}))
            .into_response();
    };
    let before = h.at_or_before(at, Duration::from_secs_f64(window));
    let (seconds, before) = match &before {
        Some((t, snap)) if *t < at => (at.duration_since(*t).as_secs_f64(), Some(snap.as_ref())),
        _ => (window, None),
    };
    let g = graph::graph(&now, before, seconds);
    let mut v = json!(g);
    v["scrapes"] = json!(h.status);
    Json(v).into_response()
}

#[derive(Debug, Deserialize)]
struct ServiceQuery {
    minutes: Option<u64>,
}

/// Steps of the golden-signal history.
const STEP: Duration = Duration::from_secs(10);

async fn service_json(
    State(s): State<DashState>,
    Path(name): Path<String>,
    Query(q): Query<ServiceQuery>,
) -> Response {
    let minutes = q.minutes.unwrap_or(5).clamp(1, 10);
    let signals = {
        let Ok(h) = s.history.read() else {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "history lock poisoned");
        };
        signal_steps(&h, &name, Duration::from_secs(minutes * 60))
    };
    let mut config = Vec::new();
    let mut config_errors = Vec::new();
    for kind in CONFIG_KINDS {
        match s.galley.list(kind, None).await {
            Ok(items) => config.extend(items.into_iter().filter(|o| applies_to(o, &name))),
            Err(e) => config_errors.push(e.to_string()),
        }
    }
    Json(json!({
        "service": name,
        "signals": signals,
        "config": config,
        "config_errors": config_errors,
    }))
    .into_response()
}

fn signal_steps(h: &super::collector::History, name: &str, span: Duration) -> Vec<graph::Signals> {
    let Some((at, _)) = h.latest() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut end = Duration::ZERO;
    while end < span {
        let start = end + STEP;
        let (Some((t_end, snap_end)), Some((t_start, snap_start))) =
            (h.at_or_before(at, end), h.at_or_before(at, start))
        else {
            break;
        };
        if t_start >= t_end {
            break;
        }
        let seconds = t_end.duration_since(t_start).as_secs_f64();
        let ago = at.duration_since(t_end).as_secs_f64();
        out.push(graph::service_signals(
            name,
            &snap_end,
            Some(&snap_start),
            seconds,
            ago,
        ));
        end = start;
    }
    out.reverse();
    out
}

/// Whether `host` (short, `name.ns`, or an FQDN) names service `name`.
fn names(host: &str, name: &str) -> bool {
    host == name
        || host
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Whether a configuration object applies to service `name`: a VirtualService for its host or
/// routing to it, its DestinationRule, or a policy selecting its workloads (or its whole
/// namespace or mesh, without a selector).
fn applies_to(o: &ConfigObject, name: &str) -> bool {
    let spec = o.body.get("spec").cloned().unwrap_or(Value::Null);
    let str_names = |v: &Value| v.as_str().is_some_and(|h| names(h, name));
    match o.kind.as_str() {
        "VirtualService" => {
            let hosts = spec["hosts"]
                .as_array()
                .is_some_and(|a| a.iter().any(str_names));
            let routes = ["http", "tcp", "tls"].iter().any(|proto| {
                spec[proto].as_array().is_some_and(|rules| {
                    rules.iter().any(|r| {
                        r["route"].as_array().is_some_and(|ds| {
                            ds.iter().any(|d| str_names(&d["destination"]["host"]))
                        })
                    })
                })
            });
            hosts || routes
        }
        "DestinationRule" => str_names(&spec["host"]),
        _ => match spec["selector"]["matchLabels"].as_object() {
            Some(labels) if !labels.is_empty() => labels.get("app").is_some_and(|a| a == name),
            _ => true,
        },
    }
}

async fn sync_json(State(s): State<DashState>) -> Response {
    let url = format!("{}/debug/syncz", s.pilot_debug.trim_end_matches('/'));
    let res = async {
        let resp = s.http.get(&url).send().await.map_err(|e| e.to_string())?;
        resp.json::<Value>().await.map_err(|e| e.to_string())
    }
    .await;
    match res {
        Ok(v) => Json(json!({"proxies": v})).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, format!("{url}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(kind: &str, spec: Value) -> ConfigObject {
        serde_json::from_value(json!({
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": kind,
            "metadata": {"name": "x", "namespace": "default"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn finds_the_config_of_a_service() {
        let vs = obj(
            "VirtualService",
            json!({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]}),
        );
        assert!(applies_to(&vs, "reviews"));
        assert!(!applies_to(&vs, "ratings"));
        assert!(!applies_to(&vs, "review"));
        let gw_vs = obj(
            "VirtualService",
            json!({"hosts": ["*"], "http": [{"route": [{"destination": {"host": "productpage.default.svc.cluster.local"}}]}]}),
        );
        assert!(applies_to(&gw_vs, "productpage"));
        let dr = obj(
            "DestinationRule",
            json!({"host": "ratings.default.svc.cluster.local"}),
        );
        assert!(applies_to(&dr, "ratings"));
        assert!(!applies_to(&dr, "reviews"));
        let deny = obj(
            "AuthorizationPolicy",
            json!({"selector": {"matchLabels": {"app": "ratings"}}, "action": "DENY"}),
        );
        assert!(applies_to(&deny, "ratings"));
        assert!(!applies_to(&deny, "reviews"));
        let mesh = obj("PeerAuthentication", json!({"mtls": {"mode": "STRICT"}}));
        assert!(applies_to(&mesh, "reviews"));
    }
}
