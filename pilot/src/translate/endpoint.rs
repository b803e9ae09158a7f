//! EDS: the instances behind each cluster.

use mesh_proto::envoy::envoy::config::core::v3::{Address, SocketAddress, address, socket_address};
use mesh_proto::envoy::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};

use super::names::cluster_name;
use crate::model::{Instance, Registry};

/// One load assignment per cluster of [`super::cluster::clusters`], sorted by cluster name.
pub fn load_assignments(reg: &Registry) -> Vec<ClusterLoadAssignment> {
    let mut out = Vec::new();
    for svc in reg.services.values() {
        let subsets = reg
            .destination_rule(&svc.fqdn)
            .map(|d| d.spec.subsets.as_slice())
            .unwrap_or_default();
        for port in &svc.ports {
            let instances: &[Instance] = svc
                .instances
                .get(&port.port)
                .map(Vec::as_slice)
                .unwrap_or_default();
            out.push(assignment(
                cluster_name(port.port, "", &svc.fqdn),
                instances.iter(),
            ));
            for subset in subsets {
                out.push(assignment(
                    cluster_name(port.port, &subset.name, &svc.fqdn),
                    instances.iter().filter(|i| i.matches(&subset.labels)),
                ));
            }
        }
    }
    out.sort_by(|a, b| a.cluster_name.cmp(&b.cluster_name));
    out.dedup_by(|a, b| a.cluster_name == b.cluster_name);
    out
}

fn assignment<'a>(
    cluster_name: String,
    instances: impl Iterator<Item = &'a Instance>,
) -> ClusterLoadAssignment {
    let lb_endpoints: Vec<LbEndpoint> = instances.map(lb_endpoint).collect();
    ClusterLoadAssignment {
        cluster_name,
        endpoints: if lb_endpoints.is_empty() {
            Vec::new()
        } else {
            vec![LocalityLbEndpoints {
                lb_endpoints,
                ..LocalityLbEndpoints::default()
            }]
        },
        ..ClusterLoadAssignment::default()
    }
}

fn lb_endpoint(i: &Instance) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(socket(&i.ip, u32::from(i.port))),
            ..Endpoint::default()
        })),
        ..LbEndpoint::default()
    }
}

/// A TCP socket address.
pub fn socket(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..SocketAddress::default()
        })),
    }
}
