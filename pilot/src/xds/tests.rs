//! In-process ADS: a real tonic server on 127.0.0.1:0 and the generated client.

use std::sync::Arc;
use std::time::Duration;

use mesh_proto::config::ConfigObject;
use mesh_proto::envoy::envoy::config::core::v3::Node;
use mesh_proto::envoy::envoy::config::endpoint::v3::ClusterLoadAssignment;
use mesh_proto::envoy::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_proto::envoy::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use mesh_proto::envoy::google::rpc::Status as RpcStatus;
use mesh_proto::type_url;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::Streaming;

use super::*;
use crate::galley_client::Snapshot;
use crate::metrics::PilotMetrics;
use crate::model::RegistryCache;
use crate::translate::Options;

pub(super) const REVIEWS: &str = "reviews.default.svc.cluster.local";
pub(super) const WAIT: Duration = Duration::from_secs(10);

fn objects(extra_endpoint: bool, with_vs: bool) -> Vec<ConfigObject> {
    let mut addresses = vec![
        serde_json::json!({"ip": "127.0.0.1", "targetRef": {"kind": "Pod", "name": "reviews-v1"}}),
    ];
    if extra_endpoint {
        addresses.push(serde_json::json!({"ip": "127.0.0.2", "targetRef": {"kind": "Pod", "name": "reviews-v1b"}}));
    }
    let mut v = vec![
        serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 9080}]}}),
        serde_json::json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "reviews", "namespace": "default"},
            "subsets": [{"addresses": addresses, "ports": [{"name": "http", "port": 15006}]}]}),
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reviews-v1", "namespace": "default", "labels": {"version": "v1"}},
            "spec": {"serviceAccountName": "bookinfo-reviews"}}),
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reviews-v1b", "namespace": "default", "labels": {"version": "v1"}},
            "spec": {"serviceAccountName": "bookinfo-reviews"}}),
        serde_json::json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "DestinationRule", "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}}),
    ];
    if with_vs {
        v.push(serde_json::json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService", "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]}}));
    }
    v.into_iter()
        .map(|o| serde_json::from_value(o).unwrap())
        .collect()
}

pub(super) struct Harness {
    pub(super) ads: AdsServer,
    pub(super) snapshots: watch::Sender<Arc<Snapshot>>,
    pub(super) status: SyncStatus,
    pub(super) metrics: PilotMetrics,
    pub(super) addr: std::net::SocketAddr,
    pub(super) stop: watch::Sender<bool>,
    pub(super) server: tokio::task::JoinHandle<()>,
}

async fn start() -> Harness {
    start_with(objects(false, false)).await
}

/// An ADS server on 127.0.0.1:0 serving a registry built from `objects`.
pub(super) async fn start_with(objects: Vec<ConfigObject>) -> Harness {
    let (snapshots, rx) = watch::channel(Arc::new(Snapshot::from_objects(objects)));
    let (stop, stop_rx) = watch::channel(false);
    let status = SyncStatus::default();
    let metrics = PilotMetrics::default();
    let ads = AdsServer::new(
        RegistryCache::new(rx, "cluster.local"),
        Options {
            trust_domain: "cluster.local".into(),
        },
        metrics.clone(),
        status.clone(),
        stop_rx.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut stop_wait = stop_rx;
    let handle = ads.clone();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(ads.into_service())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = stop_wait.wait_for(|s| *s).await;
            })
            .await
            .unwrap();
    });
    Harness {
        ads: handle,
        snapshots,
        status,
        metrics,
        addr,
        stop,
        server,
    }
}

struct Client {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
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

    async fn send(
        &self,
        type_url: &str,
        names: &[&str],
        version: &str,
        nonce: &str,
        error: Option<&str>,
    ) {
        self.tx
            .send(DiscoveryRequest {
                version_info: version.into(),
                node: Some(Node {
                    id: "sidecar~127.0.0.9~productpage-v1.default~default.svc.cluster.local".into(),
                    ..Node::default()
                }),
                resource_names: names.iter().map(|s| s.to_string()).collect(),
                type_url: type_url.into(),
                response_nonce: nonce.into(),
                error_detail: error.map(|e| RpcStatus {
                    code: 3,
                    message: e.into(),
                    details: vec![],
                }),
                ..DiscoveryRequest::default()
            })
            .await
            .unwrap();
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("response in time")
            .unwrap()
            .expect("stream open")
    }

    async fn ack(&self, r: &DiscoveryResponse, names: &[&str]) {
        self.send(&r.type_url, names, &r.version_info, &r.nonce, None)
            .await;
    }
}

fn endpoint_count(r: &DiscoveryResponse) -> usize {
    r.resources
        .iter()
        .map(|a| ClusterLoadAssignment::decode(a.value.as_slice()).unwrap())
        .map(|c| {
            c.endpoints
                .iter()
                .map(|l| l.lb_endpoints.len())
                .sum::<usize>()
        })
        .sum()
}

/// The endpoint addresses of an EDS response, in order.
fn endpoint_addresses(r: &DiscoveryResponse) -> Vec<String> {
    use mesh_proto::envoy::envoy::config::core::v3::address::Address;
    use mesh_proto::envoy::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
    r.resources
        .iter()
        .map(|a| ClusterLoadAssignment::decode(a.value.as_slice()).unwrap())
        .flat_map(|c| c.endpoints)
        .flat_map(|l| l.lb_endpoints)
        .filter_map(|e| match e.host_identifier? {
            HostIdentifier::Endpoint(ep) => match ep.address?.address? {
                Address::SocketAddress(sa) => Some(sa.address),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn subscribe_ack_push_and_nack() {
    let h = start().await;
    let mut c = Client::connect(h.addr).await;
    let default_cluster = format!("outbound|9080||{REVIEWS}");

    c.send(type_url::CLUSTER, &[], "", "", None).await;
    let cds = c.recv().await;
    assert_eq!(cds.type_url, type_url::CLUSTER);
    assert_eq!(cds.resources.len(), 2, "default + subset v1");
    c.ack(&cds, &[]).await;

    c.send(type_url::ENDPOINT, &[&default_cluster], "", "", None)
        .await;
    let eds = c.recv().await;
    assert_eq!(eds.type_url, type_url::ENDPOINT);
    assert_eq!(eds.resources.len(), 1, "filtered by resource_names");
    assert_eq!(endpoint_count(&eds), 1);
    c.ack(&eds, &[&default_cluster]).await;

    // An unsupported type is ignored without ending the stream.
    c.send(
        "type.googleapis.com/envoy.service.runtime.v3.Runtime",
        &["default"],
        "",
        "",
        None,
    )
    .await;

    c.send(type_url::LISTENER, &[], "", "", None).await;
    let lds = c.recv().await;
    assert_eq!(lds.type_url, type_url::LISTENER);
    // virtualInbound and virtualOutbound.
    assert_eq!(lds.resources.len(), 2);
    c.ack(&lds, &[]).await;

    c.send(type_url::ROUTE, &["http_proxy"], "", "", None).await;
    let rds = c.recv().await;
    assert_eq!(rds.type_url, type_url::ROUTE);
    c.ack(&rds, &["http_proxy"]).await;

    // Wait until the server has seen every ACK.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let st = h.status.list();
        if st.len() == 1
            && st[0].types.len() == 4
            && st[0]
                .types
                .values()
                .all(|t| t.acked_version.is_some() && t.acked_version == t.sent_version)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "acks not recorded: {st:?}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(h.metrics.connected_proxies.get(), 1);

    // A new endpoint changes only EDS: the next push is EDS.
    h.snapshots
        .send_replace(Arc::new(Snapshot::from_objects(objects(true, false))));
    let eds2 = c.recv().await;
    assert_eq!(eds2.type_url, type_url::ENDPOINT, "only EDS changed");
    assert_ne!(eds2.version_info, eds.version_info);
    assert_eq!(endpoint_count(&eds2), 2);

    // NACK it: it must not be sent again. A VirtualService then changes RDS only, and the next
    // message is RDS, not a re-sent EDS.
    c.send(
        type_url::ENDPOINT,
        &[&default_cluster],
        &eds.version_info,
        &eds2.nonce,
        Some("bad endpoint"),
    )
    .await;
    h.snapshots
        .send_replace(Arc::new(Snapshot::from_objects(objects(true, true))));
    let rds2 = c.recv().await;
    assert_eq!(rds2.type_url, type_url::ROUTE);
    assert_ne!(rds2.version_info, rds.version_info);

    let st = h.status.list();
    let eds_status = &st[0].types["eds"];
    assert_eq!(eds_status.nacks, 1);
    assert_eq!(
        eds_status.acked_version.as_deref(),
        Some(eds.version_info.as_str())
    );
    assert_eq!(
        eds_status.last_nack.as_ref().map(|n| n.error.as_str()),
        Some("bad endpoint")
    );
    assert_eq!(
        h.metrics
            .xds_nacks
            .get_or_create(&crate::metrics::TypeLabel {
                r#type: "eds".into()
            })
            .get(),
        1
    );

    // A changed resource_names list on ACK gets the named resources.
    let subset_cluster = format!("outbound|9080|v1|{REVIEWS}");
    c.send(
        type_url::ENDPOINT,
        &[&default_cluster, &subset_cluster],
        &eds.version_info,
        &eds2.nonce,
        None,
    )
    .await;
    let eds3 = c.recv().await;
    assert_eq!(eds3.type_url, type_url::ENDPOINT);
    assert_eq!(eds3.resources.len(), 2);

    // Shutdown ends the stream and the server.
    h.stop.send_replace(true);
    tokio::time::timeout(WAIT, h.server).await.unwrap().unwrap();
    assert!(h.status.is_empty());
}

#[tokio::test]
async fn stream_without_node_is_rejected() {
    let h = start().await;
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", h.addr))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(DiscoveryRequest {
        type_url: type_url::CLUSTER.into(),
        ..DiscoveryRequest::default()
    })
    .await
    .unwrap();
    let mut stream = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let err = tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    h.stop.send_replace(true);
}

/// The `_count` of histogram `h`.
fn histogram_count(h: &prometheus_client::metrics::histogram::Histogram) -> u64 {
    let reg = mesh_runtime::Metrics::default();
    reg.register(|r| r.register("h", "h", h.clone()));
    reg.encode()
        .lines()
        .find_map(|l| l.strip_prefix("h_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn poll_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ok() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn with_ratings(mut objs: Vec<ConfigObject>, ip: &str) -> Vec<ConfigObject> {
    for o in [
        serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ratings", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 9080}]}}),
        serde_json::json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "ratings", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "http", "port": 9080}]}]}),
    ] {
        objs.push(serde_json::from_value(o).unwrap());
    }
    objs
}

#[tokio::test]
async fn endpoint_change_elsewhere_is_not_pushed_and_convergence_is_measured() {
    let h = start_with(with_ratings(objects(false, false), "10.1.0.1")).await;
    let mut c = Client::connect(h.addr).await;
    let reviews = format!("outbound|9080||{REVIEWS}");
    c.send(type_url::CLUSTER, &[], "", "", None).await;
    let cds = c.recv().await;
    c.ack(&cds, &[]).await;
    c.send(type_url::ENDPOINT, &[&reviews], "", "", None).await;
    let eds = c.recv().await;
    assert_eq!(endpoint_count(&eds), 1);
    c.ack(&eds, &[&reviews]).await;
    poll_until("EDS ACK recorded", || {
        h.status.list().first().is_some_and(|p| {
            p.types
                .get("eds")
                .is_some_and(|t| t.acked_version.as_deref() == Some(eds.version_info.as_str()))
        })
    })
    .await;

    // Only ratings' endpoints move: an EDS-only push that this proxy (naming reviews) does not
    // need, so it is sent nothing and converges at once.
    h.snapshots
        .send_replace(Arc::new(Snapshot::from_objects(with_ratings(
            objects(false, false),
            "10.1.0.2",
        ))));
    let endpoints_pushes = || {
        h.metrics
            .push_triggers
            .get_or_create(&crate::metrics::KindLabel {
                kind: "endpoints".into(),
            })
            .get()
    };
    poll_until("endpoints push", || endpoints_pushes() == 1).await;
    poll_until("first convergence", || {
        histogram_count(&h.metrics.convergence_time) == 1
    })
    .await;

    // Now reviews' endpoints change: the next message is that EDS (nothing was sent before).
    h.snapshots
        .send_replace(Arc::new(Snapshot::from_objects(with_ratings(
            objects(true, false),
            "10.1.0.2",
        ))));
    let eds2 = c.recv().await;
    assert_eq!(eds2.type_url, type_url::ENDPOINT);
    assert_eq!(endpoint_count(&eds2), 2);
    assert_eq!(endpoints_pushes(), 2);
    // Not converged until the proxy answers.
    assert_eq!(histogram_count(&h.metrics.convergence_time), 1);
    c.ack(&eds2, &[&reviews]).await;
    poll_until("second convergence", || {
        histogram_count(&h.metrics.convergence_time) == 2
    })
    .await;
    assert!(histogram_count(&h.metrics.push_time) >= 2);
    h.stop.send_replace(true);
}

#[tokio::test]
async fn sotw_endpoint_push_sends_only_changed_load_assignments() {
    let h = start_with(with_ratings(objects(false, false), "10.1.0.1")).await;
    let mut c = Client::connect(h.addr).await;
    let reviews = format!("outbound|9080||{REVIEWS}");
    let ratings = "outbound|9080||ratings.default.svc.cluster.local".to_string();
    c.send(type_url::CLUSTER, &[], "", "", None).await;
    let cds = c.recv().await;
    c.ack(&cds, &[]).await;
    c.send(type_url::ENDPOINT, &[&ratings, &reviews], "", "", None)
        .await;
    let eds = c.recv().await;
    assert_eq!(eds.resources.len(), 2);
    c.ack(&eds, &[&ratings, &reviews]).await;
    c.send(type_url::ROUTE, &["http_proxy"], "", "", None).await;
    let rds = c.recv().await;
    c.ack(&rds, &["http_proxy"]).await;
    poll_until("ACKs recorded", || {
        h.status.list().first().is_some_and(|p| {
            p.types.len() == 3
                && p.types
                    .values()
                    .all(|t| t.acked_version.is_some() && t.acked_version == t.sent_version)
        })
    })
    .await;

    // Ratings moves: one EDS response with just ratings' assignment; CDS is not re-sent.
    h.snapshots
        .send_replace(Arc::new(Snapshot::from_objects(with_ratings(
            objects(false, false),
            "10.1.0.2",
        ))));
    let eds2 = c.recv().await;
    assert_eq!(eds2.type_url, type_url::ENDPOINT);
    assert_ne!(eds2.version_info, eds.version_info);
    let names: Vec<String> = eds2
        .resources
        .iter()
        .map(|a| {
            ClusterLoadAssignment::decode(a.value.as_slice())
                .unwrap()
                .cluster_name
        })
        .collect();
    assert_eq!(names, vec![ratings.clone()]);
    assert_eq!(endpoint_addresses(&eds2), vec!["10.1.0.2"]);
    let interned = h.ads.shared().names.interned();
    c.ack(&eds2, &[&ratings, &reviews]).await;

    // A proxy connecting now (or this one reconnecting) gets every assignment it names, the
    // moved one at its new address.
    let mut fresh = Client::connect(h.addr).await;
    fresh.send(type_url::CLUSTER, &[], "", "", None).await;
    let fresh_cds = fresh.recv().await;
    fresh.ack(&fresh_cds, &[]).await;
    fresh
        .send(type_url::ENDPOINT, &[&ratings, &reviews], "", "", None)
        .await;
    let fresh_eds = fresh.recv().await;
    assert_eq!(fresh_eds.resources.len(), 2);
    assert_eq!(fresh_eds.version_info, eds2.version_info);
    let mut addresses = endpoint_addresses(&fresh_eds);
    addresses.sort();
    assert_eq!(addresses, vec!["10.1.0.2", "127.0.0.1"]);
    // The first stream's ACK named what it named already: not interned again (the fresh
    // stream's first request was).
    poll_until("EDS ACK recorded", || {
        h.status.list().iter().any(|p| {
            p.types
                .get("eds")
                .is_some_and(|t| t.acked_version.as_deref() == Some(eds2.version_info.as_str()))
        })
    })
    .await;
    assert_eq!(h.ads.shared().names.interned(), interned + 1);

    // A VirtualService change: RDS is pushed, EDS (unchanged for this proxy) is not re-sent.
    h.snapshots
        .send_replace(Arc::new(Snapshot::from_objects(with_ratings(
            objects(false, true),
            "10.1.0.2",
        ))));
    let rds2 = c.recv().await;
    assert_eq!(rds2.type_url, type_url::ROUTE);
    c.ack(&rds2, &["http_proxy"]).await;

    // A names change still gets the whole selection.
    c.send(
        type_url::ENDPOINT,
        &[&reviews],
        &eds2.version_info,
        &eds2.nonce,
        None,
    )
    .await;
    let eds3 = c.recv().await;
    assert_eq!(eds3.type_url, type_url::ENDPOINT);
    assert_eq!(eds3.resources.len(), 1);
    assert_eq!(endpoint_count(&eds3), 1);
    h.stop.send_replace(true);
}
