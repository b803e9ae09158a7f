//! The real Pilot ADS server in-process (plaintext, SotW only, or mTLS) and a mesh-proxy xDS
//! client beside it, for the xDS client tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use mesh_identity::SpiffeId;
use mesh_proto::config::ConfigObject;
use mesh_proto::envoy::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use mesh_proto::envoy::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest,
};
use mesh_proxy::admin::{ProxyMetrics, XdsLabels};
use mesh_proxy::xds::{NodeInfo, ProxyType, SharedConfig, XdsClientConfig};
use parking_lot::Mutex;
use pilot::galley_client::Snapshot;
use pilot::metrics::PilotMetrics;
use pilot::model::RegistryCache;
use pilot::translate::Options;
use pilot::xds::{AdsServer, ProxyStatus, SyncStatus, XdsTls};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tonic::transport::server::Connected;

pub const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";
pub const RATINGS: &str = "outbound|9080||ratings.default.svc.cluster.local";
pub const WAIT: Duration = Duration::from_secs(20);

/// The mesh: reviews with `reviews_ips`, ratings unless `without_ratings`, and a VirtualService
/// for reviews whose uri regex is `regex` (Pilot passes it on; the proxy judges it).
#[derive(Debug, Clone, Default)]
pub struct World {
    pub reviews_ips: Vec<&'static str>,
    pub without_ratings: bool,
    pub regex: Option<&'static str>,
}

impl World {
    pub fn new(reviews_ips: &[&'static str]) -> World {
        World {
            reviews_ips: reviews_ips.to_vec(),
            ..World::default()
        }
    }

    pub fn objects(&self) -> Vec<ConfigObject> {
        let addresses: Vec<_> = self
            .reviews_ips
            .iter()
            .map(|ip| serde_json::json!({"ip": ip}))
            .collect();
        let mut v = vec![
            serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews", "namespace": "default"},
                "spec": {"ports": [{"name": "http", "port": 9080}]}}),
            serde_json::json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "reviews", "namespace": "default"},
                "subsets": [{"addresses": addresses, "ports": [{"name": "http", "port": 15006}]}]}),
        ];
        if !self.without_ratings {
            v.push(serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ratings", "namespace": "default"},
                "spec": {"ports": [{"name": "http", "port": 9080}]}}));
            v.push(serde_json::json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "ratings", "namespace": "default"},
                "subsets": [{"addresses": [{"ip": "127.0.0.3"}], "ports": [{"name": "http", "port": 15006}]}]}));
        }
        if let Some(re) = self.regex {
            v.push(serde_json::json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
                "metadata": {"name": "reviews", "namespace": "default"},
                "spec": {"hosts": ["reviews"], "http": [{"match": [{"uri": {"regex": re}}],
                    "route": [{"destination": {"host": "reviews"}}]}]}}));
        }
        v.into_iter()
            .map(|o| serde_json::from_value(o).unwrap())
            .collect()
    }
}

/// How the test Pilot serves.
pub enum Serve {
    /// Plaintext, SotW and Delta.
    Plain,
    /// Plaintext, `DeltaAggregatedResources` answered UNIMPLEMENTED (an older server).
    SotwOnly,
    /// mTLS; the SPIFFE id of every accepted connection is recorded.
    Tls(XdsTls, Arc<Mutex<Vec<SpiffeId>>>),
}

pub struct Pilot {
    pub snapshots: watch::Sender<Arc<Snapshot>>,
    pub status: SyncStatus,
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

/// A Pilot without `DeltaAggregatedResources`.
struct SotwOnly(AdsServer);

type DeltaStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<DeltaDiscoveryResponse, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for SotwOnly {
    type StreamAggregatedResourcesStream =
        <AdsServer as AggregatedDiscoveryService>::StreamAggregatedResourcesStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        req: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::StreamAggregatedResourcesStream>, tonic::Status> {
        self.0.stream_aggregated_resources(req).await
    }

    async fn delta_aggregated_resources(
        &self,
        _: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<DeltaStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("delta xds is not served here"))
    }
}

impl Pilot {
    /// Pilot serving `world` on `addr` (127.0.0.1:0 when `None`).
    pub async fn start(world: &World, addr: Option<SocketAddr>, serve: Serve) -> Pilot {
        let (snapshots, rx) = watch::channel(Arc::new(Snapshot::from_objects(world.objects())));
        let (stop, stop_rx) = watch::channel(false);
        let status = SyncStatus::default();
        let ads = AdsServer::new(
            RegistryCache::new(rx, "cluster.local"),
            Options {
                trust_domain: "cluster.local".into(),
            },
            PilotMetrics::default(),
            status.clone(),
            stop_rx.clone(),
        );
        let listener = tokio::net::TcpListener::bind(addr.unwrap_or(([127, 0, 0, 1], 0).into()))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let mut stop_wait = stop_rx;
        let stopped = async move {
            let _ = stop_wait.wait_for(|s| *s).await;
        };
        let server = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let mut builder = tonic::transport::Server::builder();
            match serve {
                Serve::Plain => builder
                    .add_service(ads.into_service())
                    .serve_with_incoming_shutdown(incoming, stopped)
                    .await
                    .unwrap(),
                Serve::SotwOnly => builder
                    .add_service(AggregatedDiscoveryServiceServer::new(SotwOnly(ads)))
                    .serve_with_incoming_shutdown(incoming, stopped)
                    .await
                    .unwrap(),
                Serve::Tls(tls, peers) => {
                    let incoming = tls.incoming(incoming.into_inner()).map(move |c| {
                        if let Ok(c) = &c {
                            peers.lock().push(c.connect_info().spiffe_id);
                        }
                        c
                    });
                    builder
                        .add_service(ads.into_service())
                        .serve_with_incoming_shutdown(incoming, stopped)
                        .await
                        .unwrap()
                }
            }
        });
        Pilot {
            snapshots,
            status,
            addr,
            stop,
            server,
        }
    }

    pub fn publish(&self, world: &World) {
        self.snapshots
            .send_replace(Arc::new(Snapshot::from_objects(world.objects())));
    }

    /// The proxies connected now.
    pub fn proxies(&self) -> Vec<ProxyStatus> {
        self.status.list()
    }

    /// Stops serving: every stream ends, the listener closes.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        tokio::time::timeout(WAIT, self.server)
            .await
            .unwrap()
            .unwrap();
    }
}

pub fn node(namespace: &str) -> NodeInfo {
    NodeInfo {
        proxy_type: ProxyType::Sidecar,
        ip: "127.0.0.1".into(),
        pod: "productpage-v1".into(),
        workload_name: None,
        namespace: namespace.into(),
        service_account: "bookinfo-productpage".into(),
        labels: Default::default(),
    }
}

/// A mesh-proxy xDS client.
pub struct Proxy {
    pub config: SharedConfig,
    pub readiness: mesh_runtime::Readiness,
    pub metrics: ProxyMetrics,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub fn start(client: XdsClientConfig, namespace: &str) -> Proxy {
        let config = SharedConfig::default();
        let readiness = mesh_runtime::Readiness::new(&["xds"]);
        let metrics = ProxyMetrics::default();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(mesh_proxy::xds::run_client(
            client,
            node(namespace).node(),
            config.clone(),
            readiness.clone(),
            metrics.clone(),
            async {
                let _ = rx.await;
            },
        ));
        Proxy {
            config,
            readiness,
            metrics,
            stop,
            task,
        }
    }

    /// Resources received in Delta responses of `ty` (`cds`...) with `result` `added`/`removed`.
    pub fn delta(&self, ty: &'static str, result: &'static str) -> u64 {
        self.metrics
            .xds_delta_resources
            .get_or_create(&XdsLabels { r#type: ty, result })
            .get()
    }

    /// Responses of `ty` with `result` `ack`/`nack`.
    pub fn updates(&self, ty: &'static str, result: &'static str) -> u64 {
        self.metrics
            .xds_updates
            .get_or_create(&XdsLabels { r#type: ty, result })
            .get()
    }

    /// The number of addresses the proxy holds for `cluster`.
    pub fn endpoints(&self, cluster: &str) -> Option<usize> {
        let cfg = self.config.load();
        let c = cfg.clusters.get(cluster)?;
        cfg.endpoints_of(c).map(|e| e.addrs.len())
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// Polls `f` until it holds, failing after [`WAIT`].
pub async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
