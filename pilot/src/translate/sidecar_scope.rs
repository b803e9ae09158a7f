//! Sidecar scoping of a proxy's config: a sidecar whose [`SidecarScope`] hides something
//! (a Sidecar resource applies, or `exportTo` keeps config from its namespace) is translated
//! from the registry narrowed to what it sees, so its clusters, endpoints, routes and listeners
//! cover only those services. With an `outboundTrafficPolicy` it also gets
//! `PassthroughCluster`/`BlackHoleCluster` and the catch-all virtual host.
//!
//! CDS and EDS are built once per push for every proxy ([`super::translate_shared`]);
//! [`ScopedClusters`] narrows them per proxy by cluster name, so the shared encoding is reused.

use std::collections::BTreeSet;

use mesh_proto::type_url;

use super::passthrough::special_clusters;
use super::resources::{EncodedResource, TypeResources};
use super::{Options, ProxyInfo, ProxyType};
use crate::model::{OutboundPolicy, Registry};

/// The registry as `proxy` sees it, and its outbound policy; `None` when the proxy sees
/// everything (routers, and sidecars no Sidecar or `exportTo` restricts).
pub fn proxy_view(reg: &Registry, proxy: &ProxyInfo) -> Option<(Registry, Option<OutboundPolicy>)> {
    if proxy.proxy_type != ProxyType::Sidecar {
        return None;
    }
    let scope = reg.sidecar_scope(&proxy.namespace, &proxy.labels);
    if !reg.scope_restricts(&scope) {
        return None;
    }
    Some((reg.scoped(&scope), scope.outbound()))
}

/// Which of the shared clusters (and their load assignments) a proxy gets, and the clusters
/// only it gets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScopedClusters {
    /// Names of the shared clusters the proxy sees.
    pub names: BTreeSet<String>,
    /// `PassthroughCluster` and `BlackHoleCluster` when the Sidecar sets an outbound policy, and
    /// the `inbound|PORT||` clusters of its `ingress[]`.
    pub extra: Vec<EncodedResource>,
}

impl ScopedClusters {
    /// The CDS/EDS narrowing for `proxy`, or `None` when it gets the shared CDS/EDS whole.
    /// Depends only on the services, their ports and the DestinationRules (not on instances),
    /// so it stays valid across endpoint-only pushes.
    pub fn for_proxy(reg: &Registry, proxy: &ProxyInfo, opts: &Options) -> Option<ScopedClusters> {
        let (view, outbound) = proxy_view(reg, proxy)?;
        let names = super::cluster::clusters(&view, &opts.trust_domain)
            .into_iter()
            .map(|c| c.name)
            .collect();
        let mut extra = if outbound.is_some() {
            special_clusters()
        } else {
            Vec::new()
        };
        // Sidecar `ingress[]`: `inbound|PORT||` (the same for every proxy of the key: the
        // Sidecar is chosen by labels the key holds, and the clusters hold no instance IP).
        extra.extend(super::sidecar_ingress::ingress_clusters(reg, proxy));
        let extra = TypeResources::encode(
            type_url::CLUSTER,
            extra.into_iter().map(|c| (c.name.clone(), c)),
        )
        .resources;
        Some(ScopedClusters { names, extra })
    }

    /// The proxy's CDS and EDS out of the shared ones (sorted by name, versions recomputed).
    pub fn apply(
        &self,
        clusters: &TypeResources,
        endpoints: &TypeResources,
    ) -> (TypeResources, TypeResources) {
        let keep = |t: &TypeResources| -> Vec<EncodedResource> {
            t.resources
                .iter()
                .filter(|r| self.names.contains(&r.name))
                .cloned()
                .collect()
        };
        let mut cds = keep(clusters);
        cds.extend(self.extra.iter().cloned());
        cds.sort_by(|a, b| a.name.cmp(&b.name));
        (
            TypeResources::from_encoded(cds),
            TypeResources::from_encoded(keep(endpoints)),
        )
    }
}
