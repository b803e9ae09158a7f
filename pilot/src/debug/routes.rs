//! `/debug/syncz`, `/debug/config_dump?proxyID=`, `/debug/registryz`.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;

use super::render;
use crate::model::RegistryCache;
use crate::translate::{Options, ProxyInfo, translate};
use crate::xds::SyncStatus;

/// What the debug handlers read.
#[derive(Debug, Clone)]
pub struct DebugState {
    pub registry: RegistryCache,
    pub status: SyncStatus,
    pub options: Options,
}

/// The debug routes.
pub fn router(state: DebugState) -> Router {
    Router::new()
        .route("/debug/syncz", get(syncz))
        .route("/debug/config_dump", get(config_dump))
        .route("/debug/registryz", get(registryz))
        .with_state(state)
}

async fn syncz(State(s): State<DebugState>) -> Json<serde_json::Value> {
    Json(json!(s.status.list()))
}

async fn registryz(State(s): State<DebugState>) -> Json<serde_json::Value> {
    let reg = s.registry.current();
    Json(json!({
        "services": reg.services.values().collect::<Vec<_>>(),
        "virtualServices": reg.virtual_services,
        "destinationRules": reg.destination_rules.values().collect::<Vec<_>>(),
        "gateways": reg.gateways,
        "problems": reg.problems,
    }))
}

async fn config_dump(
    State(s): State<DebugState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(id) = q.get("proxyID").filter(|s| !s.is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "missing query parameter proxyID (the proxy's node id)"})),
        )
            .into_response();
    };
    // A connected proxy is rendered with its metadata (labels); otherwise from the id alone.
    let proxy = match s.status.proxy(id) {
        Some(p) => p,
        None => match ProxyInfo::from_id(id) {
            Ok(p) => p,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": e.to_string()})),
                )
                    .into_response();
            }
        },
    };
    let reg = s.registry.current();
    let cfg = translate(&reg, &proxy, &s.options);
    let encoded = cfg.encode();
    let mut body = render::config(&cfg, &encoded);
    body["proxy"] = json!(proxy);
    Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::galley_client::Snapshot;

    async fn get_json(app: Router, uri: &str) -> (StatusCode, serde_json::Value) {
        use tower::ServiceExt;
        let resp = app
            .oneshot(
                axum::http::Request::builder()
                    .uri(uri)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn dumps_registry_and_config() {
        let obj = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 9080}]}
        }))
        .unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(Arc::new(Snapshot::from_objects([obj])));
        let app = router(DebugState {
            registry: RegistryCache::new(rx, "cluster.local"),
            status: SyncStatus::default(),
            options: Options {
                trust_domain: "cluster.local".into(),
            },
        });
        let (st, reg) = get_json(app.clone(), "/debug/registryz").await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(
            reg["services"][0]["fqdn"],
            "reviews.default.svc.cluster.local"
        );
        let (st, sync) = get_json(app.clone(), "/debug/syncz").await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(sync, json!([]));
        let (st, dump) = get_json(
            app.clone(),
            "/debug/config_dump?proxyID=sidecar~1.2.3.4~p.default~default.svc.cluster.local",
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        // [0] is virtualInbound.
        assert_eq!(dump["listeners"]["resources"][1]["name"], "virtualOutbound");
        assert_eq!(
            dump["listeners"]["resources"][1]["filters"][0]["rds"],
            "http_proxy"
        );
        assert_eq!(
            dump["clusters"]["resources"][0]["name"],
            "outbound|9080||reviews.default.svc.cluster.local"
        );
        assert_eq!(dump["clusters"]["resources"][0]["type"], "EDS");
        assert_eq!(
            dump["routes"]["resources"][0]["virtualHosts"][0]["routes"][0]["action"]["clusters"][0]
                ["name"],
            "outbound|9080||reviews.default.svc.cluster.local"
        );
        let (st, _) = get_json(app, "/debug/config_dump?proxyID=garbage").await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
    }
}
