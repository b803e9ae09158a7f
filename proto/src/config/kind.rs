//! The kinds the mesh knows: API group, accepted versions, MCP collection, scope.

use super::legacy::LegacyKind;

/// Every kind Galley accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    VirtualService,
    DestinationRule,
    Gateway,
    ServiceEntry,
    Sidecar,
    WorkloadEntry,
    EnvoyFilter,
    AuthorizationPolicy,
    PeerAuthentication,
    RequestAuthentication,
    Rule,
    Handler,
    Instance,
    AttributeManifest,
    QuotaSpec,
    QuotaSpecBinding,
    Namespace,
    Service,
    Endpoints,
    EndpointSlice,
    Pod,
    ServiceAccount,
    /// Istio's mesh config: one resource, read by Galley from `--mesh-config` or the `istio`
    /// ConfigMap, never applied as a document (see [`Kind::from_type`]).
    MeshConfig,
    /// Istio 1.4's legacy Mixer kinds (`kind: denier`, `kind: checknothing`, ...), see
    /// [`super::legacy`].
    Legacy(LegacyKind),
}

/// Static facts about a kind.
#[derive(Debug, Clone, Copy)]
pub struct KindInfo {
    pub kind: &'static str,
    pub group: &'static str,
    pub versions: &'static [&'static str],
    /// MCP collection name, e.g. `istio/networking/v1alpha3/virtualservices`.
    pub collection: &'static str,
    pub namespaced: bool,
}

const NET: &[&str] = &["v1alpha3", "v1beta1", "v1"];
const SEC: &[&str] = &["v1beta1", "v1"];
const MIXER: &[&str] = &["v1alpha2"];
const CORE: &[&str] = &["v1"];
const V1ALPHA3: &[&str] = &["v1alpha3"];
const V1ALPHA1: &[&str] = &["v1alpha1"];

impl Kind {
    pub const ALL: [Kind; 38] = [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::ServiceEntry,
        Kind::Sidecar,
        Kind::WorkloadEntry,
        Kind::EnvoyFilter,
        Kind::AuthorizationPolicy,
        Kind::PeerAuthentication,
        Kind::RequestAuthentication,
        Kind::Rule,
        Kind::Handler,
        Kind::Instance,
        Kind::AttributeManifest,
        Kind::QuotaSpec,
        Kind::QuotaSpecBinding,
        Kind::Namespace,
        Kind::Service,
        Kind::Endpoints,
        Kind::EndpointSlice,
        Kind::Pod,
        Kind::ServiceAccount,
        Kind::MeshConfig,
        Kind::Legacy(LegacyKind::Denier),
        Kind::Legacy(LegacyKind::ListChecker),
        Kind::Legacy(LegacyKind::MemQuota),
        Kind::Legacy(LegacyKind::RedisQuota),
        Kind::Legacy(LegacyKind::Prometheus),
        Kind::Legacy(LegacyKind::Stdio),
        Kind::Legacy(LegacyKind::OpenTelemetry),
        Kind::Legacy(LegacyKind::Noop),
        Kind::Legacy(LegacyKind::Quota),
        Kind::Legacy(LegacyKind::Metric),
        Kind::Legacy(LegacyKind::LogEntry),
        Kind::Legacy(LegacyKind::CheckNothing),
        Kind::Legacy(LegacyKind::ListEntry),
        Kind::Legacy(LegacyKind::TraceSpan),
        Kind::Legacy(LegacyKind::ReportNothing),
    ];

    /// The legacy Mixer kinds ([`Kind::Legacy`]), in [`Kind::ALL`]'s order.
    pub fn legacy() -> impl Iterator<Item = Kind> {
        LegacyKind::ALL.into_iter().map(Kind::Legacy)
    }

    pub fn info(self) -> KindInfo {
        let (kind, group, versions, collection, namespaced) = match self {
            Kind::VirtualService => (
                "VirtualService",
                "networking.istio.io",
                NET,
                "istio/networking/v1alpha3/virtualservices",
                true,
            ),
            Kind::DestinationRule => (
                "DestinationRule",
                "networking.istio.io",
                NET,
                "istio/networking/v1alpha3/destinationrules",
                true,
            ),
            Kind::Gateway => (
                "Gateway",
                "networking.istio.io",
                NET,
                "istio/networking/v1alpha3/gateways",
                true,
            ),
            Kind::ServiceEntry => (
                "ServiceEntry",
                "networking.istio.io",
                NET,
                "istio/networking/v1alpha3/serviceentries",
                true,
            ),
            Kind::Sidecar => (
                "Sidecar",
                "networking.istio.io",
                NET,
                "istio/networking/v1alpha3/sidecars",
                true,
            ),
            Kind::WorkloadEntry => (
                "WorkloadEntry",
                "networking.istio.io",
                NET,
                "istio/networking/v1alpha3/workloadentries",
                true,
            ),
            Kind::EnvoyFilter => (
                "EnvoyFilter",
                "networking.istio.io",
                V1ALPHA3,
                "istio/networking/v1alpha3/envoyfilters",
                true,
            ),
            Kind::AuthorizationPolicy => (
                "AuthorizationPolicy",
                "security.istio.io",
                SEC,
                "istio/security/v1beta1/authorizationpolicies",
                true,
            ),
            Kind::PeerAuthentication => (
                "PeerAuthentication",
                "security.istio.io",
                SEC,
                "istio/security/v1beta1/peerauthentications",
                true,
            ),
            Kind::RequestAuthentication => (
                "RequestAuthentication",
                "security.istio.io",
                SEC,
                "istio/security/v1beta1/requestauthentications",
                true,
            ),
            Kind::Rule => (
                "rule",
                "config.istio.io",
                MIXER,
                "istio/policy/v1beta1/rules",
                true,
            ),
            Kind::Handler => (
                "handler",
                "config.istio.io",
                MIXER,
                "istio/policy/v1beta1/handlers",
                true,
            ),
            Kind::Instance => (
                "instance",
                "config.istio.io",
                MIXER,
                "istio/policy/v1beta1/instances",
                true,
            ),
            Kind::AttributeManifest => (
                "attributemanifest",
                "config.istio.io",
                MIXER,
                "istio/policy/v1beta1/attributemanifests",
                true,
            ),
            Kind::QuotaSpec => (
                "QuotaSpec",
                "config.istio.io",
                MIXER,
                "istio/mixer/v1/config/client/quotaspecs",
                true,
            ),
            Kind::QuotaSpecBinding => (
                "QuotaSpecBinding",
                "config.istio.io",
                MIXER,
                "istio/mixer/v1/config/client/quotaspecbindings",
                true,
            ),
            Kind::Namespace => ("Namespace", "", CORE, "k8s/core/v1/namespaces", false),
            Kind::Service => ("Service", "", CORE, "k8s/core/v1/services", true),
            Kind::Endpoints => ("Endpoints", "", CORE, "k8s/core/v1/endpoints", true),
            Kind::EndpointSlice => (
                "EndpointSlice",
                "discovery.k8s.io",
                CORE,
                "k8s/discovery/v1/endpointslices",
                true,
            ),
            Kind::Pod => ("Pod", "", CORE, "k8s/core/v1/pods", true),
            Kind::ServiceAccount => (
                "ServiceAccount",
                "",
                CORE,
                "k8s/core/v1/serviceaccounts",
                true,
            ),
            Kind::MeshConfig => (
                "MeshConfig",
                "mesh.istio.io",
                V1ALPHA1,
                super::mesh_config::MESH_CONFIG_COLLECTION,
                true,
            ),
            Kind::Legacy(l) => (l.name(), "config.istio.io", MIXER, l.collection(), true),
        };
        KindInfo {
            kind,
            group,
            versions,
            collection,
            namespaced,
        }
    }

    /// The kind named by `apiVersion` + `kind`, when the mesh accepts that version. Never
    /// [`Kind::MeshConfig`]: the mesh config is not a document (Galley reads it from its own file
    /// or the `istio` ConfigMap and validates it there).
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        let (group, version) = match api_version.rsplit_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        Kind::ALL
            .into_iter()
            .filter(|k| *k != Kind::MeshConfig)
            .find(|k| {
                let i = k.info();
                i.kind == kind && i.group == group && i.versions.contains(&version)
            })
    }

    /// The kind whose MCP collection is `collection`.
    pub fn from_collection(collection: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.info().collection == collection)
    }

    /// The kind spelled `name` (as in `meshctl get virtualservice`): kind name, lower case, or
    /// plural collection suffix.
    pub fn from_name(name: &str) -> Option<Kind> {
        let n = name.to_ascii_lowercase();
        Kind::ALL.into_iter().find(|k| {
            let i = k.info();
            let plural = i.collection.rsplit('/').next().unwrap_or_default();
            i.kind.to_ascii_lowercase() == n || plural == n
        })
    }

    /// The `apiVersion` to write when the mesh creates an object of this kind.
    pub fn api_version(self) -> String {
        let i = self.info();
        let v = i.versions[0];
        if i.group.is_empty() {
            v.to_string()
        } else {
            format!("{}/{}", i.group, v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        assert_eq!(
            Kind::from_type("networking.istio.io/v1beta1", "Gateway"),
            Some(Kind::Gateway)
        );
        assert_eq!(Kind::from_type("v1", "Service"), Some(Kind::Service));
        assert_eq!(Kind::from_type("apps/v1", "Deployment"), None);
        assert_eq!(
            Kind::from_collection("k8s/core/v1/endpoints"),
            Some(Kind::Endpoints)
        );
        assert_eq!(
            Kind::from_name("virtualservices"),
            Some(Kind::VirtualService)
        );
        assert_eq!(Kind::from_name("vs"), None);
        assert_eq!(Kind::Rule.api_version(), "config.istio.io/v1alpha2");
        assert_eq!(
            Kind::from_collection("istio/mesh/v1alpha1/MeshConfig"),
            Some(Kind::MeshConfig)
        );
        assert_eq!(
            Kind::from_type("mesh.istio.io/v1alpha1", "MeshConfig"),
            None
        );
    }

    #[test]
    fn legacy_kinds() {
        let denier = Kind::Legacy(LegacyKind::Denier);
        assert_eq!(
            Kind::from_type("config.istio.io/v1alpha2", "denier"),
            Some(denier)
        );
        assert_eq!(Kind::from_type("config.istio.io/v1beta1", "denier"), None);
        assert_eq!(
            Kind::from_collection("istio/config/v1alpha2/legacy/logentries"),
            Some(Kind::Legacy(LegacyKind::LogEntry))
        );
        assert_eq!(
            Kind::from_name("memquotas"),
            Some(Kind::Legacy(LegacyKind::MemQuota))
        );
        assert_eq!(denier.api_version(), "config.istio.io/v1alpha2");
        assert_eq!(Kind::legacy().count(), 15);
        assert!(Kind::legacy().all(|k| Kind::ALL.contains(&k)));
        // Every kind's collection and (group, kind) are distinct.
        for (i, a) in Kind::ALL.iter().enumerate() {
            for b in &Kind::ALL[i + 1..] {
                assert_ne!(a.info().collection, b.info().collection);
                assert_ne!(
                    (a.info().group, a.info().kind),
                    (b.info().group, b.info().kind)
                );
            }
        }
    }
}
