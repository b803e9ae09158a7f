//! Test support: a mesh CA, workload identities and a pair of sidecars (client outbound →
//! mTLS → server inbound → application) on loopback, for the protocol tests.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, ServerConfig};
use tokio::net::TcpListener;

use crate::admin::ProxyMetrics;
use crate::cluster::{Cluster, Endpoints, LbPolicy, Limits, UpstreamTls};
use crate::http::{
    AccessLog, ProxyContext, RoutedKind, Upstream, Workload, serve_inbound, serve_routed,
};
use crate::routing::{Forwarding, PathMatch, Route, RouteAction, RouteTable, VirtualHost};
use crate::tls::{IdentitySlot, TlsSource};
use crate::xds::{Config, Listener, NodeInfo, ProxyType, SharedConfig};

use super::TcpProxy;

pub const TRUST_DOMAIN: &str = "cluster.local";
pub const SERVICE: &str = "echo.default.svc.cluster.local";
pub const PORT: u16 = 9000;

pub fn cluster_name() -> String {
    format!("outbound|{PORT}||{SERVICE}")
}

pub fn spiffe(sa: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/default/sa/{sa}")
}

/// A mesh root that issues workload certificates.
pub struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    root: rustls::pki_types::CertificateDer<'static>,
}

impl Ca {
    pub fn new() -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let root = params.self_signed(&key).unwrap().der().clone();
        Ca {
            issuer: rcgen::Issuer::new(params, key),
            root,
        }
    }

    /// The identity of service account `sa` in `default`.
    pub fn identity(&self, sa: &str) -> Arc<dyn TlsSource> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.subject_alt_names = vec![rcgen::SanType::URI(spiffe(sa).try_into().unwrap())];
        let leaf = p.signed_by(&key, &self.issuer).unwrap().der().clone();
        let tls = mesh_identity::MeshTls::new(mesh_identity::TlsMaterial {
            chain: vec![leaf],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            root: self.root.clone(),
            trust_domain: TRUST_DOMAIN.into(),
        })
        .unwrap();
        Arc::new(TestIdentity {
            tls,
            id: spiffe(sa),
            clients: Mutex::new(HashMap::new()),
        })
    }
}

struct TestIdentity {
    tls: mesh_identity::MeshTls,
    id: String,
    /// Cached like the real identity's, so upstream pools are reused.
    clients: Mutex<HashMap<Vec<String>, Arc<ClientConfig>>>,
}

impl TlsSource for TestIdentity {
    fn server_config(&self) -> Arc<ServerConfig> {
        self.tls.server_config()
    }
    fn client_config(&self, expected_sans: &[String]) -> Arc<ClientConfig> {
        self.clients
            .lock()
            .entry(expected_sans.to_vec())
            .or_insert_with(|| self.tls.client_config(expected_sans))
            .clone()
    }
    fn spiffe_id(&self) -> String {
        self.id.clone()
    }
}

pub fn node(pod: &str, sa: &str, app: &str) -> NodeInfo {
    NodeInfo {
        proxy_type: ProxyType::Sidecar,
        ip: "127.0.0.1".into(),
        pod: pod.into(),
        workload_name: None,
        namespace: "default".into(),
        service_account: sa.into(),
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
    }
}

pub fn context(
    config: Config,
    identity: Arc<dyn TlsSource>,
    node: NodeInfo,
    app: SocketAddr,
    metrics: &mesh_runtime::Metrics,
) -> Arc<ProxyContext> {
    Arc::new(ProxyContext {
        config: SharedConfig::new(config),
        upstream: Upstream::new(Duration::from_secs(2)),
        metrics: ProxyMetrics::register(metrics),
        mixer: None,
        identity: IdentitySlot::with(identity),
        workload: Workload::of_node(&node),
        node,
        app_addr: app,
        access_log: None,
        tracer: None,
    })
}

/// Two sidecars: `client` (outbound HTTP listener and, when `tcp`, a `tcp_proxy` listener) and
/// `server` (inbound, in front of `app`).
pub struct Mesh {
    /// The client sidecar's outbound HTTP listener (`virtualOutbound`).
    pub outbound: SocketAddr,
    /// The client sidecar's `0.0.0.0_9000` TCP listener.
    pub tcp: SocketAddr,
    pub client_metrics: mesh_runtime::Metrics,
    pub server_metrics: mesh_runtime::Metrics,
}

/// Starts the pair in front of the application at `app`.
pub async fn mesh(app: SocketAddr) -> Mesh {
    mesh_with(app, TcpProxy::single(vec![(cluster_name(), 1)])).await
}

/// Like [`mesh`], with `tcp` as the client's `0.0.0.0_9000` listener.
pub async fn mesh_with(app: SocketAddr, tcp: TcpProxy) -> Mesh {
    mesh_logged(app, tcp, None).await
}

/// Like [`mesh_with`], the client sidecar writing its access log to `access_log`.
pub async fn mesh_logged(app: SocketAddr, tcp: TcpProxy, access_log: Option<AccessLog>) -> Mesh {
    let ca = Ca::new();
    let server_metrics = mesh_runtime::Metrics::default();
    let server = context(
        Config::default(),
        ca.identity("echo"),
        node("echo-v1", "echo", "echo"),
        app,
        &server_metrics,
    );
    let inbound = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let inbound_addr = inbound.local_addr().unwrap();
    tokio::spawn(serve_inbound(inbound, server, std::future::pending()));

    let mut config = Config::default();
    let cluster = Cluster {
        name: cluster_name(),
        eds_name: cluster_name(),
        connect_timeout: Duration::from_secs(2),
        tls: Some(UpstreamTls {
            expected_sans: vec![spiffe("echo")],
            sni: format!("outbound_.{PORT}_._.{SERVICE}"),
            origination: None,
        }),
        lb: LbPolicy::RoundRobin,
        limits: Limits::default(),
        max_requests_per_connection: None,
        outlier: None,
        service: None,
    };
    config
        .endpoints
        .insert(cluster_name(), Arc::new(Endpoints::new(vec![inbound_addr])));
    config.clusters.insert(cluster_name(), Arc::new(cluster));
    config.routes.insert(
        "http_proxy".into(),
        Arc::new(RouteTable::new(
            "http_proxy".into(),
            vec![VirtualHost {
                name: format!("{SERVICE}:{PORT}"),
                domains: vec![SERVICE.into(), format!("{SERVICE}:{PORT}")],
                routes: vec![Route {
                    name: "default".into(),
                    path: PathMatch::Prefix("/".into()),
                    headers: vec![],
                    action: RouteAction::Cluster(cluster_name()),
                    forwarding: Forwarding::default(),
                }],
            }],
        )),
    );
    for (name, route, tcp) in [
        ("virtualOutbound", Some("http_proxy".to_string()), None),
        ("0.0.0.0_9000", None, Some(Arc::new(tcp))),
    ] {
        config.listeners.insert(
            name.into(),
            Listener {
                name: name.into(),
                address: None,
                route_config_name: route,
                inbound: None,
                tcp,
                mixer: None,
            },
        );
    }
    let client_metrics = mesh_runtime::Metrics::default();
    let mut client = context(
        config,
        ca.identity("client"),
        node("client-v1", "client", "client"),
        "127.0.0.1:9".parse().unwrap(),
        &client_metrics,
    );
    Arc::get_mut(&mut client)
        .expect("the context was just made")
        .access_log = access_log;
    let outbound = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let outbound_addr = outbound.local_addr().unwrap();
    tokio::spawn(serve_routed(
        outbound,
        client.clone(),
        "virtualOutbound".into(),
        RoutedKind::SidecarOutbound,
        std::future::pending(),
    ));
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    tokio::spawn(super::serve_tcp(
        tcp,
        client,
        "0.0.0.0_9000".into(),
        std::future::pending(),
    ));
    Mesh {
        outbound: outbound_addr,
        tcp: tcp_addr,
        client_metrics,
        server_metrics,
    }
}

/// Polls `metrics` until every needle is on one line, or fails after 5 s.
pub async fn wait_for_line(metrics: &mesh_runtime::Metrics, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics.encode();
        if let Some(line) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no line with {needles:?} in metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
