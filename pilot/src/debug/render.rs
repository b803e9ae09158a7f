//! Hand-written JSON views of Envoy resources (envoy-types has no serde).

use mesh_proto::envoy::envoy::config::cluster::v3::{Cluster, cluster};
use mesh_proto::envoy::envoy::config::core::v3::{
    Address, address, socket_address, transport_socket,
};
use mesh_proto::envoy::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use mesh_proto::envoy::envoy::config::listener::v3::{Listener, filter};
use mesh_proto::envoy::envoy::config::route::v3::{
    HeaderMatcher, Route, RouteConfiguration, header_matcher, route, route_action, route_match,
};
use mesh_proto::envoy::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use mesh_proto::envoy::envoy::extensions::transport_sockets::tls::v3::{
    UpstreamTlsContext, common_tls_context,
};
use mesh_proto::envoy::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use prost::Message;
use serde_json::{Value, json};

use crate::translate::{EncodedConfig, ProxyConfig};

/// The whole config of one proxy, with each type's version.
pub fn config(cfg: &ProxyConfig, encoded: &EncodedConfig) -> Value {
    json!({
        "listeners": {"version": encoded.listeners.version, "resources": cfg.listeners.iter().map(listener).collect::<Vec<_>>()},
        "routes": {"version": encoded.routes.version, "resources": cfg.routes.iter().map(route_config).collect::<Vec<_>>()},
        "clusters": {"version": encoded.clusters.version, "resources": cfg.clusters.iter().map(cluster).collect::<Vec<_>>()},
        "endpoints": {"version": encoded.endpoints.version, "resources": cfg.endpoints.iter().map(load_assignment).collect::<Vec<_>>()},
        "skipped": cfg.skipped.iter().map(|s| json!({"virtualService": s.virtual_service, "reason": s.reason})).collect::<Vec<_>>(),
    })
}

fn addr(a: Option<&Address>) -> Value {
    match a.and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(s)) => match s.port_specifier {
            Some(socket_address::PortSpecifier::PortValue(p)) => {
                json!(format!("{}:{p}", s.address))
            }
            _ => json!(s.address),
        },
        _ => Value::Null,
    }
}

fn listener(l: &Listener) -> Value {
    let chains: Vec<Value> = l
        .filter_chains
        .iter()
        .flat_map(|fc| &fc.filters)
        .map(|f| {
            let rds = match &f.config_type {
                Some(filter::ConfigType::TypedConfig(any)) => {
                    HttpConnectionManager::decode(any.value.as_slice())
                        .ok()
                        .and_then(|h| match h.route_specifier {
                            Some(http_connection_manager::RouteSpecifier::Rds(r)) => {
                                Some(r.route_config_name)
                            }
                            _ => None,
                        })
                }
                _ => None,
            };
            json!({"filter": f.name, "rds": rds})
        })
        .collect();
    json!({"name": l.name, "address": addr(l.address.as_ref()), "filters": chains})
}

fn string_matcher(m: &StringMatcher) -> Value {
    match &m.match_pattern {
        Some(string_matcher::MatchPattern::Exact(s)) => json!({"exact": s}),
        Some(string_matcher::MatchPattern::Prefix(s)) => json!({"prefix": s}),
        Some(string_matcher::MatchPattern::Suffix(s)) => json!({"suffix": s}),
        Some(string_matcher::MatchPattern::SafeRegex(r)) => json!({"regex": r.regex}),
        other => json!(format!("{other:?}")),
    }
}

fn header(h: &HeaderMatcher) -> Value {
    let m = match &h.header_match_specifier {
        Some(header_matcher::HeaderMatchSpecifier::StringMatch(s)) => string_matcher(s),
        Some(header_matcher::HeaderMatchSpecifier::PresentMatch(p)) => json!({"present": p}),
        other => json!(format!("{other:?}")),
    };
    json!({"name": h.name, "match": m})
}

fn route_entry(r: &Route) -> Value {
    let m = r.r#match.as_ref();
    let path = match m.and_then(|m| m.path_specifier.as_ref()) {
        Some(route_match::PathSpecifier::Prefix(p)) => json!({"prefix": p}),
        Some(route_match::PathSpecifier::Path(p)) => json!({"path": p}),
        Some(route_match::PathSpecifier::SafeRegex(r)) => json!({"regex": r.regex}),
        other => json!(format!("{other:?}")),
    };
    let headers: Vec<Value> = m
        .map(|m| m.headers.iter().map(header).collect())
        .unwrap_or_default();
    let action = match &r.action {
        Some(route::Action::Route(ra)) => {
            let clusters = match &ra.cluster_specifier {
                Some(route_action::ClusterSpecifier::Cluster(c)) => {
                    json!([{"name": c, "weight": 100}])
                }
                Some(route_action::ClusterSpecifier::WeightedClusters(w)) => json!(w
                    .clusters
                    .iter()
                    .map(|c| json!({"name": c.name, "weight": c.weight.as_ref().map(|w| w.value)}))
                    .collect::<Vec<_>>()),
                other => json!(format!("{other:?}")),
            };
            let host_rewrite = match &ra.host_rewrite_specifier {
                Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(h)) => Some(h.clone()),
                _ => None,
            };
            json!({
                "clusters": clusters,
                "prefixRewrite": (!ra.prefix_rewrite.is_empty()).then_some(&ra.prefix_rewrite),
                "hostRewrite": host_rewrite,
                "timeoutMs": ra.timeout.as_ref().map(|d| d.seconds * 1000 + i64::from(d.nanos) / 1_000_000),
            })
        }
        Some(route::Action::Redirect(rd)) => json!({"redirect": format!("{rd:?}")}),
        other => json!(format!("{other:?}")),
    };
    json!({"name": r.name, "match": {"path": path, "headers": headers}, "action": action})
}

fn route_config(rc: &RouteConfiguration) -> Value {
    json!({
        "name": rc.name,
        "virtualHosts": rc.virtual_hosts.iter().map(|vh| json!({
            "name": vh.name,
            "domains": vh.domains,
            "routes": vh.routes.iter().map(route_entry).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn cluster(c: &Cluster) -> Value {
    let tls = c
        .transport_socket
        .as_ref()
        .and_then(|ts| match &ts.config_type {
            Some(transport_socket::ConfigType::TypedConfig(any)) => {
                UpstreamTlsContext::decode(any.value.as_slice()).ok()
            }
            _ => None,
        });
    let tls = tls.map(|t| {
        let sans: Vec<Value> = match t
            .common_tls_context
            .as_ref()
            .and_then(|c| c.validation_context_type.as_ref())
        {
            Some(common_tls_context::ValidationContextType::CombinedValidationContext(v)) => v
                .default_validation_context
                .iter()
                .flat_map(|d| &d.match_typed_subject_alt_names)
                .filter_map(|m| m.matcher.as_ref().map(string_matcher))
                .collect(),
            _ => Vec::new(),
        };
        json!({"sni": t.sni, "subjectAltNames": sans})
    });
    let discovery = match c.cluster_discovery_type {
        Some(cluster::ClusterDiscoveryType::Type(t)) => cluster::DiscoveryType::try_from(t)
            .map(|d| d.as_str_name().to_string())
            .unwrap_or_else(|_| t.to_string()),
        _ => "unknown".to_string(),
    };
    json!({
        "name": c.name,
        "type": discovery,
        "edsServiceName": c.eds_cluster_config.as_ref().map(|e| &e.service_name),
        "connectTimeoutMs": c.connect_timeout.as_ref().map(|d| d.seconds * 1000 + i64::from(d.nanos) / 1_000_000),
        "lbPolicy": cluster::LbPolicy::try_from(c.lb_policy).map(|p| p.as_str_name()).unwrap_or("unknown"),
        "tls": tls,
    })
}

fn load_assignment(cla: &ClusterLoadAssignment) -> Value {
    let eps: Vec<Value> = cla
        .endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .filter_map(|e| match &e.host_identifier {
            Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => Some(addr(ep.address.as_ref())),
            _ => None,
        })
        .collect();
    json!({"clusterName": cla.cluster_name, "endpoints": eps})
}
