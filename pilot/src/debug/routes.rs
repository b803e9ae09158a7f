//! `/debug/syncz`, `/debug/config_dump?proxyID=`, `/debug/registryz`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;

use super::render;
use crate::model::{RegistryCache, Service, ServiceOrigin};
use crate::translate::{Options, translate};
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
    let services: Vec<serde_json::Value> = reg.services.values().map(service_summary).collect();
    Json(json!({
        "services": services,
        "virtualServices": reg.virtual_services,
        "destinationRules": reg.destination_rules.values().collect::<Vec<_>>(),
        "gateways": reg.gateways,
        "problems": reg.problems,
    }))
}

/// One registry service: hosts, ports, endpoint counts and where it is defined.
fn service_summary(svc: &Service) -> serde_json::Value {
    let mut addresses = BTreeSet::new();
    let endpoints_by_port: BTreeMap<String, usize> = svc
        .instances
        .iter()
        .map(|(port, instances)| {
            addresses.extend(instances.iter().map(|i| (i.ip.as_str(), i.port)));
            (port.to_string(), instances.len())
        })
        .collect();
    let origin = match &svc.origin {
        ServiceOrigin::Kubernetes => "Kubernetes".to_string(),
        ServiceOrigin::ServiceEntry { name } => format!("ServiceEntry {}/{name}", svc.namespace),
    };
    json!({
        "fqdn": svc.fqdn,
        "name": svc.name,
        "namespace": svc.namespace,
        "ports": svc.ports,
        "origin": origin,
        "resolution": svc.resolution,
        "meshExternal": svc.mesh_external,
        "addresses": svc.addresses,
        "exportTo": svc.export_to,
        "endpoints": addresses.len(),
        "endpointsByPort": endpoints_by_port,
        "serviceAccounts": svc.service_accounts(),
    })
}

async fn config_dump(
    State(s): State<DebugState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(id) = q.get("proxyID").filter(|s| !s.is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "missing query parameter proxyID (the proxy's node id, as /debug/syncz lists it)"})),
        )
            .into_response();
    };
    // The newest stream of that proxy (a reconnecting proxy may briefly have two).
    let Some(status) = s
        .status
        .list()
        .into_iter()
        .rev()
        .find(|p| &p.proxy_id == id)
    else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!(
                "proxy {id:?} is not connected to this pilot ({} connected; /debug/syncz lists them)",
                s.status.len()
            )})),
        )
            .into_response();
    };
    let reg = s.registry.current();
    let cfg = translate(&reg, &status.proxy, &s.options);
    let encoded = cfg.encode();
    let mut body = render::config(&cfg, &encoded, &reg);
    body["proxy"] = json!(status.proxy);
    body["sync"] = json!({"protocol": status.protocol, "types": status.types});
    Json(body).into_response()
}
