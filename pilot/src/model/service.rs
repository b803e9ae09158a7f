//! What the registry knows about one service: ports, and the workload instances behind each.

use std::collections::{BTreeMap, BTreeSet};

use mesh_proto::config::{DestinationRule, Gateway, VirtualService};
use serde::Serialize;

/// A Kubernetes Service seen as a mesh service.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    /// `name.ns.svc.<domain-suffix>`.
    pub fqdn: String,
    /// Ports in ascending order.
    pub ports: Vec<Port>,
    /// Ready instances per service port number, sorted by `ip:port`.
    pub instances: BTreeMap<u16, Vec<Instance>>,
    /// Where the service is defined.
    pub origin: ServiceOrigin,
    /// How a proxy finds the service's endpoints.
    pub resolution: Resolution,
    /// ServiceEntry `location: MESH_EXTERNAL` (no Istio mTLS unless a DestinationRule asks).
    pub mesh_external: bool,
    /// ServiceEntry `addresses` (VIPs / CIDRs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// `exportTo` (empty: every namespace).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// ServiceEntry `subjectAltNames`, verified besides the instances' SPIFFE ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

/// Where a service comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ServiceOrigin {
    /// A Kubernetes Service (`name.ns.svc.<suffix>`, short names apply).
    #[default]
    Kubernetes,
    /// One host of ServiceEntry `namespace/name` (the name is the host as written).
    ServiceEntry { name: String },
}

/// How the endpoints of a service are found (ServiceEntry `resolution`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Resolution {
    /// Pilot lists them (Kubernetes Endpoints, `STATIC`): EDS.
    #[default]
    Static,
    /// The proxy resolves the endpoint addresses (or the host) by DNS: `STRICT_DNS`.
    Dns,
    /// Like [`Resolution::Dns`], one connection target at a time: `LOGICAL_DNS`.
    DnsRoundRobin,
    /// `NONE`: the connection's original destination (`ORIGINAL_DST`).
    Passthrough,
}

/// One service port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Port {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Option<String>,
    /// Kubernetes `appProtocol` (Istio's protocol selection reads it before the port name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

/// One workload address serving a service port.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Instance {
    pub ip: String,
    /// The endpoint (target) port.
    pub port: u16,
    /// `namespace/name` of the Pod behind the address, when known.
    pub pod: Option<String>,
    /// The Pod's labels.
    pub labels: BTreeMap<String, String>,
    /// The Pod's service account (`default` when the Pod names none).
    pub service_account: Option<String>,
    /// `region/zone/subzone` (WorkloadEntry / ServiceEntry endpoint `locality`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// Load balancing weight (absent: 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

impl Service {
    /// The port numbered `port`.
    pub fn port(&self, port: u16) -> Option<&Port> {
        self.ports.iter().find(|p| p.port == port)
    }

    /// Every service account of the instances behind the service, sorted.
    pub fn service_accounts(&self) -> BTreeSet<String> {
        self.instances
            .values()
            .flatten()
            .filter_map(|i| i.service_account.clone())
            .collect()
    }
}

impl Service {
    /// Whether the service is visible to proxies in `namespace` by its `exportTo`
    /// (`*`, `.` = its own namespace, `~` = none, or namespace names; empty = everywhere).
    pub fn exported_to(&self, namespace: &str) -> bool {
        exported(&self.export_to, &self.namespace, namespace)
    }

    /// Whether this is a Kubernetes Service (short names and `name.ns` forms apply).
    pub fn is_kubernetes(&self) -> bool {
        self.origin == ServiceOrigin::Kubernetes
    }
}

/// Istio's `exportTo` rule for config of `owner_ns` seen from `namespace`.
pub fn exported(export_to: &[String], owner_ns: &str, namespace: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || e == namespace || (e == "." && owner_ns == namespace))
}

impl Instance {
    /// Whether the instance carries every label of `selector`.
    pub fn matches(&self, selector: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// A VirtualService with its hosts resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VirtualServiceEntry {
    pub namespace: String,
    pub name: String,
    /// `spec.hosts` resolved to FQDNs in the VirtualService's namespace.
    pub hosts: Vec<String>,
    pub spec: VirtualService,
}

impl VirtualServiceEntry {
    /// Whether the VirtualService applies to sidecars (no `gateways`, or `mesh` among them).
    pub fn applies_to_mesh(&self) -> bool {
        self.spec.gateways.is_empty() || self.spec.gateways.iter().any(|g| g == "mesh")
    }

    /// Whether the VirtualService is bound to gateway `namespace/name` (written `ns/name`, or
    /// `name` meaning the VirtualService's own namespace).
    pub fn bound_to_gateway(&self, namespace: &str, name: &str) -> bool {
        self.spec.gateways.iter().any(|g| match g.split_once('/') {
            Some((ns, n)) => ns == namespace && n == name,
            None => g == name && self.namespace == namespace,
        })
    }
}

/// A DestinationRule with its host resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DestinationRuleEntry {
    pub namespace: String,
    pub name: String,
    pub host: String,
    pub spec: DestinationRule,
}

/// A Gateway.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewayEntry {
    pub namespace: String,
    pub name: String,
    pub spec: Gateway,
}

impl GatewayEntry {
    /// Whether the gateway's selector matches `labels` (an empty selector matches nothing).
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.spec.selector.is_empty()
            && self
                .spec
                .selector
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
    }
}
