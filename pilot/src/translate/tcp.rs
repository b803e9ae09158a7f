//! TCP service ports: Istio's protocol selection, and the sidecar's `tcp_proxy` listener
//! `0.0.0.0_<port>` for each TCP port (cluster `outbound|P||FQDN`, or weighted clusters from
//! a VirtualService `tcp` rule); and a router's TLS passthrough listeners (Gateway servers
//! `protocol: TLS`, `tls.mode: PASSTHROUGH`), one filter chain per VirtualService `tls` rule
//! matched on the ClientHello's server name.

use mesh_proto::config::{L4MatchAttributes, RouteDestination, TcpRoute};
use mesh_proto::envoy::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use mesh_proto::envoy::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use mesh_proto::envoy::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use prost::Name;

use super::endpoint::socket;
use super::inbound::TLS_INSPECTOR;
use super::names::{cluster_name, gateway_listener};
use super::resources::pack;
use super::{ProxyInfo, Skipped};
use crate::model::{GatewayEntry, Port, Registry, Service, VirtualServiceEntry};

/// The filter's well-known name.
pub const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";

/// What a service port carries, by Istio's protocol selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortProtocol {
    /// `http`, `http2`, `grpc`, `grpc-web` — and, as before, any port without a declared
    /// protocol (Istio would sniff; the mesh routes it as HTTP).
    Http,
    /// `tcp`, `mongo`, `mysql`, `redis`, and `tls`/`https` (opaque to a sidecar).
    Tcp,
}

/// `appProtocol` first, else the port name's prefix (`<protocol>[-<suffix>]`), as Istio.
pub fn port_protocol(port: &Port) -> PortProtocol {
    let declared = port
        .app_protocol
        .as_deref()
        .or_else(|| {
            port.name
                .as_deref()
                .map(|n| n.split('-').next().unwrap_or(n))
        })
        .unwrap_or_default()
        .to_ascii_lowercase();
    match declared.as_str() {
        "tcp" | "mongo" | "mysql" | "redis" | "tls" | "https" => PortProtocol::Tcp,
        _ => PortProtocol::Http,
    }
}

/// The sidecar's TCP listeners, sorted by name. A port shared by several TCP services goes to
/// the first by FQDN (the proxy has no destination address to tell them apart in local mode).
pub fn sidecar_tcp_listeners(
    reg: &Registry,
    proxy: &ProxyInfo,
    skipped: &mut Vec<Skipped>,
) -> Vec<Listener> {
    let mut out: std::collections::BTreeMap<String, Listener> = Default::default();
    for svc in reg.services.values() {
        for port in svc
            .ports
            .iter()
            .filter(|p| port_protocol(p) == PortProtocol::Tcp)
        {
            let name = gateway_listener(u32::from(port.port));
            if out.contains_key(&name) {
                tracing::debug!(listener = %name, service = %svc.fqdn, "tcp port already taken by another service");
                continue;
            }
            let clusters = tcp_clusters(reg, svc, port.port, proxy, skipped);
            out.insert(name.clone(), tcp_listener(&name, port.port, clusters));
        }
    }
    out.into_values().collect()
}

/// Where connections to `svc:port` go: the first matching `tcp` rule of the service's
/// VirtualService, else the service's own cluster.
fn tcp_clusters(
    reg: &Registry,
    svc: &Service,
    port: u16,
    proxy: &ProxyInfo,
    skipped: &mut Vec<Skipped>,
) -> Vec<(String, u32)> {
    let default = vec![(cluster_name(port, "", &svc.fqdn), 1)];
    let Some(vs) = reg.mesh_virtual_services(&svc.fqdn).next() else {
        return default;
    };
    let rules = match vs.spec.tcp_routes() {
        Ok(r) => r,
        Err(e) => {
            skipped.push(Skipped::new(vs, format!("tcp: {e}")));
            return default;
        }
    };
    let Some(rule) = rules.iter().find(|r| rule_matches(r, port, proxy)) else {
        return default;
    };
    match weighted(reg, vs, &rule.route, port) {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => default,
        Err(e) => {
            skipped.push(Skipped::new(vs, format!("tcp: {e}")));
            default
        }
    }
}

fn rule_matches(rule: &TcpRoute, port: u16, proxy: &ProxyInfo) -> bool {
    let one = |m: &L4MatchAttributes| {
        m.port.is_none_or(|p| p == u32::from(port))
            && m.source_labels
                .iter()
                .all(|(k, v)| proxy.labels.get(k) == Some(v))
            && m.source_namespace
                .as_ref()
                .is_none_or(|ns| *ns == proxy.namespace)
            && (m.gateways.is_empty() || m.gateways.iter().any(|g| g == "mesh"))
    };
    rule.matches.is_empty() || rule.matches.iter().any(one)
}

/// `(cluster, weight)` for each destination (weight absent: 100 for a single destination).
pub fn weighted(
    reg: &Registry,
    vs: &VirtualServiceEntry,
    route: &[RouteDestination],
    port: u16,
) -> Result<Vec<(String, u32)>, String> {
    let mut out = Vec::with_capacity(route.len());
    for d in route {
        let host = reg.resolve(&d.destination.host, &vs.namespace);
        let dport = match d.destination.port.as_ref().and_then(|p| p.number) {
            Some(p) => {
                u16::try_from(p).map_err(|_| format!("destination port {p} is out of range"))?
            }
            None => match reg.services.get(&host) {
                Some(s) if s.ports.len() == 1 => s.ports[0].port,
                _ => port,
            },
        };
        let weight = match d.weight {
            None if route.len() == 1 => 100,
            None => 0,
            Some(w) => u32::try_from(w).map_err(|_| format!("negative weight {w}"))?,
        };
        if weight > 0 {
            out.push((
                cluster_name(
                    dport,
                    d.destination.subset.as_deref().unwrap_or_default(),
                    &host,
                ),
                weight,
            ));
        }
    }
    Ok(out)
}

/// Whether a Gateway server passes TLS through (`protocol: TLS`, `tls.mode: PASSTHROUGH`).
fn passthrough(server: &mesh_proto::config::Server) -> bool {
    server.port.protocol.eq_ignore_ascii_case("tls")
        && server
            .tls
            .as_ref()
            .and_then(|t| t.get("mode"))
            .and_then(|m| m.as_str())
            .is_some_and(|m| m.eq_ignore_ascii_case("passthrough"))
}

/// The router's TLS passthrough listeners, sorted by name: for each port of a passthrough
/// server of `gateways`, one filter chain per `tls` rule of the VirtualServices bound to them
/// (`server_names` = the matching matches' `sniHosts`, or the VirtualService's hosts for a rule
/// without matches), in VirtualService order.
pub fn gateway_passthrough_listeners(
    reg: &Registry,
    gateways: &[&GatewayEntry],
    skipped: &mut Vec<Skipped>,
) -> Vec<Listener> {
    let mut ports: std::collections::BTreeMap<u32, Vec<&GatewayEntry>> = Default::default();
    for gw in gateways {
        for server in gw.spec.servers.iter().filter(|s| passthrough(s)) {
            let list = ports.entry(server.port.number).or_default();
            if !list.iter().any(|g| std::ptr::eq(*g, *gw)) {
                list.push(gw);
            }
        }
    }
    let mut out = Vec::new();
    for (port, gws) in ports {
        let Ok(p16) = u16::try_from(port) else {
            continue;
        };
        let mut chains = Vec::new();
        for vs in &reg.virtual_services {
            if !gws
                .iter()
                .any(|g| vs.bound_to_gateway(&g.namespace, &g.name))
            {
                continue;
            }
            let rules = match vs.spec.tls_routes() {
                Ok(r) => r,
                Err(e) => {
                    skipped.push(Skipped::new(vs, format!("tls: {e}")));
                    continue;
                }
            };
            for rule in rules {
                let names: Vec<String> = if rule.matches.is_empty() {
                    vs.hosts.clone()
                } else {
                    rule.matches
                        .iter()
                        .filter(|m| m.port.is_none_or(|p| p == port))
                        .flat_map(|m| m.sni_hosts.iter().cloned())
                        .collect()
                };
                if names.is_empty() {
                    continue;
                }
                match weighted(reg, vs, &rule.route, p16) {
                    Ok(clusters) if !clusters.is_empty() => {
                        chains.push(tcp_chain(Some(names), clusters));
                    }
                    Ok(_) => {}
                    Err(e) => skipped.push(Skipped::new(vs, format!("tls: {e}"))),
                }
            }
        }
        if chains.is_empty() {
            continue;
        }
        out.push(Listener {
            name: gateway_listener(port),
            address: Some(socket("0.0.0.0", port)),
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
        });
    }
    out
}

/// A filter chain holding a `tcp_proxy` to `clusters`, matched on `server_names` when given.
pub(super) fn tcp_chain(
    server_names: Option<Vec<String>>,
    clusters: Vec<(String, u32)>,
) -> FilterChain {
    let stat_prefix = clusters.first().map(|(c, _)| c.clone()).unwrap_or_default();
    let specifier = if clusters.len() == 1 {
        tcp_proxy::ClusterSpecifier::Cluster(stat_prefix.clone())
    } else {
        tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
            clusters: clusters
                .into_iter()
                .map(
                    |(name, weight)| tcp_proxy::weighted_cluster::ClusterWeight {
                        name,
                        weight,
                        ..Default::default()
                    },
                )
                .collect(),
        })
    };
    let tp = TcpProxy {
        stat_prefix,
        cluster_specifier: Some(specifier),
        ..TcpProxy::default()
    };
    FilterChain {
        filter_chain_match: server_names.map(|server_names| FilterChainMatch {
            server_names,
            ..FilterChainMatch::default()
        }),
        filters: vec![Filter {
            name: TCP_PROXY_FILTER.to_string(),
            config_type: Some(filter::ConfigType::TypedConfig(pack(
                &TcpProxy::type_url(),
                &tp,
            ))),
        }],
        ..FilterChain::default()
    }
}

/// A `0.0.0.0_<port>` listener whose one filter is a `tcp_proxy` to `clusters`.
pub fn tcp_listener(name: &str, port: u16, clusters: Vec<(String, u32)>) -> Listener {
    Listener {
        name: name.to_string(),
        address: Some(socket("0.0.0.0", u32::from(port))),
        filter_chains: vec![tcp_chain(None, clusters)],
        ..Listener::default()
    }
}

#[cfg(test)]
mod tests {
    use mesh_proto::config::ConfigObject;
    use prost::Message;

    use super::*;
    use crate::galley_client::Snapshot;
    use crate::translate::{Options, ProxyType, translate};

    fn registry(v: serde_json::Value) -> Registry {
        let objs: Vec<ConfigObject> = serde_json::from_value(v).unwrap();
        Registry::from_snapshot(&Snapshot::from_objects(objs), "cluster.local")
    }

    fn sidecar() -> ProxyInfo {
        ProxyInfo {
            id: "sidecar~127.0.0.1~client.default~default.svc.cluster.local".into(),
            proxy_type: ProxyType::Sidecar,
            ip: "127.0.0.1".into(),
            pod: "client".into(),
            namespace: "default".into(),
            labels: [("app".to_string(), "client".to_string())].into(),
            service_account: None,
            workload_name: None,
        }
    }

    fn decode(l: &Listener) -> TcpProxy {
        let f = &l.filter_chains[0].filters[0];
        assert_eq!(f.name, TCP_PROXY_FILTER);
        let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            panic!("no typed config");
        };
        assert_eq!(any.type_url, TcpProxy::type_url());
        TcpProxy::decode(any.value.as_slice()).unwrap()
    }

    fn services() -> serde_json::Value {
        serde_json::json!([
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": "default"},
             "spec": {"ports": [{"name": "tcp-echo", "port": 9000}, {"name": "http", "port": 8080}]}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": "default"},
             "spec": {"ports": [{"name": "mongo", "port": 27017}]}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "cache", "namespace": "default"},
             "spec": {"ports": [{"name": "cache", "port": 6379, "appProtocol": "redis"}]}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
             "spec": {"ports": [{"name": "web", "port": 80}, {"name": "grpc-api", "port": 50051}]}}
        ])
    }

    #[test]
    fn protocol_selection_by_app_protocol_then_name_prefix() {
        let p = |name: Option<&str>, app: Option<&str>| Port {
            name: name.map(str::to_string),
            port: 1,
            protocol: Some("TCP".into()),
            app_protocol: app.map(str::to_string),
        };
        assert_eq!(port_protocol(&p(Some("tcp-echo"), None)), PortProtocol::Tcp);
        assert_eq!(port_protocol(&p(Some("mongo"), None)), PortProtocol::Tcp);
        assert_eq!(
            port_protocol(&p(Some("mysql-main"), None)),
            PortProtocol::Tcp
        );
        assert_eq!(
            port_protocol(&p(Some("x"), Some("redis"))),
            PortProtocol::Tcp
        );
        assert_eq!(
            port_protocol(&p(Some("tcp"), Some("http"))),
            PortProtocol::Http
        );
        assert_eq!(
            port_protocol(&p(Some("grpc-api"), None)),
            PortProtocol::Http
        );
        assert_eq!(port_protocol(&p(Some("http"), None)), PortProtocol::Http);
        // Kubernetes' L4 `protocol: TCP` says nothing about the application protocol.
        assert_eq!(port_protocol(&p(None, None)), PortProtocol::Http);
    }

    #[test]
    fn sidecar_gets_a_tcp_proxy_listener_per_tcp_port() {
        let reg = registry(services());
        let cfg = translate(
            &reg,
            &sidecar(),
            &Options {
                trust_domain: "cluster.local".into(),
            },
        );
        let names: Vec<&str> = cfg.listeners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "0.0.0.0_27017",
                "0.0.0.0_6379",
                "0.0.0.0_9000",
                "virtualInbound",
                "virtualOutbound"
            ]
        );
        let echo = cfg
            .listeners
            .iter()
            .find(|l| l.name == "0.0.0.0_9000")
            .unwrap();
        let tp = decode(echo);
        assert_eq!(
            tp.cluster_specifier,
            Some(tcp_proxy::ClusterSpecifier::Cluster(
                "outbound|9000||echo.default.svc.cluster.local".into()
            ))
        );
        assert_eq!(
            tp.stat_prefix,
            "outbound|9000||echo.default.svc.cluster.local"
        );
        // And the proxy's own decoder reads what pilot emits (the same Envoy message).
        assert!(
            cfg.clusters
                .iter()
                .any(|c| c.name == "outbound|9000||echo.default.svc.cluster.local")
        );
    }

    #[test]
    fn virtual_service_tcp_rule_gives_weighted_clusters() {
        let mut objs = services();
        objs.as_array_mut().unwrap().extend(serde_json::json!([
            {"apiVersion": "networking.istio.io/v1alpha3", "kind": "DestinationRule",
             "metadata": {"name": "echo", "namespace": "default"},
             "spec": {"host": "echo", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                                  {"name": "v2", "labels": {"version": "v2"}}]}},
            {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
             "metadata": {"name": "echo", "namespace": "default"},
             "spec": {"hosts": ["echo"], "tcp": [
                 {"match": [{"port": 9999}], "route": [{"destination": {"host": "db"}}]},
                 {"match": [{"port": 9000}], "route": [
                     {"destination": {"host": "echo", "subset": "v1", "port": {"number": 9000}}, "weight": 80},
                     {"destination": {"host": "echo", "subset": "v2", "port": {"number": 9000}}, "weight": 20}]}]}}
        ]).as_array().unwrap().clone());
        let reg = registry(objs);
        let cfg = translate(
            &reg,
            &sidecar(),
            &Options {
                trust_domain: "cluster.local".into(),
            },
        );
        let echo = cfg
            .listeners
            .iter()
            .find(|l| l.name == "0.0.0.0_9000")
            .unwrap();
        let Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) = decode(echo).cluster_specifier
        else {
            panic!("expected weighted clusters");
        };
        let got: Vec<(String, u32)> = w.clusters.into_iter().map(|c| (c.name, c.weight)).collect();
        assert_eq!(
            got,
            [
                (
                    "outbound|9000|v1|echo.default.svc.cluster.local".to_string(),
                    80
                ),
                (
                    "outbound|9000|v2|echo.default.svc.cluster.local".to_string(),
                    20
                )
            ]
        );
        assert!(cfg.skipped.is_empty(), "{:?}", cfg.skipped);
    }

    #[test]
    fn a_malformed_tcp_rule_is_reported_and_the_default_kept() {
        let mut objs = services();
        objs.as_array_mut().unwrap().push(serde_json::json!(
            {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
             "metadata": {"name": "db", "namespace": "default"},
             "spec": {"hosts": ["db"], "tcp": [{"route": "not a list"}]}}));
        let reg = registry(objs);
        let cfg = translate(
            &reg,
            &sidecar(),
            &Options {
                trust_domain: "cluster.local".into(),
            },
        );
        let db = cfg
            .listeners
            .iter()
            .find(|l| l.name == "0.0.0.0_27017")
            .unwrap();
        assert_eq!(
            decode(db).cluster_specifier,
            Some(tcp_proxy::ClusterSpecifier::Cluster(
                "outbound|27017||db.default.svc.cluster.local".into()
            ))
        );
        assert_eq!(cfg.skipped.len(), 1);
        assert_eq!(cfg.skipped[0].virtual_service, "default/db");
    }
}

#[cfg(test)]
mod gateway_tests {
    use mesh_proto::config::ConfigObject;
    use prost::Message;

    use super::*;
    use crate::galley_client::Snapshot;
    use crate::translate::{Options, translate};

    #[test]
    fn tls_passthrough_gateway_port_gets_sni_chains_instead_of_http() {
        let objs: Vec<ConfigObject> = serde_json::from_value(serde_json::json!([
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": "default"},
             "spec": {"ports": [{"name": "tls", "port": 8443}]}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
             "spec": {"ports": [{"name": "http", "port": 80}]}},
            {"apiVersion": "networking.istio.io/v1alpha3", "kind": "Gateway",
             "metadata": {"name": "gw", "namespace": "default"},
             "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
                 {"port": {"number": 443, "name": "tls", "protocol": "TLS"}, "hosts": ["*"],
                  "tls": {"mode": "PASSTHROUGH"}},
                 {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}},
            {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
             "metadata": {"name": "db", "namespace": "default"},
             "spec": {"hosts": ["db.example.com"], "gateways": ["gw"], "tls": [
                 {"match": [{"port": 443, "sniHosts": ["db.example.com"]}],
                  "route": [{"destination": {"host": "db"}}]}]}},
            {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
             "metadata": {"name": "web", "namespace": "default"},
             "spec": {"hosts": ["*"], "gateways": ["gw"], "http": [
                 {"route": [{"destination": {"host": "web"}}]}]}}
        ]))
        .unwrap();
        let reg = Registry::from_snapshot(&Snapshot::from_objects(objs), "cluster.local");
        let mut router =
            ProxyInfo::from_id("router~127.0.0.1~gw-1.istio-system~istio-system.svc.cluster.local")
                .unwrap();
        router
            .labels
            .insert("istio".into(), "ingressgateway".into());
        let cfg = translate(
            &reg,
            &router,
            &Options {
                trust_domain: "cluster.local".into(),
            },
        );
        let names: Vec<&str> = cfg.listeners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["0.0.0.0_443", "0.0.0.0_80"]);
        let routes: Vec<&str> = cfg.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            routes,
            ["http.80"],
            "no HTTP routes for the passthrough port"
        );
        let tls = &cfg.listeners[0];
        assert_eq!(tls.listener_filters[0].name, TLS_INSPECTOR);
        assert_eq!(tls.filter_chains.len(), 1);
        let chain = &tls.filter_chains[0];
        assert_eq!(
            chain.filter_chain_match.as_ref().unwrap().server_names,
            ["db.example.com"]
        );
        let Some(filter::ConfigType::TypedConfig(any)) = &chain.filters[0].config_type else {
            panic!("no typed config");
        };
        let tp = TcpProxy::decode(any.value.as_slice()).unwrap();
        assert_eq!(
            tp.cluster_specifier,
            Some(tcp_proxy::ClusterSpecifier::Cluster(
                "outbound|8443||db.default.svc.cluster.local".into()
            ))
        );
    }
}
