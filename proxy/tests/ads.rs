//! The ADS client against a tiny in-process ADS server: subscription order, ACK/NACK on the
//! wire, readiness, and keeping the config when Pilot goes away.

#![allow(clippy::unwrap_used)]

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use mesh_proto::envoy::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use mesh_proto::envoy::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use mesh_proto::type_url;
use mesh_proxy::admin::ProxyMetrics;
use mesh_proxy::xds::testdata::*;
use mesh_proxy::xds::{NodeInfo, ProxyType, SharedConfig};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

const C: &str = "outbound|9080||reviews.default.svc.cluster.local";

/// Answers each initial request with fixed resources; a second RDS version has a bad regex.
#[derive(Clone)]
struct FakePilot {
    requests: Arc<Mutex<Vec<DiscoveryRequest>>>,
    /// Set to true to end every open stream (Pilot going away).
    gone: tokio::sync::watch::Receiver<bool>,
}

type RespStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<DiscoveryResponse, tonic::Status>> + Send>>;
type DeltaStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<DeltaDiscoveryResponse, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for FakePilot {
    type StreamAggregatedResourcesStream = RespStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        req: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<RespStream>, tonic::Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let log = self.requests.clone();
        let mut gone = self.gone.clone();
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let r = tokio::select! {
                    r = inbound.next() => match r {
                        Some(Ok(r)) => r,
                        _ => return,
                    },
                    _ = gone.wait_for(|g| *g) => return,
                };
                log.lock().push(r.clone());
                n += 1;
                let (version, resources) = match (r.type_url.as_str(), r.response_nonce.is_empty())
                {
                    (type_url::CLUSTER, true) => ("1", vec![cluster_any(C, None)]),
                    (type_url::LISTENER, true) => {
                        ("1", vec![listener_any("virtualOutbound", "http_proxy")])
                    }
                    (type_url::ENDPOINT, true) => ("1", vec![cla_any(C, &["127.0.0.1:9"])]),
                    (type_url::ROUTE, true) => {
                        ("1", vec![route_any("http_proxy", "reviews", "/", C)])
                    }
                    // After the RDS ACK, push a broken RDS version.
                    (type_url::ROUTE, false)
                        if r.error_detail.is_none() && r.version_info == "1" =>
                    {
                        ("2", vec![bad_regex_route_any("http_proxy")])
                    }
                    _ => continue,
                };
                let resp = DiscoveryResponse {
                    version_info: version.into(),
                    resources,
                    type_url: r.type_url.clone(),
                    nonce: format!("n{n}"),
                    ..Default::default()
                };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<DeltaStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("delta"))
    }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn ads_stream_applies_acks_nacks_and_survives_pilot_loss() {
    let (gone_tx, gone) = tokio::sync::watch::channel(false);
    let pilot = FakePilot {
        requests: Default::default(),
        gone,
    };
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (stop_pilot, pilot_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(pilot.clone()))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(l),
                async {
                    let _ = pilot_stopped.await;
                },
            ),
    );

    let node = NodeInfo {
        proxy_type: ProxyType::Sidecar,
        ip: "127.0.0.1".into(),
        pod: "productpage-v1".into(),
        workload_name: None,
        namespace: "default".into(),
        service_account: "bookinfo-productpage".into(),
        labels: Default::default(),
    };
    let config = SharedConfig::default();
    let readiness = mesh_runtime::Readiness::new(&["xds"]);
    let metrics = ProxyMetrics::default();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let client = tokio::spawn(mesh_proxy::xds::run(
        format!("http://{addr}"),
        node.node(),
        config.clone(),
        readiness.clone(),
        metrics.clone(),
        async {
            let _ = rx.await;
        },
    ));

    wait_until("the NACK of RDS version 2", || {
        pilot
            .requests
            .lock()
            .iter()
            .any(|r| r.error_detail.is_some())
    })
    .await;
    assert!(readiness.is_ready());
    let cfg = config.load();
    assert_eq!(
        cfg.versions.routes, "1",
        "the broken version was not applied"
    );
    assert!(cfg.route_table_for("virtualOutbound").is_some());
    assert_eq!(cfg.endpoints[C].addrs.len(), 1);
    {
        let reqs = pilot.requests.lock();
        assert_eq!(
            reqs[0].node.as_ref().unwrap().id,
            "sidecar~127.0.0.1~productpage-v1.default~default.svc.cluster.local"
        );
        let order: Vec<(&str, bool)> = reqs
            .iter()
            .map(|r| (r.type_url.as_str(), r.response_nonce.is_empty()))
            .collect();
        let pos = |t: &str| {
            order
                .iter()
                .position(|(u, initial)| *u == t && *initial)
                .unwrap()
        };
        assert!(pos(type_url::CLUSTER) < pos(type_url::ENDPOINT));
        assert!(pos(type_url::LISTENER) < pos(type_url::ROUTE));
        let nack = reqs.iter().find(|r| r.error_detail.is_some()).unwrap();
        assert_eq!(nack.type_url, type_url::ROUTE);
        assert_eq!(nack.version_info, "1");
        assert!(
            nack.error_detail
                .as_ref()
                .unwrap()
                .message
                .contains("bad regex")
        );
    }
    let nacks = metrics
        .xds_updates
        .get_or_create(&mesh_proxy::admin::XdsLabels {
            r#type: "rds",
            result: "nack",
        })
        .get();
    assert_eq!(nacks, 1);

    // Pilot goes away: the config keeps serving.
    gone_tx.send(true).unwrap();
    stop_pilot.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    wait_until("the client to notice", || {
        metrics.xds_connects.get() == 1 && !config.load().listeners.is_empty()
    })
    .await;
    let cfg = config.load();
    assert!(cfg.route_table_for("virtualOutbound").is_some());
    stop.send(()).unwrap();
    client.await.unwrap();
}
