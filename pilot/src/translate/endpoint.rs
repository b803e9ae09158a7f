//! EDS: the instances behind each cluster.

use std::collections::BTreeMap;

use mesh_proto::envoy::envoy::config::core::v3::{
    Address, Locality, SocketAddress, address, socket_address,
};
use mesh_proto::envoy::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use mesh_proto::envoy::google::protobuf::UInt32Value;

use super::names::cluster_name;
use crate::model::{Instance, Registry, Resolution, Service};

/// One load assignment per EDS cluster of [`super::cluster::clusters`] (DNS and passthrough
/// services have none), sorted by cluster name.
pub fn load_assignments(reg: &Registry) -> Vec<ClusterLoadAssignment> {
    load_assignments_of(reg, |_| true)
}

/// The load assignments of the services `keep` selects, sorted by cluster name.
pub fn load_assignments_of(
    reg: &Registry,
    keep: impl Fn(&Service) -> bool,
) -> Vec<ClusterLoadAssignment> {
    let mut out = Vec::new();
    for svc in reg
        .services
        .values()
        .filter(|s| s.resolution == Resolution::Static && keep(s))
    {
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

/// The load assignment of `cluster_name`: one `LocalityLbEndpoints` per locality (instances
/// without one first), each endpoint with its weight.
pub fn assignment<'a>(
    cluster_name: String,
    instances: impl Iterator<Item = &'a Instance>,
) -> ClusterLoadAssignment {
    let mut by_locality: BTreeMap<Option<&str>, Vec<LbEndpoint>> = BTreeMap::new();
    for i in instances {
        by_locality
            .entry(i.locality.as_deref())
            .or_default()
            .push(lb_endpoint(i));
    }
    ClusterLoadAssignment {
        cluster_name,
        endpoints: by_locality
            .into_iter()
            .map(|(loc, lb_endpoints)| LocalityLbEndpoints {
                locality: loc.map(locality),
                lb_endpoints,
                ..LocalityLbEndpoints::default()
            })
            .collect(),
        ..ClusterLoadAssignment::default()
    }
}

/// `region/zone/subzone` (missing parts empty).
fn locality(s: &str) -> Locality {
    let mut parts = s.splitn(3, '/');
    let mut next = || parts.next().unwrap_or_default().to_string();
    Locality {
        region: next(),
        zone: next(),
        sub_zone: next(),
    }
}

fn lb_endpoint(i: &Instance) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(socket(&i.ip, u32::from(i.port))),
            ..Endpoint::default()
        })),
        load_balancing_weight: i.weight.map(|value| UInt32Value { value }),
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
