//! LDS: the sidecar's `virtualOutbound`, or one `0.0.0.0_<port>` per gateway server port.

use mesh_proto::envoy::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use mesh_proto::envoy::envoy::extensions::filters::http::cors::v3::Cors;
use mesh_proto::envoy::envoy::extensions::filters::http::fault::v3::HttpFault;
use mesh_proto::envoy::envoy::extensions::filters::http::router::v3::Router;
use mesh_proto::envoy::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use mesh_proto::type_url;

use super::cluster::ads_config_source;
use super::endpoint::socket;
use super::names::{HTTP_PROXY_ROUTE, VIRTUAL_OUTBOUND, gateway_listener, gateway_route};
use super::resources::pack;
use super::traffic::{CORS_FILTER, FAULT_FILTER};
use prost::Name;

/// The well-known HCM filter name.
pub const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";
const ROUTER_TYPE_URL: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

/// The sidecar's outbound listener (`127.0.0.1:15001`; the proxy binds its own address).
pub fn sidecar_listener(mixer: HttpFilter) -> Listener {
    http_listener(
        VIRTUAL_OUTBOUND,
        "127.0.0.1",
        15001,
        HTTP_PROXY_ROUTE,
        mixer,
    )
}

/// A gateway listener for `port`, routed by `http.<port>`, with `chains` (one plain chain, or
/// one per HTTPS server: `gateway_tls::port_chains`).
pub fn gateway_listener_for(
    port: u32,
    mixer: HttpFilter,
    chains: Vec<super::gateway_tls::GatewayChain>,
) -> Listener {
    let mut l = http_listener(
        &gateway_listener(port),
        "0.0.0.0",
        port,
        &gateway_route(port),
        mixer,
    );
    super::gateway_tls::apply_chains(&mut l, chains);
    l
}

/// `mixer` is the `mixer` HTTP filter (`mixer_filter::outbound_filter`).
fn http_listener(
    name: &str,
    ip: &str,
    port: u32,
    route_config: &str,
    mixer: HttpFilter,
) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: name.to_string(),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source()),
            route_config_name: route_config.to_string(),
        })),
        // As Istio orders them: mixer, CORS and fault injection (configured per route), then the
        // router.
        http_filters: vec![
            mixer,
            HttpFilter {
                name: CORS_FILTER.to_string(),
                config_type: Some(http_filter::ConfigType::TypedConfig(pack(
                    &Cors::type_url(),
                    &Cors::default(),
                ))),
                ..HttpFilter::default()
            },
            HttpFilter {
                name: FAULT_FILTER.to_string(),
                config_type: Some(http_filter::ConfigType::TypedConfig(pack(
                    &HttpFault::type_url(),
                    &HttpFault::default(),
                ))),
                ..HttpFilter::default()
            },
            HttpFilter {
                name: "envoy.filters.http.router".to_string(),
                config_type: Some(http_filter::ConfigType::TypedConfig(pack(
                    ROUTER_TYPE_URL,
                    &Router::default(),
                ))),
                ..HttpFilter::default()
            },
        ],
        ..HttpConnectionManager::default()
    };
    Listener {
        name: name.to_string(),
        address: Some(socket(ip, port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: HCM_FILTER.to_string(),
                config_type: Some(filter::ConfigType::TypedConfig(pack(
                    type_url::HTTP_CONNECTION_MANAGER,
                    &hcm,
                ))),
            }],
            ..FilterChain::default()
        }],
        ..Listener::default()
    }
}
