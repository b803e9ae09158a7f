//! Sidecar (`networking.istio.io`): which services a sidecar sees. The Sidecar of a proxy is
//! the one of its namespace whose `workloadSelector` matches its labels, else its namespace's
//! Sidecar without selector, else the root namespace's Sidecar without selector. Its
//! `egress[].hosts` (`ns/dnsName`: ns `*` any, `.` the proxy's namespace, `~` none; dnsName
//! `*`, `*.suffix`, an FQDN, or a Kubernetes short name) limit the services, and with them the
//! clusters, endpoints, routes and listeners; `outboundTrafficPolicy` says what unknown hosts
//! get. `exportTo` of services, VirtualServices and DestinationRules applies to every sidecar.

use std::collections::BTreeMap;

use mesh_proto::config::{ConfigObject, Kind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::hosts::resolve_host;
use super::security::ROOT_NAMESPACE;
use super::service::{Service, exported};
use super::service_entry::LabelSelector;
use crate::galley_client::Snapshot;

#[path = "sidecar_ingress.rs"]
mod sidecar_ingress;
pub use sidecar_ingress::{IngressEndpoint, IngressPort, IngressProtocol, parse_ingress};

/// Sidecar spec (the parts Pilot reads).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSpec {
    #[serde(default)]
    pub workload_selector: Option<LabelSelector>,
    #[serde(default)]
    pub egress: Vec<EgressListener>,
    #[serde(default)]
    pub ingress: Vec<Value>,
    #[serde(default)]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// `egress[]`: the hosts (the `port`, `bind` and `captureMode` are kept but not used).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressListener {
    #[serde(default)]
    pub port: Option<Value>,
    #[serde(default)]
    pub bind: Option<String>,
    #[serde(default)]
    pub capture_mode: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// `outboundTrafficPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboundTrafficPolicy {
    #[serde(default)]
    pub mode: Option<String>,
}

/// What a sidecar does with a host it has no service for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum OutboundPolicy {
    /// `ALLOW_ANY`: to `PassthroughCluster` (the original destination).
    AllowAny,
    /// `REGISTRY_ONLY`: to `BlackHoleCluster` (nothing gets out).
    RegistryOnly,
}

/// A Sidecar object with its egress hosts parsed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SidecarEntry {
    pub namespace: String,
    pub name: String,
    pub spec: SidecarSpec,
    /// Every `egress[].hosts` entry, parsed (`*/*` when the Sidecar lists none).
    pub hosts: Vec<EgressHost>,
    pub outbound: Option<OutboundPolicy>,
    /// `ingress[]`, checked (empty: the inbound side follows the workload's service ports).
    pub ingress: Vec<IngressPort>,
}

/// The namespace part of an egress host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum NamespaceMatch {
    /// `*`
    Any,
    /// `.`: the proxy's namespace.
    Own,
    /// `~`: none.
    None,
    Named(String),
}

/// One `ns/dnsName` egress host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EgressHost {
    pub namespace: NamespaceMatch,
    pub host: String,
}

impl EgressHost {
    /// Parses `ns/dnsName`.
    pub fn parse(s: &str) -> Result<EgressHost, String> {
        let Some((ns, host)) = s.split_once('/') else {
            return Err(format!("egress host {s:?} is not namespace/dnsName"));
        };
        if ns.is_empty() || host.is_empty() || host.contains('/') {
            return Err(format!("egress host {s:?} is not namespace/dnsName"));
        }
        let namespace = match ns {
            "*" => NamespaceMatch::Any,
            "." => NamespaceMatch::Own,
            "~" => NamespaceMatch::None,
            other => NamespaceMatch::Named(other.to_string()),
        };
        Ok(EgressHost {
            namespace,
            host: host.to_string(),
        })
    }

    /// Whether this entry admits `svc` for a proxy in `proxy_ns`.
    pub fn admits(&self, svc: &Service, proxy_ns: &str, domain_suffix: &str) -> bool {
        let ns_ok = match &self.namespace {
            NamespaceMatch::Any => true,
            NamespaceMatch::Own => svc.namespace == proxy_ns,
            NamespaceMatch::None => false,
            NamespaceMatch::Named(n) => svc.namespace == *n,
        };
        ns_ok && host_matches(&self.host, svc, domain_suffix)
    }
}

/// `*`; `*.suffix` covering the host (or an equal wildcard); the FQDN; a Kubernetes short or
/// partial name resolved in the service's namespace.
fn host_matches(pattern: &str, svc: &Service, domain_suffix: &str) -> bool {
    if pattern == "*" || pattern == svc.fqdn {
        return true;
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        let host = svc.fqdn.trim_start_matches('*');
        return host.ends_with(suffix) && host.len() >= suffix.len();
    }
    svc.is_kubernetes() && resolve_host(pattern, &svc.namespace, domain_suffix) == svc.fqdn
}

/// Every Sidecar of the snapshot in `namespace/name` order; unreadable ones go to `problems`.
pub fn read_sidecars(snapshot: &Snapshot, problems: &mut Vec<String>) -> Vec<SidecarEntry> {
    let mut out = Vec::new();
    for obj in snapshot.objects(Kind::Sidecar) {
        match entry(obj) {
            Ok(s) => out.push(s),
            Err(reason) => {
                tracing::warn!(object = %obj.key(), kind = %obj.kind, reason = %reason, "Sidecar left out");
                problems.push(format!("{} {}: {reason}", obj.kind, obj.key()));
            }
        }
    }
    out
}

fn entry(obj: &ConfigObject) -> Result<SidecarEntry, String> {
    let spec: SidecarSpec = obj.spec().map_err(|e| e.to_string())?;
    let mut hosts = Vec::new();
    for (i, e) in spec.egress.iter().enumerate() {
        if e.hosts.is_empty() {
            return Err(format!("spec.egress[{i}].hosts is empty"));
        }
        for h in &e.hosts {
            hosts.push(EgressHost::parse(h).map_err(|r| format!("spec.egress[{i}]: {r}"))?);
        }
    }
    if spec.egress.is_empty() {
        hosts.push(EgressHost {
            namespace: NamespaceMatch::Any,
            host: "*".to_string(),
        });
    }
    let outbound = match spec
        .outbound_traffic_policy
        .as_ref()
        .and_then(|p| p.mode.as_deref())
    {
        None => None,
        Some("ALLOW_ANY") => Some(OutboundPolicy::AllowAny),
        Some("REGISTRY_ONLY") => Some(OutboundPolicy::RegistryOnly),
        Some(other) => {
            return Err(format!(
                "spec.outboundTrafficPolicy.mode {other:?} is not ALLOW_ANY or REGISTRY_ONLY"
            ));
        }
    };
    let ingress = parse_ingress(&spec.ingress)?;
    Ok(SidecarEntry {
        namespace: obj.metadata.namespace.clone(),
        name: obj.metadata.name.clone(),
        spec,
        hosts,
        outbound,
        ingress,
    })
}

impl SidecarEntry {
    fn selector(&self) -> Option<&BTreeMap<String, String>> {
        self.spec
            .workload_selector
            .as_ref()
            .map(|s| &s.labels)
            .filter(|l| !l.is_empty())
    }
}

/// The Sidecar that applies to a proxy in `namespace` with `labels`: a matching selector in its
/// namespace, else its namespace's default, else the root namespace's default (each the first
/// by name).
pub fn sidecar_for<'a>(
    sidecars: &'a [SidecarEntry],
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<&'a SidecarEntry> {
    let own = || sidecars.iter().filter(|s| s.namespace == namespace);
    own()
        .find(|s| {
            s.selector()
                .is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
        })
        .or_else(|| own().find(|s| s.selector().is_none()))
        .or_else(|| {
            sidecars
                .iter()
                .find(|s| s.namespace == ROOT_NAMESPACE && s.selector().is_none())
        })
}

/// What one sidecar may see.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SidecarScope<'a> {
    /// The proxy's namespace.
    pub namespace: String,
    /// The Sidecar resource that applies, if any.
    pub sidecar: Option<&'a SidecarEntry>,
    pub domain_suffix: String,
}

impl SidecarScope<'_> {
    /// Whether the proxy sees `svc` (exported to its namespace, and admitted by the Sidecar's
    /// egress hosts when there is a Sidecar).
    pub fn sees(&self, svc: &Service) -> bool {
        svc.exported_to(&self.namespace)
            && self.sidecar.is_none_or(|s| {
                s.hosts
                    .iter()
                    .any(|h| h.admits(svc, &self.namespace, &self.domain_suffix))
            })
    }

    /// Whether config of `owner_ns` with `export_to` is visible to the proxy.
    pub fn sees_config(&self, export_to: &[String], owner_ns: &str) -> bool {
        exported(export_to, owner_ns, &self.namespace)
    }

    /// The Sidecar's `outboundTrafficPolicy`, when it sets one.
    pub fn outbound(&self) -> Option<OutboundPolicy> {
        self.sidecar.and_then(|s| s.outbound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServiceOrigin;

    fn svc(name: &str, ns: &str) -> Service {
        Service {
            name: name.into(),
            namespace: ns.into(),
            fqdn: format!("{name}.{ns}.svc.cluster.local"),
            ..Service::default()
        }
    }

    fn se(host: &str, ns: &str) -> Service {
        Service {
            name: host.into(),
            namespace: ns.into(),
            fqdn: host.into(),
            origin: ServiceOrigin::ServiceEntry { name: "x".into() },
            ..Service::default()
        }
    }

    #[test]
    fn egress_host_forms() {
        let d = "cluster.local";
        let h = |s: &str| EgressHost::parse(s).unwrap();
        let reviews = svc("reviews", "default");
        assert!(h("./*").admits(&reviews, "default", d));
        assert!(!h("./*").admits(&reviews, "prod", d));
        assert!(h("*/reviews.default.svc.cluster.local").admits(&reviews, "prod", d));
        assert!(h("./reviews").admits(&reviews, "default", d), "short name");
        assert!(h("*/reviews").admits(&reviews, "prod", d));
        assert!(!h("*/ratings").admits(&reviews, "default", d));
        assert!(h("default/*.svc.cluster.local").admits(&reviews, "x", d));
        assert!(!h("prod/*").admits(&reviews, "default", d));
        assert!(!h("~/*").admits(&reviews, "default", d));
        let ext = se("api.example.com", "ext");
        assert!(h("*/*.example.com").admits(&ext, "default", d));
        assert!(h("ext/api.example.com").admits(&ext, "default", d));
        assert!(!h("./api.example.com").admits(&ext, "default", d));
        assert!(
            !h("*/api").admits(&ext, "ext", d),
            "short names are Kubernetes only"
        );
        let wild = se("*.example.com", "ext");
        assert!(h("*/*.example.com").admits(&wild, "default", d));
        assert!(!h("*/www.example.com").admits(&wild, "default", d));
        assert!(EgressHost::parse("reviews").is_err());
        assert!(EgressHost::parse("/x").is_err());
    }

    fn sidecars(v: serde_json::Value) -> (Vec<SidecarEntry>, Vec<String>) {
        let objs: Vec<ConfigObject> = serde_json::from_value(v).unwrap();
        let mut problems = Vec::new();
        let s = read_sidecars(&Snapshot::from_objects(objs), &mut problems);
        (s, problems)
    }

    #[test]
    fn selection_order_and_validation() {
        let (all, problems) = sidecars(serde_json::json!([
            {"apiVersion": "networking.istio.io/v1beta1", "kind": "Sidecar",
             "metadata": {"name": "default", "namespace": "istio-system"},
             "spec": {"egress": [{"hosts": ["./*"]}], "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}},
            {"apiVersion": "networking.istio.io/v1beta1", "kind": "Sidecar",
             "metadata": {"name": "ns-default", "namespace": "prod"}, "spec": {}},
            {"apiVersion": "networking.istio.io/v1beta1", "kind": "Sidecar",
             "metadata": {"name": "reviews", "namespace": "prod"},
             "spec": {"workloadSelector": {"labels": {"app": "reviews"}},
                      "egress": [{"hosts": ["./ratings", "istio-system/*"]}]}},
            {"apiVersion": "networking.istio.io/v1beta1", "kind": "Sidecar",
             "metadata": {"name": "bad-host", "namespace": "prod"},
             "spec": {"egress": [{"hosts": ["ratings"]}]}},
            {"apiVersion": "networking.istio.io/v1beta1", "kind": "Sidecar",
             "metadata": {"name": "bad-mode", "namespace": "prod"},
             "spec": {"outboundTrafficPolicy": {"mode": "SOMETIMES"}}}
        ]));
        assert_eq!(all.len(), 3);
        assert_eq!(problems.len(), 2, "{problems:?}");
        let app = |a: &str| BTreeMap::from([("app".to_string(), a.to_string())]);
        assert_eq!(
            sidecar_for(&all, "prod", &app("reviews")).map(|s| s.name.as_str()),
            Some("reviews")
        );
        let ns_default = sidecar_for(&all, "prod", &app("ratings")).unwrap();
        assert_eq!(ns_default.name, "ns-default");
        assert_eq!(ns_default.hosts, vec![EgressHost::parse("*/*").unwrap()]);
        let root = sidecar_for(&all, "default", &app("x")).unwrap();
        assert_eq!(root.namespace, "istio-system");
        assert_eq!(root.outbound, Some(OutboundPolicy::RegistryOnly));
        let scope = SidecarScope {
            namespace: "default".into(),
            sidecar: Some(root),
            domain_suffix: "cluster.local".into(),
        };
        assert!(
            scope.sees(&svc("a", "default")),
            "`.` is the proxy's namespace"
        );
        assert!(!scope.sees(&svc("a", "istio-system")));
        let mut hidden = svc("b", "default");
        hidden.export_to = vec!["other".into()];
        assert!(!scope.sees(&hidden), "exportTo");
        hidden.export_to = vec![".".into()];
        assert!(scope.sees(&hidden));
    }
}
