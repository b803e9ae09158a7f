//! Hand-written JSON views of Envoy resources (envoy-types has no serde): names, domains,
//! routes and their clusters, cluster type/LB/TLS, endpoint addresses and health. Each route
//! names the VirtualService it came from (`virtualService`, `name.namespace`), as Istio's route
//! metadata lets `istioctl proxy-config routes` do.

use mesh_proto::envoy::envoy::config::cluster::v3::{Cluster, cluster};
use mesh_proto::envoy::envoy::config::core::v3::{
    Address, HealthStatus, TrafficDirection, address, socket_address, transport_socket,
};
use mesh_proto::envoy::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use mesh_proto::envoy::envoy::config::listener::v3::{Listener, filter};
use mesh_proto::envoy::envoy::config::route::v3::{
    HeaderMatcher, Route, RouteConfiguration, header_matcher, route, route_action, route_match,
};
use mesh_proto::envoy::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use mesh_proto::envoy::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use mesh_proto::envoy::envoy::extensions::transport_sockets::tls::v3::{
    UpstreamTlsContext, common_tls_context,
};
use mesh_proto::envoy::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use prost::Message;
use serde_json::{Value, json};

use crate::model::Registry;
use crate::translate::{EncodedConfig, HTTP_PROXY_ROUTE, ProxyConfig};

/// The whole config of one proxy, with each type's version; `reg` (the registry it was
/// translated from) names the VirtualService behind each route.
pub fn config(cfg: &ProxyConfig, encoded: &EncodedConfig, reg: &Registry) -> Value {
    json!({
        "listeners": {"version": encoded.listeners.version, "resources": cfg.listeners.iter().map(listener).collect::<Vec<_>>()},
        "routes": {"version": encoded.routes.version, "resources": cfg.routes.iter().map(|rc| route_config(rc, reg)).collect::<Vec<_>>()},
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
    let mut http = false;
    let mut tcp = false;
    let filters: Vec<Value> = l
        .filter_chains
        .iter()
        .flat_map(|fc| {
            let m = fc.filter_chain_match.as_ref();
            let chain_match = json!({
                "destinationPort": m.and_then(|m| m.destination_port.as_ref()).map(|p| p.value),
                "transportProtocol": m.map(|m| m.transport_protocol.as_str()).filter(|t| !t.is_empty()),
                "serverNames": m.map(|m| m.server_names.clone()).unwrap_or_default(),
            });
            fc.filters.iter().map(move |f| (chain_match.clone(), f))
        })
        .map(|(chain_match, f)| {
            let any = match &f.config_type {
                Some(filter::ConfigType::TypedConfig(any)) => Some(any),
                _ => None,
            };
            let is = |suffix: &str| any.is_some_and(|a| a.type_url.ends_with(suffix));
            let mut rds = None;
            let mut inline_route = None;
            let mut cluster = None;
            if is(".HttpConnectionManager") {
                http = true;
                rds = any
                    .and_then(|a| HttpConnectionManager::decode(a.value.as_slice()).ok())
                    .and_then(|h| match h.route_specifier {
                        Some(http_connection_manager::RouteSpecifier::Rds(r)) => {
                            Some(r.route_config_name)
                        }
                        Some(http_connection_manager::RouteSpecifier::RouteConfig(rc)) => {
                            inline_route = Some(rc.name);
                            None
                        }
                        _ => None,
                    });
            } else if is(".TcpProxy") {
                tcp = true;
                cluster = any
                    .and_then(|a| TcpProxy::decode(a.value.as_slice()).ok())
                    .and_then(|t| match t.cluster_specifier {
                        Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => Some(c),
                        Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => Some(
                            w.clusters
                                .iter()
                                .map(|c| c.name.as_str())
                                .collect::<Vec<_>>()
                                .join(","),
                        ),
                        None => None,
                    });
            }
            json!({
                "filter": f.name,
                "rds": rds,
                "inlineRoute": inline_route,
                "cluster": cluster,
                "match": chain_match,
            })
        })
        .collect();
    let kind = match (http, tcp) {
        (true, true) => "HTTP+TCP",
        (true, false) => "HTTP",
        (false, true) => "TCP",
        (false, false) => "UNKNOWN",
    };
    let direction = TrafficDirection::try_from(l.traffic_direction)
        .map(|d| d.as_str_name())
        .unwrap_or("UNSPECIFIED");
    json!({
        "name": l.name,
        "address": addr(l.address.as_ref()),
        "type": kind,
        "trafficDirection": direction,
        "filters": filters,
    })
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

fn route_entry(r: &Route, vs: Option<String>) -> Value {
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
    json!({
        "name": r.name,
        "match": {"path": path, "headers": headers},
        "action": action,
        "virtualService": vs,
    })
}

/// The VirtualServices (`(namespace, name)`) that can have made the routes of virtual host
/// `vhost` (`host:port`) in route table `table`.
fn vhost_virtual_services<'r>(
    reg: &'r Registry,
    table: &str,
    vhost: &str,
) -> Vec<(&'r str, &'r str)> {
    let host = vhost.rsplit_once(':').map_or(vhost, |(h, _)| h);
    if table == HTTP_PROXY_ROUTE {
        reg.mesh_virtual_services(host)
            .take(1)
            .map(|v| (v.namespace.as_str(), v.name.as_str()))
            .collect()
    } else {
        reg.virtual_services
            .iter()
            .filter(|v| !v.spec.gateways.is_empty() && v.spec.hosts.iter().any(|h| h == host))
            .map(|v| (v.namespace.as_str(), v.name.as_str()))
            .collect()
    }
}

/// `name.namespace` of the VirtualService a route came from: the one whose generated route
/// name (`ns.name.N`) it carries, else the only candidate; `None` for a default route.
fn route_virtual_service(r: &Route, candidates: &[(&str, &str)]) -> Option<String> {
    if r.name == "default" || candidates.is_empty() {
        return None;
    }
    let by_name = candidates
        .iter()
        .find(|(ns, name)| r.name.starts_with(&format!("{ns}.{name}.")));
    match (by_name, candidates) {
        (Some((ns, name)), _) | (None, [(ns, name)]) => Some(format!("{name}.{ns}")),
        (None, many) => Some(
            many.iter()
                .map(|(ns, name)| format!("{name}.{ns}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
    }
}

fn route_config(rc: &RouteConfiguration, reg: &Registry) -> Value {
    json!({
        "name": rc.name,
        "virtualHosts": rc.virtual_hosts.iter().map(|vh| {
            let candidates = vhost_virtual_services(reg, &rc.name, &vh.name);
            json!({
                "name": vh.name,
                "domains": vh.domains,
                "routes": vh.routes.iter().map(|r| route_entry(r, route_virtual_service(r, &candidates))).collect::<Vec<_>>(),
            })
        }).collect::<Vec<_>>(),
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
        "outlierDetection": c.outlier_detection.is_some(),
        "inlineEndpoints": c.load_assignment.as_ref().map(endpoint_list),
    })
}

/// Every endpoint of an assignment: address, health, weight, locality, priority.
fn endpoint_list(cla: &ClusterLoadAssignment) -> Vec<Value> {
    cla.endpoints
        .iter()
        .flat_map(|l| {
            let locality = l.locality.as_ref().map(|l| {
                [l.region.as_str(), l.zone.as_str(), l.sub_zone.as_str()]
                    .join("/")
                    .trim_end_matches('/')
                    .to_string()
            });
            l.lb_endpoints
                .iter()
                .map(move |e| (locality.clone(), l.priority, e))
        })
        .map(|(locality, priority, e)| {
            let address = match &e.host_identifier {
                Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => addr(ep.address.as_ref()),
                _ => Value::Null,
            };
            let health = HealthStatus::try_from(e.health_status)
                .map(|h| h.as_str_name())
                .unwrap_or("UNKNOWN");
            json!({
                "address": address,
                "health": health,
                "weight": e.load_balancing_weight.as_ref().map(|w| w.value),
                "locality": locality.filter(|l| !l.is_empty()),
                "priority": priority,
            })
        })
        .collect()
}

fn load_assignment(cla: &ClusterLoadAssignment) -> Value {
    json!({"clusterName": cla.cluster_name, "endpoints": endpoint_list(cla)})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str) -> Route {
        Route {
            name: name.to_string(),
            ..Route::default()
        }
    }

    #[test]
    fn names_the_virtual_service_of_a_route() {
        let both = [("default", "reviews"), ("default", "bookinfo")];
        assert_eq!(route_virtual_service(&route("default"), &both), None);
        assert_eq!(
            route_virtual_service(&route("default.bookinfo.2"), &both).as_deref(),
            Some("bookinfo.default")
        );
        // A named http rule: the only candidate, else every candidate.
        assert_eq!(
            route_virtual_service(&route("jason"), &both[..1]).as_deref(),
            Some("reviews.default")
        );
        assert_eq!(
            route_virtual_service(&route("jason"), &both).as_deref(),
            Some("reviews.default,bookinfo.default")
        );
        assert_eq!(route_virtual_service(&route("x.y.0"), &[]), None);
    }
}
