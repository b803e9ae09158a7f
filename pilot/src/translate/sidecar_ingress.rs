//! Sidecar `ingress[]` (see `crate::model::IngressPort`): for a sidecar selected by a Sidecar
//! with ingress entries, each entry's port gets
//!
//! - a CDS cluster `inbound|PORT||` (`STATIC`, one endpoint: the `defaultEndpoint`; an
//!   unspecified IP `0.0.0.0`/`[::]` stays unspecified and means the instance IP, which the
//!   proxy fills in, so the cluster is the same for every pod the Sidecar selects);
//! - filter chains on `virtualInbound` matched on `destination_port: PORT` (with the port's
//!   peer authentication mode), whose HTTP connection manager routes to that cluster (HTTP
//!   ports) or whose `tcp_proxy` forwards to it (TCP ports);
//! - with `bind` or `captureMode: NONE`, `bind:PORT` among `virtualInbound`'s
//!   `additional_addresses`: the proxy binds it itself (no iptables capture needed).
//!
//! `unix://` endpoints are left out with a reason (mesh-proxy dials TCP only; an Envoy
//! `pipe` endpoint would make the proxy reject the whole CDS update).

use mesh_proto::envoy::envoy::config::cluster::v3::{Cluster, cluster};
use mesh_proto::envoy::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use mesh_proto::envoy::envoy::config::listener::v3::AdditionalAddress;

use super::Skipped;
use super::cluster::CONNECT_TIMEOUT;
use super::endpoint::socket;
use super::proxy_info::{ProxyInfo, ProxyType};
use super::resources::duration;
use crate::model::{IngressEndpoint, IngressPort, Registry, SidecarEntry};

/// The inbound cluster of an ingress port.
pub fn inbound_cluster_name(port: u16) -> String {
    format!("inbound|{port}||")
}

/// The Sidecar with ingress entries that applies to `proxy` (sidecars only).
pub fn ingress_sidecar<'a>(reg: &'a Registry, proxy: &ProxyInfo) -> Option<&'a SidecarEntry> {
    if proxy.proxy_type != ProxyType::Sidecar {
        return None;
    }
    reg.sidecar_scope(&proxy.namespace, &proxy.labels)
        .sidecar
        .filter(|s| !s.ingress.is_empty())
}

/// The ingress ports of `proxy` that are translated (every entry but `unix://` ones).
pub fn served_ports<'a>(reg: &'a Registry, proxy: &ProxyInfo) -> Vec<&'a IngressPort> {
    ingress_sidecar(reg, proxy)
        .map(|s| {
            s.ingress
                .iter()
                .filter(|p| matches!(p.endpoint, IngressEndpoint::Socket(_)))
                .collect()
        })
        .unwrap_or_default()
}

/// The ingress entries left out of `proxy`'s config, with the reason (reported like skipped
/// VirtualServices: on `/debug` and `pilot_virtualservices_skipped_total`).
pub fn left_out(reg: &Registry, proxy: &ProxyInfo) -> Vec<Skipped> {
    let Some(s) = ingress_sidecar(reg, proxy) else {
        return Vec::new();
    };
    s.ingress
        .iter()
        .filter_map(|p| match &p.endpoint {
            IngressEndpoint::Unix(path) => Some(Skipped {
                virtual_service: format!("Sidecar {}/{}", s.namespace, s.name),
                reason: format!(
                    "ingress port {}: defaultEndpoint unix://{path}: mesh-proxy does not dial unix sockets; port left out",
                    p.port
                ),
            }),
            IngressEndpoint::Socket(_) => None,
        })
        .collect()
}

/// The `inbound|PORT||` clusters of `proxy`, sorted by name.
pub fn ingress_clusters(reg: &Registry, proxy: &ProxyInfo) -> Vec<Cluster> {
    let mut out: Vec<Cluster> = served_ports(reg, proxy)
        .into_iter()
        .filter_map(|p| match &p.endpoint {
            IngressEndpoint::Socket(addr) => Some(static_cluster(
                &inbound_cluster_name(p.port),
                &addr.ip().to_string(),
                addr.port(),
            )),
            IngressEndpoint::Unix(_) => None,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn static_cluster(name: &str, ip: &str, port: u16) -> Cluster {
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.to_string(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket(ip, u32::from(port))),
                        ..Endpoint::default()
                    })),
                    ..LbEndpoint::default()
                }],
                ..LocalityLbEndpoints::default()
            }],
            ..ClusterLoadAssignment::default()
        }),
        ..Cluster::default()
    }
}

/// `bind:PORT` of every ingress port with an explicit listener.
pub fn additional_addresses(ports: &[&IngressPort]) -> Vec<AdditionalAddress> {
    ports
        .iter()
        .filter_map(|p| {
            let ip = p.bind?;
            Some(AdditionalAddress {
                address: Some(socket(&ip.to_string(), u32::from(p.port))),
                ..AdditionalAddress::default()
            })
        })
        .collect()
}
