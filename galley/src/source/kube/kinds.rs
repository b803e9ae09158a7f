//! Which Kubernetes resources galley watches: every Istio config kind with a CRD in
//! `charts/mesh/crds/` (in the newest version galley accepts that the CRD serves) and the
//! context kinds the mesh needs (the grants of `charts/mesh/rbac-needs.yaml`).

use kube::api::ApiResource;
use mesh_proto::config::Kind;

use crate::validate::has_schema;

/// The Kubernetes kinds galley turns into MCP collections besides the Istio CRDs.
pub const CONTEXT_KINDS: [Kind; 6] = [
    Kind::Namespace,
    Kind::Service,
    Kind::Endpoints,
    Kind::EndpointSlice,
    Kind::Pod,
    Kind::ServiceAccount,
];

/// One watched resource.
#[derive(Debug, Clone)]
pub struct WatchedKind {
    pub kind: Kind,
    pub resource: ApiResource,
    pub namespaced: bool,
    /// Whether galley writes `status` for rejected objects (the Istio CRDs have a status
    /// subresource; the core kinds' status is the kubelet's and controllers').
    pub writes_status: bool,
}

impl WatchedKind {
    /// `Kind` as Kubernetes spells it (`VirtualService`, `rule`).
    pub fn name(&self) -> &'static str {
        self.kind.info().kind
    }
}

fn resource(kind: Kind, version: &str) -> ApiResource {
    let info = kind.info();
    let plural = info.collection.rsplit('/').next().unwrap_or_default();
    let api_version = if info.group.is_empty() {
        version.to_string()
    } else {
        format!("{}/{version}", info.group)
    };
    ApiResource {
        group: info.group.to_string(),
        version: version.to_string(),
        api_version,
        kind: info.kind.to_string(),
        plural: plural.to_string(),
    }
}

/// Every resource galley watches, Istio kinds first.
pub fn watched_kinds() -> Vec<WatchedKind> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        let info = kind.info();
        if info.group.ends_with("istio.io") {
            // The newest version galley accepts for which the CRD has a schema.
            let version = info
                .versions
                .iter()
                .rev()
                .find(|v| has_schema(&format!("{}/{v}", info.group), info.kind));
            if let Some(v) = version {
                out.push(WatchedKind {
                    kind,
                    resource: resource(kind, v),
                    namespaced: info.namespaced,
                    writes_status: true,
                });
            }
        } else if CONTEXT_KINDS.contains(&kind) {
            out.push(WatchedKind {
                kind,
                resource: resource(kind, info.versions[info.versions.len() - 1]),
                namespaced: info.namespaced,
                writes_status: false,
            });
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn istio_crds_and_context_kinds() {
        let kinds = watched_kinds();
        let find = |k: Kind| kinds.iter().find(|w| w.kind == k).unwrap();
        let vs = find(Kind::VirtualService);
        assert_eq!(vs.resource.api_version, "networking.istio.io/v1");
        assert_eq!(vs.resource.plural, "virtualservices");
        assert!(vs.writes_status);
        assert_eq!(
            find(Kind::EnvoyFilter).resource.api_version,
            "networking.istio.io/v1alpha3"
        );
        assert_eq!(find(Kind::Rule).resource.plural, "rules");
        assert_eq!(find(Kind::Rule).resource.kind, "rule");
        let ep = find(Kind::EndpointSlice);
        assert_eq!(ep.resource.api_version, "discovery.k8s.io/v1");
        assert_eq!(find(Kind::Endpoints).resource.plural, "endpoints");
        assert!(!find(Kind::Namespace).namespaced);
        assert!(!find(Kind::Pod).writes_status);
        // The legacy Mixer kinds have CRDs too, so they are watched like the others.
        let denier = find(Kind::Legacy(mesh_proto::config::LegacyKind::Denier));
        assert_eq!(denier.resource.api_version, "config.istio.io/v1alpha2");
        assert_eq!(denier.resource.plural, "deniers");
        assert_eq!(denier.resource.kind, "denier");
        // One per CRD (16 + 15 legacy) plus the six context kinds.
        assert_eq!(kinds.len(), 37, "{kinds:?}");
    }
}
