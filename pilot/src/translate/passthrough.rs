//! Clusters that are not EDS: ServiceEntry `resolution: DNS` (`STRICT_DNS`) and
//! `DNS_ROUND_ROBIN` (`LOGICAL_DNS`) with their endpoints inline, `NONE` (`ORIGINAL_DST`), and
//! the sidecar's `PassthroughCluster` / `BlackHoleCluster` for hosts it has no service for
//! (`outboundTrafficPolicy` `ALLOW_ANY` / `REGISTRY_ONLY`), with their catch-all virtual host.

use std::collections::BTreeMap;

use mesh_proto::envoy::envoy::config::cluster::v3::{Cluster, cluster};
use mesh_proto::envoy::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteAction, RouteMatch, VirtualHost, route, route_action,
    route_match,
};

use super::cluster::CONNECT_TIMEOUT;
use super::endpoint::assignment;
use super::resources::duration;
use crate::model::{Instance, OutboundPolicy, Resolution, Service};

/// The cluster to the connection's original destination (`ALLOW_ANY`).
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// The cluster with no endpoints (`REGISTRY_ONLY`).
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
/// Istio's catch-all virtual host names.
pub const ALLOW_ANY_VHOST: &str = "allow_any";
pub const BLOCK_ALL_VHOST: &str = "block_all";

/// Turns EDS cluster `c` of `svc`'s `port` into the cluster type of the service's resolution:
/// DNS → `STRICT_DNS` (`LOGICAL_DNS` for round robin) with `load_assignment` = the endpoints
/// (those with the subset's labels), or the host itself on the port when it has none;
/// passthrough → `ORIGINAL_DST` with `CLUSTER_PROVIDED` balancing. EDS services are unchanged.
pub fn apply_resolution(
    c: &mut Cluster,
    svc: &Service,
    port: u16,
    subset_labels: Option<&BTreeMap<String, String>>,
) {
    let kind = match svc.resolution {
        Resolution::Static => return,
        Resolution::Dns => cluster::DiscoveryType::StrictDns,
        Resolution::DnsRoundRobin => cluster::DiscoveryType::LogicalDns,
        Resolution::Passthrough => cluster::DiscoveryType::OriginalDst,
    };
    c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(kind as i32));
    c.eds_cluster_config = None;
    if kind == cluster::DiscoveryType::OriginalDst {
        c.lb_policy = cluster::LbPolicy::ClusterProvided as i32;
        return;
    }
    let instances: &[Instance] = svc
        .instances
        .get(&port)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let host_itself = [Instance {
        ip: svc.fqdn.clone(),
        port,
        ..Instance::default()
    }];
    let targets: Vec<&Instance> = if instances.is_empty() {
        host_itself.iter().collect()
    } else {
        instances
            .iter()
            .filter(|i| subset_labels.is_none_or(|l| i.matches(l)))
            .collect()
    };
    c.load_assignment = Some(assignment(c.name.clone(), targets.into_iter()));
    // Re-resolved every 5 s (Envoy's default `dns_refresh_rate`, Istio's `dnsRefreshRate`).
    c.dns_lookup_family = cluster::DnsLookupFamily::V4Only as i32;
}

/// `PassthroughCluster` (`ORIGINAL_DST`) and `BlackHoleCluster` (`STATIC`, no endpoints), as
/// Istio sends every sidecar.
pub fn special_clusters() -> Vec<Cluster> {
    vec![
        Cluster {
            name: BLACKHOLE_CLUSTER.to_string(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Static as i32,
            )),
            connect_timeout: Some(duration(CONNECT_TIMEOUT)),
            ..Cluster::default()
        },
        Cluster {
            name: PASSTHROUGH_CLUSTER.to_string(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::OriginalDst as i32,
            )),
            lb_policy: cluster::LbPolicy::ClusterProvided as i32,
            connect_timeout: Some(duration(CONNECT_TIMEOUT)),
            ..Cluster::default()
        },
    ]
}

/// The last virtual host of `http_proxy` (domains `*`): `allow_any` → `PassthroughCluster`,
/// `block_all` → a `direct_response` 502, as Istio 1.4 sends it (the `BlackHoleCluster` stays
/// for TCP).
pub fn catch_all_virtual_host(policy: OutboundPolicy) -> VirtualHost {
    let (name, action) = match policy {
        OutboundPolicy::AllowAny => (
            ALLOW_ANY_VHOST,
            route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                    PASSTHROUGH_CLUSTER.to_string(),
                )),
                ..RouteAction::default()
            }),
        ),
        OutboundPolicy::RegistryOnly => (
            BLOCK_ALL_VHOST,
            route::Action::DirectResponse(DirectResponseAction {
                status: 502,
                ..DirectResponseAction::default()
            }),
        ),
    };
    VirtualHost {
        name: name.to_string(),
        domains: vec!["*".to_string()],
        routes: vec![Route {
            name: name.to_string(),
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_string())),
                ..RouteMatch::default()
            }),
            action: Some(action),
            ..Route::default()
        }],
        ..VirtualHost::default()
    }
}
