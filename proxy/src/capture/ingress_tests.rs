//! Sidecar `ingress[]` on the proxy: ports decoded from `virtualInbound`, traffic sent to the
//! port's `defaultEndpoint` (capture and explicit listeners), listeners bound and closed as
//! Pilot asks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use mesh_proto::envoy::envoy::config::core::v3::{Address, SocketAddress, address, socket_address};
use mesh_proto::envoy::envoy::config::listener::v3::{
    AdditionalAddress, Filter, FilterChain, FilterChainMatch, Listener as EnvoyListener, filter,
};
use mesh_proto::envoy::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, VirtualHost, route, route_action,
};
use mesh_proto::envoy::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use mesh_proto::envoy::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy as EnvoyTcpProxy, tcp_proxy,
};
use mesh_proto::envoy::google::protobuf::{Any, UInt32Value};
use mesh_proto::type_url;
use prost::{Message, Name};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::cluster::{Cluster, Endpoints, LbPolicy, Limits};
use crate::http::HttpLimits;
use crate::tcp::testkit::{self, Ca};
use crate::xds::{Config, Listener};

fn any<M: Message>(url: &str, m: &M) -> Any {
    Any {
        type_url: url.into(),
        value: m.encode_to_vec(),
    }
}

fn addr(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..SocketAddress::default()
        })),
    }
}

/// An inbound HTTP connection manager routing everything to `cluster`.
fn hcm_to(cluster: &str) -> Filter {
    let hcm = HttpConnectionManager {
        stat_prefix: "inbound".into(),
        route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
            name: "inbound|http|0".into(),
            virtual_hosts: vec![VirtualHost {
                name: "inbound|http|0".into(),
                domains: vec!["*".into()],
                routes: vec![Route {
                    action: Some(route::Action::Route(RouteAction {
                        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                            cluster.into(),
                        )),
                        ..RouteAction::default()
                    })),
                    ..Route::default()
                }],
                ..VirtualHost::default()
            }],
            ..RouteConfiguration::default()
        })),
        ..HttpConnectionManager::default()
    };
    Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(filter::ConfigType::TypedConfig(any(
            type_url::HTTP_CONNECTION_MANAGER,
            &hcm,
        ))),
    }
}

fn tcp_to(cluster: &str) -> Filter {
    let tp = EnvoyTcpProxy {
        stat_prefix: cluster.into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
        ..EnvoyTcpProxy::default()
    };
    Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(filter::ConfigType::TypedConfig(any(
            &EnvoyTcpProxy::type_url(),
            &tp,
        ))),
    }
}

/// PERMISSIVE chains (tls and raw_buffer) with `filter`, on `port` or the rest.
fn chains(port: Option<u32>, filter: Filter) -> Vec<FilterChain> {
    ["tls", "raw_buffer"]
        .iter()
        .map(|t| FilterChain {
            filter_chain_match: Some(FilterChainMatch {
                destination_port: port.map(|value| UInt32Value { value }),
                transport_protocol: t.to_string(),
                ..FilterChainMatch::default()
            }),
            filters: vec![filter.clone()],
            ..FilterChain::default()
        })
        .collect()
}

/// `virtualInbound` as Pilot sends it for a Sidecar whose ingress maps HTTP port 9080 and TCP
/// port 3306, with `binds` among the additional addresses.
fn envoy_inbound(binds: &[SocketAddr]) -> EnvoyListener {
    let mut filter_chains = chains(Some(9080), hcm_to("inbound|9080||"));
    filter_chains.extend(chains(Some(3306), tcp_to("inbound|3306||")));
    filter_chains.extend(chains(None, hcm_to("InboundPassthroughClusterIpv4")));
    EnvoyListener {
        name: crate::authz::INBOUND_LISTENER.into(),
        address: Some(addr("0.0.0.0", 15006)),
        additional_addresses: binds
            .iter()
            .map(|b| AdditionalAddress {
                address: Some(addr(&b.ip().to_string(), u32::from(b.port()))),
                ..AdditionalAddress::default()
            })
            .collect(),
        filter_chains,
        ..EnvoyListener::default()
    }
}

fn cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        eds_name: name.into(),
        connect_timeout: Duration::from_secs(2),
        tls: None,
        lb: LbPolicy::RoundRobin,
        limits: Limits::default(),
        max_requests_per_connection: None,
        outlier: None,
        service: None,
    }
}

/// The config with that `virtualInbound` and the STATIC clusters' endpoints.
pub(crate) fn config(http: SocketAddr, tcp: SocketAddr, binds: &[SocketAddr]) -> Config {
    let l = envoy_inbound(binds);
    let mut c = Config::default();
    c.listeners.insert(
        l.name.clone(),
        Listener {
            name: l.name.clone(),
            address: None,
            route_config_name: None,
            inbound: Some(Arc::new(crate::authz::InboundPolicy::decode(&l).unwrap())),
            tcp: None,
            mixer: None,
        },
    );
    for (name, a) in [("inbound|9080||", http), ("inbound|3306||", tcp)] {
        c.clusters.insert(name.into(), Arc::new(cluster(name)));
        c.endpoints
            .insert(name.into(), Arc::new(Endpoints::new(vec![a])));
    }
    c
}

async fn http_app(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    let app = Router::new().fallback(move || async move { format!("{name} answered") });
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    a
}

async fn echo_app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    a
}

async fn get(s: TcpStream) -> (u16, String) {
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/x")
        .header("host", "details.default.svc.cluster.local:9080")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn capture_config(table: Arc<dyn OriginalDst>) -> CaptureConfig {
    CaptureConfig {
        original_dst: table,
        policy: OutboundPolicy::AllowAny,
        sniff_wait: Duration::from_millis(100),
        limits: HttpLimits::default(),
    }
}

/// Every captured connection was going to `to`.
struct Fixed(SocketAddr);

impl OriginalDst for Fixed {
    fn original_dst(&self, _: &TcpStream) -> std::io::Result<SocketAddr> {
        Ok(self.0)
    }
}

#[test]
fn ports_and_binds_are_decoded_from_virtual_inbound() {
    let bind: SocketAddr = "0.0.0.0:9080".parse().unwrap();
    let p = crate::authz::InboundPolicy::decode(&envoy_inbound(&[bind])).unwrap();
    assert_eq!(p.modes.binds, vec![bind]);
    let t = &p.modes.ingress;
    assert_eq!(t.len(), 2, "{t:?}");
    assert_eq!(t[&9080].cluster, "inbound|9080||");
    assert!(!t[&9080].tcp);
    assert_eq!(t[&3306].cluster, "inbound|3306||");
    assert!(t[&3306].tcp);
    // The catch-all chains are no ingress port.
    assert_eq!(p.modes.for_port(9080), crate::authz::MtlsMode::Permissive);
}

#[test]
fn unspecified_endpoint_is_the_instance_ip_and_missing_clusters_are_errors() {
    let mut c = config(
        "0.0.0.0:18080".parse().unwrap(),
        "127.0.0.1:3307".parse().unwrap(),
        &[],
    );
    let ip = "10.1.2.3".parse().unwrap();
    assert_eq!(
        ingress_upstream(&c, 9080, ip),
        Some(Ok("10.1.2.3:18080".parse().unwrap()))
    );
    assert_eq!(
        ingress_upstream(&c, 3306, ip),
        Some(Ok("127.0.0.1:3307".parse().unwrap()))
    );
    assert_eq!(ingress_upstream(&c, 8080, ip), None, "no ingress entry");
    assert_eq!(ingress_upstream(&Config::default(), 9080, ip), None);
    c.clusters.remove("inbound|9080||");
    assert_eq!(
        ingress_upstream(&c, 9080, ip),
        Some(Err(IngressError::NoCluster("inbound|9080||".into())))
    );
    let fallback: SocketAddr = "127.0.0.1:9080".parse().unwrap();
    assert_eq!(
        app_for(&c, 9080, "10.1.2.3:9080".parse().unwrap(), fallback),
        fallback
    );
}

/// Captured connections to an ingress port reach its endpoint (HTTP and TCP), not the
/// application's address on the original port; other ports are unchanged.
#[tokio::test]
async fn captured_ingress_ports_go_to_the_default_endpoint() {
    let ingress_app = http_app("ingress").await;
    let echo = echo_app().await;
    let plain = http_app("plain").await;
    let ca = Ca::new();
    let metrics = mesh_runtime::Metrics::default();
    let serve = |original: SocketAddr| {
        let ctx = testkit::context(
            config(ingress_app, echo, &[]),
            ca.identity("details"),
            testkit::node("details-v1", "details", "details"),
            "127.0.0.1:9".parse().unwrap(),
            &metrics,
        );
        async move {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = l.local_addr().unwrap();
            tokio::spawn(serve_capture_inbound(
                l,
                ctx,
                capture_config(Arc::new(Fixed(original))),
                std::future::pending(),
            ));
            a
        }
    };
    // Port 9080 (nothing listens on 127.0.0.1:9080 for the test): the ingress endpoint.
    let proxy = serve("127.0.0.1:9080".parse().unwrap()).await;
    let (status, body) = get(TcpStream::connect(proxy).await.unwrap()).await;
    assert_eq!((status, body.as_str()), (200, "ingress answered"));
    // The TCP ingress port: spliced to its endpoint.
    let proxy = serve("127.0.0.1:3306".parse().unwrap()).await;
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(b"\x00\x01binary").await.unwrap();
    let mut got = [0u8; 8];
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_exact(&mut s, &mut got),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(&got, b"\x00\x01binary");
    // A port without an ingress entry: the application's address on the original port.
    let proxy = serve(SocketAddr::new([127, 0, 0, 1].into(), plain.port())).await;
    let (status, body) = get(TcpStream::connect(proxy).await.unwrap()).await;
    assert_eq!((status, body.as_str()), (200, "plain answered"));
}

/// `captureMode: NONE` / `bind`: the proxy binds the address Pilot sends, serves it like the
/// capture listener, and closes it when Pilot stops sending it.
#[tokio::test]
async fn explicit_ingress_listeners_follow_the_config() {
    let ingress_app = http_app("ingress").await;
    let echo = echo_app().await;
    // A free port for the explicit listener.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let bind = SocketAddr::new([127, 0, 0, 1].into(), port);
    // The ingress entry is on port 9080 in the chains; the explicit listener's port must be
    // the entry's: serve the entry on the free port instead.
    let mut cfg = config(ingress_app, echo, &[bind]);
    let l = {
        let mut l = envoy_inbound(&[bind]);
        for c in &mut l.filter_chains {
            if let Some(m) = c.filter_chain_match.as_mut()
                && m.destination_port.map(|p| p.value) == Some(9080)
            {
                m.destination_port = Some(UInt32Value {
                    value: u32::from(port),
                });
            }
        }
        l
    };
    if let Some(v) = cfg.listeners.get_mut(crate::authz::INBOUND_LISTENER) {
        v.inbound = Some(Arc::new(crate::authz::InboundPolicy::decode(&l).unwrap()));
    }
    let ca = Ca::new();
    let metrics = mesh_runtime::Metrics::default();
    let ctx = testkit::context(
        cfg.clone(),
        ca.identity("details"),
        testkit::node("details-v1", "details", "details"),
        "127.0.0.1:9".parse().unwrap(),
        &metrics,
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_ingress_binds(
        ctx.clone(),
        capture_config(Arc::new(Fixed("127.0.0.1:1".parse().unwrap()))),
        async {
            let _ = stop_rx.await;
        },
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    let s = loop {
        match TcpStream::connect(bind).await {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("explicit listener never bound: {e}"),
        }
    };
    let (status, body) = get(s).await;
    assert_eq!((status, body.as_str()), (200, "ingress answered"));
    // Pilot stops sending the address: the listener goes away.
    let mut without = cfg.clone();
    if let Some(v) = without.listeners.get_mut(crate::authz::INBOUND_LISTENER) {
        v.inbound = Some(Arc::new(
            crate::authz::InboundPolicy::decode(&envoy_inbound(&[])).unwrap(),
        ));
    }
    ctx.config.store(without);
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(bind).await.is_ok() {
        assert!(Instant::now() < deadline, "explicit listener still bound");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

/// Pilot's own translation of a Sidecar with ingress entries, applied over xDS (CDS then LDS)
/// as the proxy receives it: every port resolves to its endpoint, the bind is asked for.
#[test]
fn pilot_translation_applies_and_resolves() {
    let objs: Vec<mesh_proto::config::ConfigObject> = serde_json::from_value(serde_json::json!([
        {"apiVersion": "networking.istio.io/v1beta1", "kind": "Sidecar",
         "metadata": {"name": "details", "namespace": "default"},
         "spec": {"workloadSelector": {"labels": {"app": "details"}}, "ingress": [
            {"port": {"number": 9080, "protocol": "HTTP"}, "defaultEndpoint": "127.0.0.1:18080"},
            {"port": {"number": 9081, "protocol": "HTTP"}, "defaultEndpoint": "0.0.0.0:18081",
             "captureMode": "NONE"},
            {"port": {"number": 3306, "protocol": "TCP"}, "defaultEndpoint": "127.0.0.1:3307"}]}}
    ]))
    .unwrap();
    let reg = pilot::model::Registry::from_snapshot(
        &pilot::galley_client::Snapshot::from_objects(objs),
        "cluster.local",
    );
    let mut proxy = pilot::translate::ProxyInfo::from_id(
        "sidecar~10.1.2.3~details-v1.default~default.svc.cluster.local",
    )
    .unwrap();
    proxy.labels.insert("app".into(), "details".into());
    let cfg = pilot::translate::translate(
        &reg,
        &proxy,
        &pilot::translate::Options {
            trust_domain: "cluster.local".into(),
        },
    )
    .encode();
    let mut state = crate::xds::XdsState::default();
    let all = |t: &pilot::translate::TypeResources| -> Vec<Any> {
        t.resources.iter().map(|r| r.resource.clone()).collect()
    };
    state
        .apply(type_url::CLUSTER, "1", &all(&cfg.clusters))
        .unwrap();
    let (_, config) = state
        .apply(type_url::LISTENER, "1", &all(&cfg.listeners))
        .unwrap();
    let ip = "10.1.2.3".parse().unwrap();
    assert_eq!(
        ingress_upstream(&config, 9080, ip),
        Some(Ok("127.0.0.1:18080".parse().unwrap()))
    );
    assert_eq!(
        ingress_upstream(&config, 9081, ip),
        Some(Ok("10.1.2.3:18081".parse().unwrap()))
    );
    assert_eq!(
        ingress_upstream(&config, 3306, ip),
        Some(Ok("127.0.0.1:3307".parse().unwrap()))
    );
    assert_eq!(ingress_upstream(&config, 9090, ip), None);
    assert_eq!(
        wanted_binds(&config),
        vec!["0.0.0.0:9081".parse::<SocketAddr>().unwrap()]
    );
}
