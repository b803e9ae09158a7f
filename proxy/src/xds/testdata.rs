//! Envoy resources for tests, shaped like Pilot's (see docs/contracts.md).

#![allow(clippy::unwrap_used)]

use mesh_proto::envoy::envoy::config::cluster::v3::{Cluster, cluster};
use mesh_proto::envoy::envoy::config::core::v3::{
    Address, SocketAddress, TransportSocket, address, socket_address, transport_socket,
};
use mesh_proto::envoy::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use mesh_proto::envoy::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use mesh_proto::envoy::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster, route,
    route_action, route_match, weighted_cluster,
};
use mesh_proto::envoy::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds, http_connection_manager,
};
use mesh_proto::envoy::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SubjectAltNameMatcher, UpstreamTlsContext,
    common_tls_context,
};
use mesh_proto::envoy::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use mesh_proto::envoy::google::protobuf::{Any, UInt32Value};
use mesh_proto::type_url;
use prost::Message;

fn any(url: &str, m: &impl Message) -> Any {
    Any {
        type_url: url.into(),
        value: m.encode_to_vec(),
    }
}

/// A listener whose HCM uses RDS `route`.
pub fn listener_any(name: &str, route: &str) -> Any {
    let hcm = HttpConnectionManager {
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            route_config_name: route.into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    any(
        type_url::LISTENER,
        &Listener {
            name: name.into(),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "envoy.filters.network.http_connection_manager".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(any(
                        type_url::HTTP_CONNECTION_MANAGER,
                        &hcm,
                    ))),
                }],
                ..Default::default()
            }],
            ..Default::default()
        },
    )
}

/// An EDS cluster, with mTLS expecting `san` when given.
pub fn cluster_any(name: &str, san: Option<&str>) -> Any {
    let transport_socket = san.map(|san| {
        let ctx = UpstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                alpn_protocols: vec!["istio".into()],
                validation_context_type: Some(
                    common_tls_context::ValidationContextType::CombinedValidationContext(
                        common_tls_context::CombinedCertificateValidationContext {
                            default_validation_context: Some(CertificateValidationContext {
                                match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
                                    san_type: 4,
                                    matcher: Some(StringMatcher {
                                        match_pattern: Some(string_matcher::MatchPattern::Exact(
                                            san.into(),
                                        )),
                                        ..Default::default()
                                    }),
                                    ..Default::default()
                                }],
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ),
                ),
                ..Default::default()
            }),
            sni: format!("outbound_.9080_._.{name}"),
            ..Default::default()
        };
        TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(any(
                type_url::UPSTREAM_TLS_CONTEXT,
                &ctx,
            ))),
        }
    });
    any(
        type_url::CLUSTER,
        &Cluster {
            name: name.into(),
            eds_cluster_config: Some(cluster::EdsClusterConfig {
                service_name: name.into(),
                ..Default::default()
            }),
            transport_socket,
            ..Default::default()
        },
    )
}

/// One virtual host `domain` with one prefix route to `cluster`.
pub fn route_any(name: &str, domain: &str, prefix: &str, cluster: &str) -> Any {
    route_config(
        name,
        domain,
        vec![(
            prefix.to_string(),
            route_action::ClusterSpecifier::Cluster(cluster.into()),
        )],
    )
}

/// One virtual host `domain` with one prefix route `/` split by weight.
pub fn weighted_route_any(name: &str, domain: &str, clusters: &[(&str, u32)]) -> Any {
    let wc = WeightedCluster {
        clusters: clusters
            .iter()
            .map(|(c, w)| weighted_cluster::ClusterWeight {
                name: (*c).into(),
                weight: Some(UInt32Value { value: *w }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    route_config(
        name,
        domain,
        vec![(
            "/".into(),
            route_action::ClusterSpecifier::WeightedClusters(wc),
        )],
    )
}

fn route_config(
    name: &str,
    domain: &str,
    routes: Vec<(String, route_action::ClusterSpecifier)>,
) -> Any {
    any(
        type_url::ROUTE,
        &RouteConfiguration {
            name: name.into(),
            virtual_hosts: vec![VirtualHost {
                name: domain.into(),
                domains: vec![domain.into()],
                routes: routes
                    .into_iter()
                    .map(|(prefix, spec)| Route {
                        r#match: Some(RouteMatch {
                            path_specifier: Some(route_match::PathSpecifier::Prefix(prefix)),
                            ..Default::default()
                        }),
                        action: Some(route::Action::Route(RouteAction {
                            cluster_specifier: Some(spec),
                            ..Default::default()
                        })),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        },
    )
}

/// A route configuration whose only route has an invalid regex.
pub fn bad_regex_route_any(name: &str) -> Any {
    any(
        type_url::ROUTE,
        &RouteConfiguration {
            name: name.into(),
            virtual_hosts: vec![VirtualHost {
                name: "x".into(),
                domains: vec!["x".into()],
                routes: vec![Route {
                    r#match: Some(RouteMatch {
                        path_specifier: Some(route_match::PathSpecifier::SafeRegex(RegexMatcher {
                            regex: "(unclosed".into(),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }),
                    action: Some(route::Action::Route(RouteAction {
                        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                            "c".into(),
                        )),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        },
    )
}

/// Endpoints of `name` at `addrs`.
pub fn cla_any(name: &str, addrs: &[&str]) -> Any {
    let lb_endpoints = addrs
        .iter()
        .map(|a| {
            let sa: std::net::SocketAddr = a.parse().unwrap();
            LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                    address: Some(Address {
                        address: Some(address::Address::SocketAddress(SocketAddress {
                            address: sa.ip().to_string(),
                            port_specifier: Some(socket_address::PortSpecifier::PortValue(
                                u32::from(sa.port()),
                            )),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            }
        })
        .collect();
    any(
        type_url::ENDPOINT,
        &ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints,
                ..Default::default()
            }],
            ..Default::default()
        },
    )
}
