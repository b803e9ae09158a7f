//! The debug routes over a registry, with a real ADS client connected to an in-process server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use mesh_proto::config::ConfigObject;
use mesh_proto::envoy::envoy::config::core::v3::Node;
use mesh_proto::envoy::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_proto::envoy::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use mesh_proto::envoy::google::protobuf::{Struct, Value as PbValue, value::Kind as PbKind};
use mesh_proto::type_url;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tower::ServiceExt;

use super::{DebugState, router};
use crate::galley_client::Snapshot;
use crate::metrics::PilotMetrics;
use crate::model::RegistryCache;
use crate::translate::Options;
use crate::xds::{AdsServer, SyncStatus};

const PRODUCTPAGE: &str = "sidecar~127.0.0.9~productpage-v1.default~default.svc.cluster.local";
const REVIEWS: &str = "reviews.default.svc.cluster.local";

fn objects() -> Vec<ConfigObject> {
    [
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 9080}]}}),
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "reviews", "namespace": "default"},
            "subsets": [{"addresses": [
                {"ip": "127.0.0.1", "targetRef": {"kind": "Pod", "name": "reviews-v1"}},
                {"ip": "127.0.0.2", "targetRef": {"kind": "Pod", "name": "reviews-v3"}}],
                "ports": [{"name": "http", "port": 15006}]}]}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reviews-v1", "namespace": "default", "labels": {"app": "reviews", "version": "v1"}},
            "spec": {"serviceAccountName": "bookinfo-reviews"}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reviews-v3", "namespace": "default", "labels": {"app": "reviews", "version": "v3"}},
            "spec": {"serviceAccountName": "bookinfo-reviews"}}),
        json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "DestinationRule", "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v3", "labels": {"version": "v3"}}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mongo", "namespace": "default"},
            "spec": {"ports": [{"name": "tcp-mongo", "port": 27017}]}}),
        json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService", "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v3"}}]}]}}),
    ]
    .into_iter()
    .map(|o| serde_json::from_value(o).unwrap())
    .collect()
}

struct Harness {
    app: Router,
    status: SyncStatus,
    addr: std::net::SocketAddr,
    _snapshots: watch::Sender<Arc<Snapshot>>,
    _stop: watch::Sender<bool>,
}

/// An ADS server on 127.0.0.1:0 and the debug router over the same registry and status.
async fn start() -> Harness {
    let (snapshots, rx) = watch::channel(Arc::new(Snapshot::from_objects(objects())));
    let (stop, stop_rx) = watch::channel(false);
    let status = SyncStatus::default();
    let registry = RegistryCache::new(rx, "cluster.local");
    let options = Options {
        trust_domain: "cluster.local".into(),
    };
    let ads = AdsServer::new(
        registry.clone(),
        options.clone(),
        PilotMetrics::default(),
        status.clone(),
        stop_rx.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut stop_wait = stop_rx;
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(ads.into_service())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = stop_wait.wait_for(|s| *s).await;
            })
            .await
            .unwrap();
    });
    let app = router(DebugState {
        registry,
        status: status.clone(),
        options,
    });
    Harness {
        app,
        status,
        addr,
        _snapshots: snapshots,
        _stop: stop,
    }
}

async fn get_json(app: &Router, uri: &str) -> (StatusCode, Value) {
    let resp = app
        .clone()
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

struct Client {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: tonic::Streaming<DiscoveryResponse>,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Client {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        let rx = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Client { tx, rx }
    }

    async fn send(&self, type_url: &str, names: &[&str], version: &str, nonce: &str) {
        let meta = Struct {
            fields: [(
                "NAMESPACE".to_string(),
                PbValue {
                    kind: Some(PbKind::StringValue("default".into())),
                },
            )]
            .into_iter()
            .collect(),
        };
        self.tx
            .send(DiscoveryRequest {
                version_info: version.into(),
                node: Some(Node {
                    id: PRODUCTPAGE.into(),
                    metadata: Some(meta),
                    ..Node::default()
                }),
                resource_names: names.iter().map(|s| s.to_string()).collect(),
                type_url: type_url.into(),
                response_nonce: nonce.into(),
                ..DiscoveryRequest::default()
            })
            .await
            .unwrap();
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(10), self.rx.message())
            .await
            .expect("response in time")
            .unwrap()
            .expect("stream open")
    }

    /// Subscribes to `type_url` and ACKs the answer.
    async fn sync(&mut self, type_url: &str, names: &[&str]) -> DiscoveryResponse {
        self.send(type_url, names, "", "").await;
        let r = self.recv().await;
        assert_eq!(r.type_url, type_url);
        self.send(type_url, names, &r.version_info, &r.nonce).await;
        r
    }
}

/// Polls `/debug/syncz` until `ok` holds for the productpage entry (deadline 10 s).
async fn wait_syncz(app: &Router, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, v) = get_json(app, "/debug/syncz").await;
        assert_eq!(st, StatusCode::OK);
        if let Some(p) = v
            .as_array()
            .and_then(|a| a.iter().find(|p| p["proxy_id"] == PRODUCTPAGE))
            && ok(p)
        {
            return p.clone();
        }
        assert!(Instant::now() < deadline, "{what}: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn registryz_summarises_services() {
    let h = start().await;
    let (st, reg) = get_json(&h.app, "/debug/registryz").await;
    assert_eq!(st, StatusCode::OK);
    let services = reg["services"].as_array().unwrap();
    let svc = services.iter().find(|s| s["fqdn"] == REVIEWS).unwrap();
    assert_eq!(svc["origin"], "Kubernetes");
    assert_eq!(svc["ports"][0]["port"], 9080);
    assert_eq!(svc["endpoints"], 2);
    assert_eq!(svc["endpointsByPort"]["9080"], 2);
    assert_eq!(svc["serviceAccounts"], json!(["bookinfo-reviews"]));
    assert_eq!(reg["virtualServices"][0]["name"], "reviews");
    let mongo = services
        .iter()
        .find(|s| s["fqdn"] == "mongo.default.svc.cluster.local")
        .unwrap();
    assert_eq!(mongo["endpoints"], 0);
    assert_eq!(mongo["ports"][0]["port"], 27017);
}

#[tokio::test]
async fn config_dump_needs_a_connected_proxy() {
    let h = start().await;
    let (st, body) = get_json(&h.app, "/debug/config_dump").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("proxyID"),
        "{body}"
    );
    let (st, body) = get_json(&h.app, &format!("/debug/config_dump?proxyID={PRODUCTPAGE}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("not connected") && msg.contains("productpage-v1"),
        "{msg}"
    );
    let (_, sync) = get_json(&h.app, "/debug/syncz").await;
    assert_eq!(sync, json!([]));
}

#[tokio::test]
async fn syncz_and_config_dump_of_a_connected_proxy() {
    let h = start().await;
    let mut c = Client::connect(h.addr).await;
    let cds = c.sync(type_url::CLUSTER, &[]).await;
    let v3 = format!("outbound|9080|v3|{REVIEWS}");
    c.sync(type_url::ENDPOINT, &[&v3]).await;
    let lds = c.sync(type_url::LISTENER, &[]).await;
    // LDS not yet ACKed: sent but not acknowledged (until the ACK lands).
    let p = wait_syncz(&h.app, "cds, eds and lds acked", |p| {
        ["cds", "eds", "lds"].iter().all(|t| {
            !p["types"][t]["sent_version"].is_null()
                && p["types"][t]["sent_version"] == p["types"][t]["acked_version"]
        })
    })
    .await;
    assert_eq!(p["types"]["cds"]["acked_version"], cds.version_info);
    assert_eq!(p["types"]["lds"]["acked_version"], lds.version_info);
    assert!(p["types"]["rds"].is_null(), "rds never asked: {p}");
    assert_eq!(p["protocol"], "sotw");
    assert_eq!(p["proxy"]["namespace"], "default");
    assert_eq!(h.status.len(), 1);

    let (st, dump) = get_json(&h.app, &format!("/debug/config_dump?proxyID={PRODUCTPAGE}")).await;
    assert_eq!(st, StatusCode::OK, "{dump}");
    assert_eq!(dump["proxy"]["id"], PRODUCTPAGE);
    assert_eq!(dump["sync"]["protocol"], "sotw");
    assert_eq!(dump["clusters"]["version"], cds.version_info);
    let clusters = dump["clusters"]["resources"].as_array().unwrap();
    let c3 = clusters.iter().find(|c| c["name"] == v3.as_str()).unwrap();
    assert_eq!(c3["type"], "EDS");
    assert_eq!(c3["lbPolicy"], "ROUND_ROBIN");
    assert_eq!(c3["tls"]["sni"], format!("outbound_.9080_.v3_.{REVIEWS}"));
    // Listeners: the outbound one is HTTP with RDS http_proxy.
    let outbound = dump["listeners"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "virtualOutbound")
        .unwrap();
    assert_eq!(outbound["type"], "HTTP");
    assert!(
        outbound["filters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["rds"] == "http_proxy"),
        "{outbound}"
    );
    // A TCP service port has its own tcp_proxy listener; the inbound one has an inline route.
    let listeners = dump["listeners"]["resources"].as_array().unwrap();
    let mongo = listeners
        .iter()
        .find(|l| l["name"] == "0.0.0.0_27017")
        .unwrap_or_else(|| panic!("no mongo listener: {listeners:?}"));
    assert_eq!(mongo["type"], "TCP");
    assert!(
        mongo["filters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["cluster"] == "outbound|27017||mongo.default.svc.cluster.local"),
        "{mongo}"
    );
    let inbound = listeners
        .iter()
        .find(|l| l["name"] == "virtualInbound")
        .unwrap();
    assert!(
        inbound["filters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["inlineRoute"].is_string()),
        "{inbound}"
    );
    // Routes: the reviews virtual host routes to subset v3, from VirtualService reviews.
    let vh = dump["routes"]["resources"][0]["virtualHosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == format!("{REVIEWS}:9080"))
        .unwrap();
    assert!(
        vh["domains"]
            .as_array()
            .unwrap()
            .contains(&json!("reviews"))
    );
    let route = &vh["routes"][0];
    assert_eq!(route["action"]["clusters"][0]["name"], v3.as_str());
    assert_eq!(route["virtualService"], "reviews.default");
    assert_eq!(route["match"]["path"]["prefix"], "/");
    // Endpoints: the v3 subset keeps the v3 pod's address only.
    let eds = dump["endpoints"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["clusterName"] == v3.as_str())
        .unwrap();
    assert_eq!(eds["endpoints"].as_array().unwrap().len(), 1, "{eds}");
    assert_eq!(eds["endpoints"][0]["address"], "127.0.0.2:15006");
    assert!(eds["endpoints"][0]["health"].is_string());

    // The stream ends: the proxy leaves syncz and config_dump answers 404.
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !h.status.is_empty() {
        assert!(Instant::now() < deadline, "stream still listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (st, _) = get_json(&h.app, &format!("/debug/config_dump?proxyID={PRODUCTPAGE}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}
