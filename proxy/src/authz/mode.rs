//! Peer authentication mode per destination port, from the listener's filter chains as Envoy
//! selects them (`destination_port`, then `transport_protocol` `tls` / `raw_buffer`), and the
//! first-byte sniffing PERMISSIVE needs; the Sidecar `ingress[]` ports (their chains' target
//! cluster) and the addresses to bind (`additional_addresses`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mesh_proto::envoy::envoy::config::core::v3::{address, socket_address};
use mesh_proto::envoy::envoy::config::listener::v3::{FilterChain, Listener, filter};
use mesh_proto::envoy::envoy::config::route::v3::{route, route_action};
use mesh_proto::envoy::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use mesh_proto::envoy::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use mesh_proto::type_url;
use prost::{Message, Name};
use serde::Serialize;
use tokio::net::TcpStream;

use super::DecodeError;

/// The first byte of a TLS handshake record.
pub const TLS_HANDSHAKE: u8 = 0x16;

/// How an inbound connection may arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MtlsMode {
    /// Mutual TLS only: plaintext connections are closed.
    Strict,
    /// Both, told apart by the first byte.
    Permissive,
    /// Plaintext only.
    Disable,
}

impl MtlsMode {
    fn from_transports(tls: bool, raw: bool) -> Option<MtlsMode> {
        match (tls, raw) {
            (true, true) => Some(MtlsMode::Permissive),
            (true, false) => Some(MtlsMode::Strict),
            (false, true) => Some(MtlsMode::Disable),
            (false, false) => None,
        }
    }
}

/// The mode of every port with its own chains, and of the rest; and the ports of a Sidecar's
/// `ingress[]` (chains whose route or `tcp_proxy` names an `inbound|PORT||` cluster).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortModes {
    pub default: MtlsMode,
    pub ports: BTreeMap<u32, MtlsMode>,
    /// Sidecar ingress ports: where their traffic goes (instead of the application's port).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ingress: BTreeMap<u32, IngressTarget>,
    /// Addresses the proxy binds itself (`additional_addresses`: ingress `bind` /
    /// `captureMode: NONE`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub binds: Vec<SocketAddr>,
}

/// Where an ingress port's traffic goes: a cluster Pilot sends (`STATIC`, one endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngressTarget {
    pub cluster: String,
    /// Served by a `tcp_proxy` (opaque TCP), else HTTP.
    pub tcp: bool,
}

impl PortModes {
    /// Reads the chains. A chain without `transport_protocol` accepts both; no chain at all
    /// means nothing is accepted in plaintext (STRICT).
    pub fn from_chains(chains: &[FilterChain]) -> Result<PortModes, DecodeError> {
        let mut per: BTreeMap<Option<u32>, (bool, bool)> = BTreeMap::new();
        for (i, c) in chains.iter().enumerate() {
            let m = c.filter_chain_match.clone().unwrap_or_default();
            let port = m.destination_port.map(|p| p.value);
            let e = per.entry(port).or_default();
            match m.transport_protocol.as_str() {
                "tls" => e.0 = true,
                "raw_buffer" => e.1 = true,
                "" => *e = (true, true),
                other => {
                    return Err(DecodeError::new(
                        &format!("filter_chains[{i}].filter_chain_match.transport_protocol"),
                        format!("unsupported {other:?}"),
                    ));
                }
            }
        }
        let default = per
            .remove(&None)
            .and_then(|(t, r)| MtlsMode::from_transports(t, r))
            .unwrap_or(MtlsMode::Strict);
        let ports = per
            .into_iter()
            .filter_map(|(p, (t, r))| Some((p?, MtlsMode::from_transports(t, r)?)))
            .collect();
        Ok(PortModes {
            default,
            ports,
            ingress: BTreeMap::new(),
            binds: Vec::new(),
        })
    }

    /// [`PortModes::from_chains`] of the listener, with its ingress ports and extra addresses.
    pub fn from_listener(l: &Listener) -> Result<PortModes, DecodeError> {
        let mut modes = PortModes::from_chains(&l.filter_chains)?;
        for (i, c) in l.filter_chains.iter().enumerate() {
            let Some(port) = c
                .filter_chain_match
                .as_ref()
                .and_then(|m| m.destination_port)
                .map(|p| p.value)
            else {
                continue;
            };
            if let Some(target) = ingress_target(c, i)? {
                modes.ingress.insert(port, target);
            }
        }
        for (i, a) in l.additional_addresses.iter().enumerate() {
            let field = format!("additional_addresses[{i}].address");
            let Some(address::Address::SocketAddress(sa)) =
                a.address.as_ref().and_then(|a| a.address.as_ref())
            else {
                return Err(DecodeError::new(&field, "not a socket address"));
            };
            let ip: IpAddr = sa
                .address
                .parse()
                .map_err(|_| DecodeError::new(&field, format!("{:?} is not an IP", sa.address)))?;
            let port = match sa.port_specifier {
                Some(socket_address::PortSpecifier::PortValue(p)) => u16::try_from(p)
                    .map_err(|_| DecodeError::new(&field, format!("port {p} out of range")))?,
                _ => return Err(DecodeError::new(&field, "no port_value")),
            };
            modes.binds.push(SocketAddr::new(ip, port));
        }
        Ok(modes)
    }

    /// The mode for a connection to local port `port`.
    pub fn for_port(&self, port: u16) -> MtlsMode {
        self.ports
            .get(&u32::from(port))
            .copied()
            .unwrap_or(self.default)
    }
}

/// The `inbound|PORT||` cluster chain `i` sends to, when it does (its inline route's or its
/// `tcp_proxy`'s cluster).
fn ingress_target(c: &FilterChain, i: usize) -> Result<Option<IngressTarget>, DecodeError> {
    for (fi, f) in c.filters.iter().enumerate() {
        let Some(filter::ConfigType::TypedConfig(tc)) = &f.config_type else {
            continue;
        };
        let field = format!("filter_chains[{i}].filters[{fi}]");
        let bad = |e: prost::DecodeError| DecodeError::new(&field, e.to_string());
        let (cluster, tcp) = if tc.type_url == type_url::HTTP_CONNECTION_MANAGER {
            let hcm = HttpConnectionManager::decode(tc.value.as_slice()).map_err(bad)?;
            let Some(RouteSpecifier::RouteConfig(rc)) = hcm.route_specifier else {
                continue;
            };
            let cluster = rc
                .virtual_hosts
                .iter()
                .flat_map(|vh| vh.routes.iter())
                .find_map(|r| match &r.action {
                    Some(route::Action::Route(ra)) => match &ra.cluster_specifier {
                        Some(route_action::ClusterSpecifier::Cluster(c)) => Some(c.clone()),
                        _ => None,
                    },
                    _ => None,
                });
            (cluster, false)
        } else if tc.type_url == TcpProxy::type_url() {
            let tp = TcpProxy::decode(tc.value.as_slice()).map_err(bad)?;
            match tp.cluster_specifier {
                Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => (Some(c), true),
                _ => (None, true),
            }
        } else {
            continue;
        };
        if let Some(cluster) = cluster.filter(|c| c.starts_with("inbound|")) {
            return Ok(Some(IngressTarget { cluster, tcp }));
        }
    }
    Ok(None)
}

/// Whether the client opened with a TLS handshake, by peeking at the first byte (not consumed).
/// `None` when the client closed or sent nothing within `wait`.
pub async fn sniff_tls(stream: &TcpStream, wait: Duration) -> Option<bool> {
    let mut b = [0u8; 1];
    match tokio::time::timeout(wait, stream.peek(&mut b)).await {
        Ok(Ok(1)) => Some(b[0] == TLS_HANDSHAKE),
        _ => None,
    }
}
