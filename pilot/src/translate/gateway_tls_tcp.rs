//! Gateway servers that terminate TLS and forward the decrypted bytes (`port.protocol: TLS`,
//! `tls.mode: SIMPLE|MUTUAL`), as Istio: the server's TLS context as for an HTTPS server
//! ([`super::gateway_tls::downstream_tls_context`], without ALPN: the bytes are opaque), and a
//! `tcp_proxy` to the first `tcp` rule of the VirtualServices bound to the gateway whose hosts
//! meet the server's and whose `match` applies (`port` = the server's port, `gateways` naming
//! the gateway; `destinationSubnets` and `sourceLabels` are not looked at, as in Istio's
//! `l4MultiMatch`: the router's listener is bound to `0.0.0.0`).
//!
//! One filter chain per server on the port's `0.0.0.0_<port>` listener, matched on the
//! server's hosts (`server_names`; a `*` host: no name match). A server no rule routes gets no
//! chain and is reported on the skipped list (under the gateway's `namespace/name`).

use std::collections::BTreeMap;

use mesh_proto::config::{L4MatchAttributes, Server};
use mesh_proto::envoy::envoy::config::core::v3::{TransportSocket, transport_socket};
use mesh_proto::envoy::envoy::config::listener::v3::{
    FilterChain, FilterChainMatch, Listener, ListenerFilter, listener_filter,
};
use mesh_proto::envoy::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use mesh_proto::type_url;
use prost::Name;

use super::Skipped;
use super::endpoint::socket;
use super::gateway_tls::{
    ServerTls, TLS_TRANSPORT_SOCKET, bare_host, covers, downstream_tls_context,
};
use super::inbound::TLS_INSPECTOR;
use super::names::gateway_listener;
use super::resources::pack;
use super::tcp::{tcp_chain, weighted};
use crate::model::{GatewayEntry, Registry, VirtualServiceEntry};

/// Whether `server` terminates TLS and forwards TCP: `protocol: TLS` with `tls.mode` SIMPLE or
/// MUTUAL (unset is PASSTHROUGH, Istio's default).
pub fn terminates_tcp(server: &Server) -> bool {
    server.port.protocol.eq_ignore_ascii_case("tls")
        && ServerTls::of(server).is_some_and(|t| {
            t.mode.as_deref().is_some_and(|m| {
                m.eq_ignore_ascii_case("simple") || m.eq_ignore_ascii_case("mutual")
            })
        })
}

/// Whether a `tcp[].match[]` list applies to `server` of gateway `gw` (as Istio's
/// `l4MultiMatch`): no matches, or one whose `port` (if any) is the server's and whose
/// `gateways` (if any) name `gw` (`namespace/name`, or `name` in `vs`'s namespace).
fn applies(
    matches: &[L4MatchAttributes],
    server: &Server,
    gw: &GatewayEntry,
    vs: &VirtualServiceEntry,
) -> bool {
    let names_gw = |g: &String| match g.split_once('/') {
        Some((ns, n)) => ns == gw.namespace && n == gw.name,
        None => *g == gw.name && vs.namespace == gw.namespace,
    };
    matches.is_empty()
        || matches.iter().any(|m| {
            m.port.is_none_or(|p| p == server.port.number)
                && (m.gateways.is_empty() || m.gateways.iter().any(names_gw))
        })
}

/// Whether `vs`'s hosts meet `server`'s (either side may be the wildcard one).
fn hosts_meet(server: &Server, vs: &VirtualServiceEntry) -> bool {
    server.hosts.is_empty()
        || server.hosts.iter().any(|s| {
            vs.hosts
                .iter()
                .any(|h| covers(s, h) || covers(h, bare_host(s)))
        })
}

/// `(cluster, weight)` of the first rule routing `server` of `gw`, in VirtualService order.
fn route_of(
    reg: &Registry,
    gw: &GatewayEntry,
    server: &Server,
    skipped: &mut Vec<Skipped>,
) -> Option<Vec<(String, u32)>> {
    let port = u16::try_from(server.port.number).ok()?;
    for vs in &reg.virtual_services {
        if !vs.bound_to_gateway(&gw.namespace, &gw.name) || !hosts_meet(server, vs) {
            continue;
        }
        let rules = match vs.spec.tcp_routes() {
            Ok(r) => r,
            Err(e) => {
                skipped.push(Skipped::new(vs, format!("tcp: {e}")));
                continue;
            }
        };
        let Some(rule) = rules.iter().find(|r| applies(&r.matches, server, gw, vs)) else {
            continue;
        };
        match weighted(reg, vs, &rule.route, port) {
            Ok(c) if !c.is_empty() => return Some(c),
            Ok(_) => skipped.push(Skipped::new(vs, "tcp: no destination with weight".into())),
            Err(e) => skipped.push(Skipped::new(vs, format!("tcp: {e}"))),
        }
    }
    None
}

/// The TLS-terminating `tcp_proxy` chains of `gateways`, by port: one per `protocol: TLS`
/// SIMPLE/MUTUAL server with a route (in gateway, then server order); a server name already
/// claimed on the port stays with the earlier server.
pub fn terminated_tcp_chains(
    reg: &Registry,
    gateways: &[&GatewayEntry],
    skipped: &mut Vec<Skipped>,
) -> BTreeMap<u32, Vec<FilterChain>> {
    let mut out: BTreeMap<u32, Vec<FilterChain>> = BTreeMap::new();
    let mut taken: BTreeMap<u32, (Vec<String>, bool)> = BTreeMap::new();
    for gw in gateways {
        for server in gw.spec.servers.iter().filter(|s| terminates_tcp(s)) {
            let port = server.port.number;
            let gw_name = format!("{}/{}", gw.namespace, gw.name);
            let Some(tls) = ServerTls::of(server) else {
                continue;
            };
            let mut ctx = match downstream_tls_context(&tls) {
                Ok(c) => c,
                Err(e) => {
                    skipped.push(Skipped {
                        virtual_service: gw_name,
                        reason: format!("gateway server port {port} (TLS): {e}"),
                    });
                    continue;
                }
            };
            // Opaque bytes: no ALPN (Envoy's TLS server then negotiates none).
            if let Some(common) = ctx.common_tls_context.as_mut() {
                common.alpn_protocols.clear();
            }
            let Some(clusters) = route_of(reg, gw, server, skipped) else {
                skipped.push(Skipped {
                    virtual_service: gw_name,
                    reason: format!(
                        "gateway server port {port} (TLS {}): no VirtualService tcp route for it",
                        tls.mode.as_deref().unwrap_or_default()
                    ),
                });
                continue;
            };
            let (names, catch_all) = taken.entry(port).or_default();
            let hosts: Vec<&str> = server.hosts.iter().map(|h| bare_host(h)).collect();
            let server_names: Vec<String> = if hosts.is_empty() || hosts.contains(&"*") {
                if *catch_all {
                    continue;
                }
                *catch_all = true;
                Vec::new()
            } else {
                let fresh: Vec<String> = hosts
                    .iter()
                    .filter(|h| !names.iter().any(|t| t == *h))
                    .map(|h| h.to_string())
                    .collect();
                if fresh.is_empty() {
                    continue;
                }
                names.extend(fresh.iter().cloned());
                fresh
            };
            let mut chain = tcp_chain(None, clusters);
            chain.filter_chain_match = (!server_names.is_empty()).then(|| FilterChainMatch {
                server_names,
                ..FilterChainMatch::default()
            });
            chain.transport_socket = Some(TransportSocket {
                name: TLS_TRANSPORT_SOCKET.to_string(),
                config_type: Some(transport_socket::ConfigType::TypedConfig(pack(
                    type_url::DOWNSTREAM_TLS_CONTEXT,
                    &ctx,
                ))),
            });
            out.entry(port).or_default().push(chain);
        }
    }
    out
}

/// Whether every server of `gateways` on `port` is a `protocol: TLS` one (passthrough or
/// terminated): such a port has no HTTP listener.
pub fn tls_only_port(gateways: &[&GatewayEntry], port: u32) -> bool {
    let mut servers = gateways
        .iter()
        .flat_map(|g| g.spec.servers.iter())
        .filter(|s| s.port.number == port)
        .peekable();
    servers.peek().is_some() && servers.all(|s| s.port.protocol.eq_ignore_ascii_case("tls"))
}

/// Adds `chains` (by port) to `listeners`: to the port's listener when there is one (HTTPS or
/// passthrough chains; names it already matches stay with them, as Envoy refuses two chains
/// with the same match), else as a new `0.0.0.0_<port>` listener; a `tls_inspector` listener
/// filter on each listener that gets chains.
pub fn merge_chains(listeners: &mut Vec<Listener>, chains: BTreeMap<u32, Vec<FilterChain>>) {
    for (port, chains) in chains {
        let name = gateway_listener(port);
        let at = match listeners.iter().position(|l| l.name == name) {
            Some(i) => i,
            None => {
                listeners.push(Listener {
                    name,
                    address: Some(socket("0.0.0.0", port)),
                    ..Listener::default()
                });
                listeners.len() - 1
            }
        };
        let l = &mut listeners[at];
        for mut chain in chains {
            let names = |c: &FilterChain| {
                c.filter_chain_match
                    .as_ref()
                    .map(|m| m.server_names.clone())
                    .unwrap_or_default()
            };
            let wanted = names(&chain);
            if wanted.is_empty() {
                if l.filter_chains.iter().any(|c| names(c).is_empty()) {
                    continue;
                }
            } else {
                let fresh: Vec<String> = wanted
                    .into_iter()
                    .filter(|n| !l.filter_chains.iter().any(|c| names(c).contains(n)))
                    .collect();
                if fresh.is_empty() {
                    continue;
                }
                if let Some(m) = chain.filter_chain_match.as_mut() {
                    m.server_names = fresh;
                }
            }
            l.filter_chains.push(chain);
        }
        if !l.listener_filters.iter().any(|f| f.name == TLS_INSPECTOR) {
            l.listener_filters.push(ListenerFilter {
                name: TLS_INSPECTOR.to_string(),
                config_type: Some(listener_filter::ConfigType::TypedConfig(pack(
                    &TlsInspector::type_url(),
                    &TlsInspector::default(),
                ))),
                ..ListenerFilter::default()
            });
        }
    }
}

#[cfg(test)]
#[path = "gateway_tls_tcp_tests.rs"]
mod tests;
