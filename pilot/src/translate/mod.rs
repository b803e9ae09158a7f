//! Translation: `(Registry, ProxyInfo) → ProxyConfig`, a pure function with no I/O.
//!
//! ```text
//!  Registry ─┬─ cluster.rs      CDS  outbound|P||FQDN, outbound|P|SUBSET|FQDN (+ mTLS socket)
//!            ├─ endpoint.rs     EDS  one ClusterLoadAssignment per cluster
//!            ├─ listener.rs     LDS  virtualOutbound | 0.0.0.0_<port>
//!            ├─ tcp.rs          LDS  0.0.0.0_<port> tcp_proxy for TCP service ports
//!            ├─ inbound.rs      LDS  virtualInbound: peer_authn.rs (mTLS mode), jwt.rs, rbac.rs
//!            └─ route_table.rs  RDS  http_proxy | http.<port>   (http_route.rs: VS rules → routes)
//! ```
//! Output is sorted by name so that the versions (hashes of the encoded resources) are stable.

mod access_log;
mod cluster;
mod duration;
mod endpoint;
mod gateway_tls;
mod gateway_tls_tcp;
mod http_route;
mod inbound;
mod jwt;
mod listener;
mod mixer_filter;
mod names;
mod passthrough;
mod peer_authn;
mod proxy_info;
mod rbac;
mod resources;
mod route_table;
mod sidecar_ingress;
mod sidecar_scope;
mod tcp;
mod traffic;

use mesh_proto::envoy::envoy::config::cluster::v3::Cluster;
use mesh_proto::envoy::envoy::config::endpoint::v3::ClusterLoadAssignment;
use mesh_proto::envoy::envoy::config::listener::v3::Listener;
use mesh_proto::envoy::envoy::config::route::v3::RouteConfiguration;

pub use access_log::{
    DEFAULT_JSON_FORMAT, DEFAULT_TEXT_FORMAT, FILE_ACCESS_LOG, access_logs, add_access_logs,
};
pub use duration::{DurationError, parse_duration};
pub use inbound::{VIRTUAL_INBOUND, inbound_listener};
pub use mixer_filter::{MIXER_FILTER, QuotaConfig};
pub use names::{
    HTTP_PROXY_ROUTE, VIRTUAL_OUTBOUND, cluster_name, gateway_listener, gateway_route, sni, spiffe,
};
pub use passthrough::{BLACKHOLE_CLUSTER, PASSTHROUGH_CLUSTER};
pub use peer_authn::{MtlsMode, MtlsSettings, mtls_settings};
pub use proxy_info::{ProxyInfo, ProxyInfoError, ProxyType};
pub use resources::{EncodedResource, TypeResources, XdsType, pack};
pub use sidecar_ingress::{inbound_cluster_name, ingress_clusters};
pub use sidecar_scope::{ScopedClusters, proxy_view};
pub use tcp::{PortProtocol, TCP_PROXY_FILTER, port_protocol};

use crate::model::{Registry, VirtualServiceEntry};

/// Settings of the translation that are not in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// SPIFFE trust domain for the SANs (`cluster.local`).
    pub trust_domain: String,
}

/// A VirtualService (or the part of it for one host) left out of a proxy's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// `namespace/name`.
    pub virtual_service: String,
    pub reason: String,
}

impl Skipped {
    fn new(vs: &VirtualServiceEntry, reason: String) -> Skipped {
        Skipped {
            virtual_service: format!("{}/{}", vs.namespace, vs.name),
            reason,
        }
    }
}

/// One proxy's configuration, each list sorted by resource name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyConfig {
    pub listeners: Vec<Listener>,
    pub routes: Vec<RouteConfiguration>,
    pub clusters: Vec<Cluster>,
    pub endpoints: Vec<ClusterLoadAssignment>,
    /// VirtualServices that could not be translated (the rest of the config is unaffected).
    pub skipped: Vec<Skipped>,
}

/// The encoded form of a [`ProxyConfig`], one [`TypeResources`] per xDS type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncodedConfig {
    pub clusters: TypeResources,
    pub endpoints: TypeResources,
    pub listeners: TypeResources,
    pub routes: TypeResources,
}

impl EncodedConfig {
    /// The resources of `t`.
    pub fn get(&self, t: XdsType) -> &TypeResources {
        match t {
            XdsType::Cluster => &self.clusters,
            XdsType::Endpoint => &self.endpoints,
            XdsType::Listener => &self.listeners,
            XdsType::Route => &self.routes,
            // Secrets are not part of the translation: the ADS server adds them per gateway
            // proxy from the credential source (`crate::sds`).
            XdsType::Secret => &NO_RESOURCES,
        }
    }
}

/// An empty resource set.
static NO_RESOURCES: TypeResources = TypeResources {
    version: String::new(),
    resources: Vec::new(),
};

impl ProxyConfig {
    /// Packs every resource and computes each type's version.
    pub fn encode(&self) -> EncodedConfig {
        use mesh_proto::type_url;
        EncodedConfig {
            clusters: TypeResources::encode(
                type_url::CLUSTER,
                self.clusters.iter().map(|c| (c.name.clone(), c.clone())),
            ),
            endpoints: TypeResources::encode(
                type_url::ENDPOINT,
                self.endpoints
                    .iter()
                    .map(|c| (c.cluster_name.clone(), c.clone())),
            ),
            listeners: TypeResources::encode(
                type_url::LISTENER,
                self.listeners.iter().map(|l| (l.name.clone(), l.clone())),
            ),
            routes: TypeResources::encode(
                type_url::ROUTE,
                self.routes.iter().map(|r| (r.name.clone(), r.clone())),
            ),
        }
    }
}

/// Translates the registry into `proxy`'s configuration.
pub fn translate(reg: &Registry, proxy: &ProxyInfo, opts: &Options) -> ProxyConfig {
    let (mut clusters, mut endpoints) = translate_shared(reg, opts);
    // A sidecar under a Sidecar resource or exportTo: only what it sees (as ScopedClusters).
    if let Some((view, outbound)) = proxy_view(reg, proxy) {
        (clusters, endpoints) = translate_shared(&view, opts);
        if outbound.is_some() {
            clusters.extend(passthrough::special_clusters());
            clusters.sort_by(|a, b| a.name.cmp(&b.name));
        }
    }
    // Sidecar `ingress[]`: the `inbound|PORT||` clusters (sidecar_ingress.rs).
    let ingress = sidecar_ingress::ingress_clusters(reg, proxy);
    if !ingress.is_empty() {
        clusters.extend(ingress);
        clusters.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let (listeners, routes, skipped) = translate_proxy(reg, proxy, opts);
    ProxyConfig {
        listeners,
        routes,
        clusters,
        endpoints,
        skipped,
    }
}

/// The part of every proxy's config that does not depend on the proxy: CDS and EDS.
pub fn translate_shared(
    reg: &Registry,
    opts: &Options,
) -> (Vec<Cluster>, Vec<ClusterLoadAssignment>) {
    (
        cluster::clusters(reg, &opts.trust_domain),
        endpoint::load_assignments(reg),
    )
}

/// CDS and EDS of the services `keep` selects only (for pushes that changed a few services).
pub fn translate_shared_of(
    reg: &Registry,
    opts: &Options,
    keep: impl Fn(&crate::model::Service) -> bool,
) -> (Vec<Cluster>, Vec<ClusterLoadAssignment>) {
    (
        cluster::clusters_of(reg, &opts.trust_domain, &keep),
        endpoint::load_assignments_of(reg, &keep),
    )
}

/// The part of a proxy's config that depends on the proxy (its type, namespace and labels):
/// LDS, RDS and the VirtualServices left out.
pub fn translate_proxy(
    reg: &Registry,
    proxy: &ProxyInfo,
    _opts: &Options,
) -> (Vec<Listener>, Vec<RouteConfiguration>, Vec<Skipped>) {
    // The mesh config's access log, on every HTTP connection manager and tcp_proxy.
    let logs = access_log::access_logs(&reg.mesh_config);
    // Sidecar scoping: translate from the registry narrowed to what the proxy sees (the
    // inbound side, about the proxy's own workload, from the whole registry).
    let full = reg;
    let view = proxy_view(reg, proxy);
    let reg = view.as_ref().map_or(reg, |(v, _)| v);
    let mut skipped = Vec::new();
    let (mut listeners, mut routes) = match proxy.proxy_type {
        ProxyType::Sidecar => (
            // Sorted by name: 0.0.0.0_<port> (TCP ports), virtualInbound, virtualOutbound.
            tcp::sidecar_tcp_listeners(reg, proxy, &mut skipped)
                .into_iter()
                .chain([
                    inbound::inbound_listener(full, proxy),
                    listener::sidecar_listener(mixer_filter::outbound_filter(
                        reg,
                        ProxyType::Sidecar,
                    )),
                ])
                .collect(),
            vec![route_table::sidecar_routes(reg, proxy, &mut skipped)],
        ),
        ProxyType::Router => {
            let gateways: Vec<_> = reg
                .gateways
                .iter()
                .filter(|g| g.selects(&proxy.labels))
                .collect();
            // TLS passthrough ports get a tcp_proxy listener (by SNI) instead of HTTP.
            let passthrough = tcp::gateway_passthrough_listeners(reg, &gateways, &mut skipped);
            // TLS SIMPLE/MUTUAL servers: TLS-terminating tcp_proxy chains, added below.
            let terminated = gateway_tls_tcp::terminated_tcp_chains(reg, &gateways, &mut skipped);
            let tls_names: Vec<String> = passthrough.iter().map(|l| l.name.clone()).collect();
            let http_port = |r: &RouteConfiguration| {
                let port = r.name.strip_prefix("http.")?.parse::<u32>().ok()?;
                (!tls_names.contains(&gateway_listener(port))
                    && !gateway_tls_tcp::tls_only_port(&gateways, port))
                .then_some(port)
            };
            let routes: Vec<_> = route_table::gateway_routes(reg, proxy, &gateways, &mut skipped)
                .into_iter()
                .filter(|r| http_port(r).is_some())
                .collect();
            let mut listeners: Vec<_> = routes
                .iter()
                .filter_map(http_port)
                .map(|port| {
                    listener::gateway_listener_for(
                        port,
                        mixer_filter::outbound_filter(reg, ProxyType::Router),
                        gateway_tls::port_chains(&gateways, port),
                    )
                })
                .chain(passthrough)
                .collect();
            gateway_tls_tcp::merge_chains(&mut listeners, terminated);
            listeners.sort_by(|a, b| a.name.cmp(&b.name));
            (listeners, routes)
        }
    };
    // outboundTrafficPolicy: the catch-all virtual host, after every service's.
    if let Some((_, Some(policy))) = &view
        && let Some(rc) = routes.iter_mut().find(|r| r.name == HTTP_PROXY_ROUTE)
    {
        rc.virtual_hosts
            .push(passthrough::catch_all_virtual_host(*policy));
    }
    access_log::add_access_logs(&mut listeners, &logs);
    // Sidecar `ingress[]` entries that cannot be translated.
    skipped.extend(sidecar_ingress::left_out(full, proxy));
    skipped.sort_by(|a, b| a.virtual_service.cmp(&b.virtual_service));
    skipped.dedup();
    (listeners, routes, skipped)
}

#[cfg(test)]
mod security_tests;
#[cfg(test)]
mod sidecar_ingress_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_registry;
