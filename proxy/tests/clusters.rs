//! Cluster discovery types end to end: a fake ADS server (SotW) sends a STRICT_DNS cluster whose
//! endpoint is `localhost:<port>`, Istio's `BlackHoleCluster` (STATIC, no endpoints) and
//! `PassthroughCluster` (ORIGINAL_DST), and routes with a `direct_response`; the proxy resolves
//! the name, never asks EDS for these clusters, and serves each kind of route.

#![allow(clippy::unwrap_used)]

mod common;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use mesh_proto::envoy::envoy::config::cluster::v3::{Cluster, cluster};
use mesh_proto::envoy::envoy::config::core::v3::{
    Address, DataSource, HeaderValue, HeaderValueOption, SocketAddress, address, data_source,
    socket_address,
};
use mesh_proto::envoy::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use mesh_proto::envoy::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route,
    route_action, route_match,
};
use mesh_proto::envoy::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use mesh_proto::envoy::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use mesh_proto::envoy::google::protobuf::{Any, Duration as PbDuration};
use mesh_proto::type_url;
use mesh_proxy::cluster::{DnsMetrics, SystemResolver};
use mesh_proxy::http::{RoutedKind, serve_routed};
use mesh_proxy::tls::IdentitySlot;
use mesh_proxy::xds::testdata::listener_any;
use mesh_proxy::xds::{SharedConfig, XdsClientConfig, XdsProtocol};
use parking_lot::Mutex;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

const DNS_CLUSTER: &str = "outbound|8080||dns.example";

fn any<M: Message>(url: &str, m: &M) -> Any {
    Any {
        type_url: url.into(),
        value: m.encode_to_vec(),
    }
}

fn typed(t: cluster::DiscoveryType) -> Option<cluster::ClusterDiscoveryType> {
    Some(cluster::ClusterDiscoveryType::Type(t as i32))
}

fn clusters(upstream_port: u16) -> Vec<Any> {
    #[allow(deprecated)]
    let dns = Cluster {
        name: DNS_CLUSTER.into(),
        cluster_discovery_type: typed(cluster::DiscoveryType::StrictDns),
        dns_lookup_family: cluster::DnsLookupFamily::V4Only as i32,
        dns_refresh_rate: Some(PbDuration {
            seconds: 1,
            nanos: 0,
        }),
        connect_timeout: Some(PbDuration {
            seconds: 1,
            nanos: 0,
        }),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: DNS_CLUSTER.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(Address {
                            address: Some(address::Address::SocketAddress(SocketAddress {
                                address: "localhost".into(),
                                port_specifier: Some(socket_address::PortSpecifier::PortValue(
                                    upstream_port.into(),
                                )),
                                ..Default::default()
                            })),
                        }),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let blackhole = Cluster {
        name: "BlackHoleCluster".into(),
        cluster_discovery_type: typed(cluster::DiscoveryType::Static),
        ..Default::default()
    };
    let passthrough = Cluster {
        name: "PassthroughCluster".into(),
        cluster_discovery_type: typed(cluster::DiscoveryType::OriginalDst),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        ..Default::default()
    };
    [dns, blackhole, passthrough]
        .iter()
        .map(|c| any(type_url::CLUSTER, c))
        .collect()
}

fn to_cluster(c: &str) -> Option<route::Action> {
    Some(route::Action::Route(RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(c.into())),
        ..Default::default()
    }))
}

fn vhost(
    domain: &str,
    action: Option<route::Action>,
    response_header: Option<(&str, &str)>,
) -> VirtualHost {
    VirtualHost {
        name: domain.into(),
        domains: vec![domain.into()],
        routes: vec![Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            action,
            response_headers_to_add: response_header
                .map(|(k, v)| HeaderValueOption {
                    header: Some(HeaderValue {
                        key: k.into(),
                        value: v.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn routes() -> Vec<Any> {
    let rc = RouteConfiguration {
        name: "http_proxy".into(),
        virtual_hosts: vec![
            vhost("dns.example", to_cluster(DNS_CLUSTER), None),
            vhost("blackhole.example", to_cluster("BlackHoleCluster"), None),
            vhost(
                "blocked.example",
                Some(route::Action::DirectResponse(DirectResponseAction {
                    status: 502,
                    body: Some(DataSource {
                        specifier: Some(data_source::Specifier::InlineString(
                            "blocked by the mesh".into(),
                        )),
                        ..Default::default()
                    }),
                    ..Default::default()
                })),
                Some(("x-mesh-route", "blocked")),
            ),
            vhost("*", to_cluster("PassthroughCluster"), None),
        ],
        ..Default::default()
    };
    vec![any(type_url::ROUTE, &rc)]
}

/// Answers each initial request once, and records every request.
#[derive(Clone)]
struct FakePilot {
    upstream_port: u16,
    requests: Arc<Mutex<Vec<DiscoveryRequest>>>,
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
        let port = self.upstream_port;
        tokio::spawn(async move {
            let mut n = 0;
            while let Some(Ok(r)) = inbound.next().await {
                log.lock().push(r.clone());
                n += 1;
                if !r.response_nonce.is_empty() {
                    continue; // an ACK or NACK
                }
                let resources = match r.type_url.as_str() {
                    type_url::CLUSTER => clusters(port),
                    type_url::LISTENER => vec![listener_any("virtualOutbound", "http_proxy")],
                    type_url::ROUTE => routes(),
                    _ => continue,
                };
                let resp = DiscoveryResponse {
                    version_info: "1".into(),
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

#[tokio::test]
async fn strict_dns_blackhole_passthrough_and_direct_response_over_ads() {
    let upstream = common::upstream("dns-upstream").await;
    let other = common::upstream("original-destination").await;
    let pilot = FakePilot {
        upstream_port: upstream.port(),
        requests: Default::default(),
    };
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pilot_addr = l.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(pilot.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );

    let (stop, stopped) = common::stopper();
    let config = SharedConfig::default();
    let node = common::node("sleep-v1", "sleep");
    let readiness = mesh_runtime::Readiness::new(&["xds"]);
    let ctx = common::context(
        config.clone(),
        IdentitySlot::default(),
        node.clone(),
        "127.0.0.1:9".parse().unwrap(),
    );
    tokio::spawn(mesh_proxy::xds::run_client(
        XdsClientConfig {
            addr: format!("http://{pilot_addr}"),
            protocol: XdsProtocol::Sotw,
            tls: None,
        },
        node.node(),
        config.clone(),
        readiness.clone(),
        ctx.metrics.clone(),
        stopped(),
    ));
    let dns_metrics = DnsMetrics::default();
    tokio::spawn(mesh_proxy::cluster::dns::run(
        config.clone(),
        Arc::new(SystemResolver),
        dns_metrics.clone(),
        stopped(),
    ));
    let proxy_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = proxy_l.local_addr().unwrap();
    tokio::spawn(serve_routed(
        proxy_l,
        ctx.clone(),
        "virtualOutbound".into(),
        RoutedKind::SidecarOutbound,
        stopped(),
    ));

    // The DNS cluster is served once `localhost` resolved (no EDS involved).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let cfg = config.load();
        let ready = cfg.route_table_for("virtualOutbound").is_some()
            && cfg
                .endpoints
                .get(DNS_CLUSTER)
                .is_some_and(|e| !e.addrs.is_empty());
        if ready {
            assert_eq!(
                cfg.endpoints[DNS_CLUSTER].addrs,
                vec![std::net::SocketAddr::from((
                    [127, 0, 0, 1],
                    upstream.port()
                ))]
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dns cluster never resolved"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(readiness.is_ready());
    assert!(dns_metrics.count_of(DNS_CLUSTER, "success") >= 1);

    let (status, _, body) = common::send(proxy, "http://dns.example/x", &[]).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "dns-upstream /x"));

    // direct_response: status, inline body and the route's response header.
    let (status, headers, body) = common::send(proxy, "http://blocked.example/", &[]).await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (502, "blocked by the mesh")
    );
    assert_eq!(headers["x-mesh-route"], "blocked");

    // BlackHoleCluster: 503 at once, no healthy upstream.
    let (status, _, body) = common::send(proxy, "http://blackhole.example/", &[]).await;
    assert_eq!(status.as_u16(), 503, "{body}");
    assert!(body.contains("no healthy upstream"), "{body}");
    common::wait_for_metrics(
        &ctx.metrics,
        &["response_code=\"503\"", "response_flags=\"UH\""],
    )
    .await;

    // PassthroughCluster: the destination is the request's authority.
    let (status, _, body) = common::send(proxy, &format!("http://{other}/through"), &[]).await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (200, "original-destination /through")
    );

    // Nothing was asked of EDS: every cluster here brings its own endpoints.
    assert!(
        !pilot
            .requests
            .lock()
            .iter()
            .any(|r| r.type_url == type_url::ENDPOINT),
        "EDS was requested"
    );
    stop.send(true).unwrap();
}
