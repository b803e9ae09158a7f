//! The admin HTTP server.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use mesh_runtime::{Metrics, Readiness};

use crate::tls::IdentitySlot;
use crate::xds::{NodeInfo, SharedConfig};

#[derive(Clone)]
struct AdminState {
    readiness: Readiness,
    metrics: Metrics,
    config: SharedConfig,
    node: NodeInfo,
    identity: IdentitySlot,
}

/// `/healthz`, `/readyz`, `/metrics` (shared monitoring routes) plus `/ready`,
/// `/stats/prometheus` and `/config_dump`.
pub fn admin_router(
    readiness: Readiness,
    metrics: Metrics,
    config: SharedConfig,
    node: NodeInfo,
    identity: IdentitySlot,
) -> Router {
    let own = Router::new()
        .route("/ready", get(ready))
        .route("/stats/prometheus", get(prometheus))
        .route("/config_dump", get(config_dump))
        .with_state(AdminState {
            readiness: readiness.clone(),
            metrics: metrics.clone(),
            config,
            node,
            identity,
        });
    mesh_runtime::monitoring_router(readiness, metrics).merge(own)
}

async fn ready(State(s): State<AdminState>) -> impl IntoResponse {
    if s.readiness.is_ready() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", s.readiness.unmet().join(", ")),
        )
    }
}

async fn prometheus(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// `/config_dump`, serialized straight from the snapshot into one buffer. (Through a
/// `serde_json::Value` first, the tree of a 1,000-service config took some 11 MB of small
/// allocations at once; freed, they stayed in the heap as resident memory of an idle proxy.)
#[derive(serde::Serialize)]
struct ConfigDump<'a> {
    node: NodeDump<'a>,
    identity: IdentityDump,
    versions: &'a crate::xds::Versions,
    listeners: &'a std::collections::BTreeMap<String, crate::xds::Listener>,
    routes: &'a std::collections::BTreeMap<String, std::sync::Arc<crate::routing::RouteTable>>,
    clusters: &'a std::collections::BTreeMap<String, std::sync::Arc<crate::cluster::Cluster>>,
    endpoints: &'a std::collections::BTreeMap<String, std::sync::Arc<crate::cluster::Endpoints>>,
    access_logs: &'a std::collections::BTreeMap<
        String,
        std::sync::Arc<crate::xds::access_log::ListenerLogs>,
    >,
}

#[derive(serde::Serialize)]
struct NodeDump<'a> {
    id: String,
    #[serde(rename = "type")]
    proxy_type: &'a crate::xds::ProxyType,
    namespace: &'a str,
    service_account: &'a str,
    labels: &'a std::collections::BTreeMap<String, String>,
}

#[derive(serde::Serialize)]
struct IdentityDump {
    held: bool,
    spiffe_id: Option<String>,
}

async fn config_dump(State(s): State<AdminState>) -> impl IntoResponse {
    let config = s.config.load();
    let spiffe_id = s.identity.get().map(|i| i.spiffe_id());
    let dump = ConfigDump {
        node: NodeDump {
            id: s.node.node_id(),
            proxy_type: &s.node.proxy_type,
            namespace: &s.node.namespace,
            service_account: &s.node.service_account,
            labels: &s.node.labels,
        },
        identity: IdentityDump {
            held: spiffe_id.is_some(),
            spiffe_id,
        },
        versions: &config.versions,
        listeners: &config.listeners,
        routes: &config.routes,
        clusters: &config.clusters,
        endpoints: &config.endpoints,
        access_logs: &config.access_logs,
    };
    match serde_json::to_vec(&dump) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("config_dump: {e}\n").into_bytes(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::{ProxyType, XdsState, testdata::*};
    use axum::body::Body;
    use http_body_util::BodyExt;
    use mesh_proto::type_url;
    use tower::ServiceExt;

    async fn get(app: &Router, path: &str) -> (StatusCode, String) {
        let resp = app
            .clone()
            .oneshot(axum::http::Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn ready_stats_and_config_dump() {
        let readiness = Readiness::new(&["xds", "identity"]);
        let metrics = Metrics::default();
        let pm = crate::admin::ProxyMetrics::register(&metrics);
        pm.xds("lds", "ack");
        let w = crate::http::Workload::unknown();
        let party = crate::http::Party {
            workload: &w,
            principal: "",
        };
        let labels = crate::http::request_labels(
            crate::http::Reporter::Source,
            &party,
            &party,
            &crate::http::Service::from_fqdn("reviews.default.svc.cluster.local"),
            crate::http::Outcome {
                response_code: 200,
                response_flags: "-",
                mtls: false,
            },
        );
        pm.record_request(&labels, std::time::Duration::from_millis(3), 5, 2000);
        let mut st = XdsState::default();
        let (_, cfg) = st
            .apply(
                type_url::LISTENER,
                "7",
                &[listener_any("virtualOutbound", "http_proxy")],
            )
            .unwrap();
        let config = SharedConfig::new(cfg);
        let node = NodeInfo {
            proxy_type: ProxyType::Sidecar,
            ip: "127.0.0.1".into(),
            pod: "p".into(),
            workload_name: None,
            namespace: "default".into(),
            service_account: "sa".into(),
            labels: Default::default(),
        };
        let app = admin_router(
            readiness.clone(),
            metrics,
            config,
            node,
            IdentitySlot::default(),
        );
        let (s, body) = get(&app, "/ready").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("identity, xds"), "{body}");
        readiness.set("xds", true);
        readiness.set("identity", true);
        assert_eq!(get(&app, "/ready").await.0, StatusCode::OK);
        assert_eq!(get(&app, "/readyz").await.0, StatusCode::OK);
        assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);
        let (_, stats) = get(&app, "/stats/prometheus").await;
        assert!(
            stats.contains(r#"proxy_xds_updates_total{type="lds",result="ack"} 1"#),
            "{stats}"
        );
        for want in [
            "# TYPE istio_requests counter",
            "# TYPE istio_request_duration_milliseconds histogram",
            "# TYPE istio_request_bytes histogram",
            "# TYPE istio_response_bytes histogram",
            r#"destination_service_name="reviews",destination_service_namespace="default""#,
        ] {
            assert!(stats.contains(want), "{want} in {stats}");
        }
        let bucket = |name: &str, le: &str| {
            stats
                .lines()
                .find(|l| {
                    l.starts_with(&format!("{name}_bucket{{"))
                        && l.contains(&format!("le=\"{le}\""))
                })
                .unwrap_or_else(|| panic!("{name} le={le} in {stats}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_string()
        };
        // 3 ms: not in the 1 ms bucket, in the 5 ms one; Istio's bucket bounds are there.
        assert_eq!(bucket("istio_request_duration_milliseconds", "1.0"), "0");
        assert_eq!(bucket("istio_request_duration_milliseconds", "5.0"), "1");
        assert_eq!(
            bucket("istio_request_duration_milliseconds", "3600000.0"),
            "1"
        );
        assert_eq!(bucket("istio_response_bytes", "1000.0"), "0");
        assert_eq!(bucket("istio_response_bytes", "10000.0"), "1");
        assert_eq!(bucket("istio_request_bytes", "10000000.0"), "1");
        let (_, metrics) = get(&app, "/metrics").await;
        assert_eq!(metrics, stats);
        let (_, dump) = get(&app, "/config_dump").await;
        let v: serde_json::Value = serde_json::from_str(&dump).unwrap();
        assert_eq!(v["versions"]["listeners"], "7");
        assert_eq!(
            v["listeners"]["virtualOutbound"]["route_config_name"],
            "http_proxy"
        );
        assert_eq!(v["node"]["type"], "sidecar");
        // Every section is there, with the shape the Value-built dump had.
        assert_eq!(v["identity"]["held"], false);
        assert!(v["identity"]["spiffe_id"].is_null());
        for section in ["routes", "clusters", "endpoints", "access_logs"] {
            assert!(v[section].is_object(), "{section}: {}", v[section]);
        }
    }
}
