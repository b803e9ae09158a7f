//! LDS: the sidecar's `virtualInbound` listener (`0.0.0.0:15006`; the proxy binds its own
//! `--inbound-addr`). A `tls_inspector` listener filter, then filter chains by transport
//! protocol as Envoy selects them: `tls` (mutual TLS, client certificate required) and, for
//! PERMISSIVE or DISABLE, `raw_buffer`; port-level modes get their own chains matched on
//! `destination_port`. Every chain's HTTP connection manager runs `jwt_authn`, the RBAC filters
//! (DENY, ALLOW, LOG) and the router. A Sidecar's `ingress[]` ports get chains of their own
//! (`sidecar_ingress.rs`).

use std::collections::BTreeMap;

use mesh_proto::envoy::envoy::config::core::v3::{TransportSocket, transport_socket};
use mesh_proto::envoy::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use mesh_proto::envoy::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};
use mesh_proto::envoy::envoy::extensions::filters::http::router::v3::Router;
use mesh_proto::envoy::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use mesh_proto::envoy::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};
use mesh_proto::envoy::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use mesh_proto::envoy::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, common_tls_context,
};
use mesh_proto::envoy::google::protobuf::{Any, BoolValue, UInt32Value};
use mesh_proto::type_url;
use prost::Name;

use super::cluster::ads_config_source;
use super::endpoint::socket;
use super::jwt::{JWT_FILTER, jwt_config};
use super::listener::HCM_FILTER;
use super::peer_authn::{MtlsMode, mtls_settings};
use super::proxy_info::ProxyInfo;
use super::rbac::{RBAC_FILTER, rbac_configs};
use super::resources::pack;
use super::sidecar_ingress::{additional_addresses, inbound_cluster_name, served_ports};
use super::tcp::TCP_PROXY_FILTER;
use crate::model::{IngressPort, IngressProtocol, Registry};

/// The inbound listener's name.
pub const VIRTUAL_INBOUND: &str = "virtualInbound";
/// Istio's inbound port.
pub const INBOUND_PORT: u32 = 15006;
/// The listener filter that tells TLS from plaintext.
pub const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
/// Where inbound requests go after the filters (the local application).
pub const INBOUND_PASSTHROUGH: &str = "InboundPassthroughClusterIpv4";

/// The sidecar's inbound listener. Ports of a Sidecar's `ingress[]` get their own chains to
/// `inbound|PORT||` (see `sidecar_ingress.rs`); the rest goes to the application as before.
pub fn inbound_listener(reg: &Registry, proxy: &ProxyInfo) -> Listener {
    let settings = mtls_settings(reg, proxy);
    let passthrough = hcm(reg, proxy, INBOUND_PASSTHROUGH, INBOUND_PORT);
    let ingress = served_ports(reg, proxy);
    // Every port with its own chains: port-level peer authentication and ingress ports.
    let mut ports: BTreeMap<u32, MtlsMode> = settings.ports.clone();
    for p in &ingress {
        ports.entry(u32::from(p.port)).or_insert(settings.mode);
    }
    let mut chains = Vec::new();
    for (port, mode) in &ports {
        let filter = match ingress.iter().find(|p| u32::from(p.port) == *port) {
            Some(p) => ingress_filter(reg, proxy, p),
            None => hcm_filter(passthrough.clone()),
        };
        chains.extend(chains_for(*mode, Some(*port), &filter));
    }
    chains.extend(chains_for(settings.mode, None, &hcm_filter(passthrough)));
    Listener {
        name: VIRTUAL_INBOUND.to_string(),
        address: Some(socket("0.0.0.0", INBOUND_PORT)),
        additional_addresses: additional_addresses(&ingress),
        listener_filters: vec![ListenerFilter {
            name: TLS_INSPECTOR.to_string(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(pack(
                &TlsInspector::type_url(),
                &TlsInspector::default(),
            ))),
            ..ListenerFilter::default()
        }],
        filter_chains: chains,
        ..Listener::default()
    }
}

/// The network filter of an ingress port: HTTP to `inbound|PORT||` through the inbound HTTP
/// filters, or a `tcp_proxy` to it.
fn ingress_filter(reg: &Registry, proxy: &ProxyInfo, p: &IngressPort) -> Filter {
    let cluster = inbound_cluster_name(p.port);
    match p.protocol {
        IngressProtocol::Http => hcm_filter(hcm(reg, proxy, &cluster, u32::from(p.port))),
        IngressProtocol::Tcp => {
            let tp = TcpProxy {
                stat_prefix: cluster.clone(),
                cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster)),
                ..TcpProxy::default()
            };
            Filter {
                name: TCP_PROXY_FILTER.to_string(),
                config_type: Some(filter::ConfigType::TypedConfig(pack(
                    &TcpProxy::type_url(),
                    &tp,
                ))),
            }
        }
    }
}

fn hcm_filter(hcm: Any) -> Filter {
    Filter {
        name: HCM_FILTER.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(hcm)),
    }
}

fn chains_for(mode: MtlsMode, port: Option<u32>, filter: &Filter) -> Vec<FilterChain> {
    let chain = |transport: &str, socket: Option<TransportSocket>| FilterChain {
        name: format!(
            "{}{transport}",
            port.map(|p| format!("{p}_")).unwrap_or_default()
        ),
        filter_chain_match: Some(FilterChainMatch {
            destination_port: port.map(|value| UInt32Value { value }),
            transport_protocol: transport.to_string(),
            ..FilterChainMatch::default()
        }),
        filters: vec![filter.clone()],
        transport_socket: socket,
        ..FilterChain::default()
    };
    match mode {
        MtlsMode::Strict => vec![chain("tls", Some(mtls_socket()))],
        MtlsMode::Permissive => vec![chain("tls", Some(mtls_socket())), chain("raw_buffer", None)],
        MtlsMode::Disable => vec![chain("raw_buffer", None)],
    }
}

/// The inbound HTTP connection manager: JWT, RBAC, Mixer, then the router to `cluster`.
fn hcm(reg: &Registry, proxy: &ProxyInfo, cluster: &str, stat_port: u32) -> Any {
    let mut filters = Vec::new();
    if let Some(jwt) = jwt_config(reg, proxy) {
        filters.push(http_filter_of(JWT_FILTER, pack(&type_name(&jwt), &jwt)));
    }
    for rbac in rbac_configs(reg, proxy) {
        filters.push(http_filter_of(RBAC_FILTER, pack(&type_name(&rbac), &rbac)));
    }
    // Mixer Check/Report with the quotas bound to this workload's services (mixer_filter.rs).
    filters.push(super::mixer_filter::inbound_filter(reg, proxy));
    filters.push(http_filter_of(
        "envoy.filters.http.router",
        pack(&Router::type_url(), &Router::default()),
    ));
    let route_config = RouteConfiguration {
        name: "inbound|http|0".to_string(),
        virtual_hosts: vec![VirtualHost {
            name: "inbound|http|0".to_string(),
            domains: vec!["*".to_string()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                    ..RouteMatch::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        cluster.to_string(),
                    )),
                    ..RouteAction::default()
                })),
                typed_per_filter_config: super::mixer_filter::inbound_route_config(reg, proxy)
                    .map(|c| (super::mixer_filter::MIXER_FILTER.to_string(), c))
                    .into_iter()
                    .collect(),
                ..Route::default()
            }],
            ..VirtualHost::default()
        }],
        ..RouteConfiguration::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: format!("inbound_0.0.0.0_{stat_port}"),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            route_config,
        )),
        http_filters: filters,
        ..HttpConnectionManager::default()
    };
    pack(type_url::HTTP_CONNECTION_MANAGER, &hcm)
}

fn type_name<M: Name>(_: &M) -> String {
    M::type_url()
}

fn http_filter_of(name: &str, config: Any) -> HttpFilter {
    HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..HttpFilter::default()
    }
}

/// Istio's inbound mutual TLS: SDS `default` certificate, SDS `ROOTCA` validation, client
/// certificate required, ALPN `istio` and `http/1.1`.
fn mtls_socket() -> TransportSocket {
    let sds = |name: &str| SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ads_config_source()),
    };
    let tls = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds("default")],
            alpn_protocols: vec!["istio".to_string(), "http/1.1".to_string()],
            validation_context_type: Some(
                common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(sds(
                    "ROOTCA",
                )),
            ),
            ..CommonTlsContext::default()
        }),
        require_client_certificate: Some(BoolValue { value: true }),
        ..DownstreamTlsContext::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(
            type_url::DOWNSTREAM_TLS_CONTEXT,
            &tls,
        ))),
    }
}
