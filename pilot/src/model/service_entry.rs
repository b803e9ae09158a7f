//! ServiceEntry (`networking.istio.io`): services the mesh cannot discover itself. Each host
//! becomes a [`Service`] (FQDN = the host as written) that VirtualServices and
//! DestinationRules apply to like a Kubernetes Service; its instances are the inline
//! `endpoints`, or the WorkloadEntries of its namespace its `workloadSelector` matches.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::service::{Instance, Port, Resolution, Service, ServiceOrigin};
use super::workload_entry::{WorkloadEntryItem, WorkloadEntrySpec};

/// ServiceEntry spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntrySpec {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub ports: Vec<ServiceEntryPort>,
    /// `MESH_EXTERNAL` (default) or `MESH_INTERNAL`.
    #[serde(default)]
    pub location: Option<String>,
    /// `NONE` (default), `STATIC`, `DNS`, `DNS_ROUND_ROBIN`.
    #[serde(default)]
    pub resolution: Option<String>,
    #[serde(default)]
    pub endpoints: Vec<WorkloadEntrySpec>,
    #[serde(default)]
    pub workload_selector: Option<LabelSelector>,
    #[serde(default)]
    pub export_to: Vec<String>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
}

/// A ServiceEntry port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntryPort {
    pub number: u32,
    /// HTTP, HTTPS, HTTP2, GRPC, TCP, TLS, MONGO...
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub target_port: Option<u32>,
}

/// `workloadSelector` of a ServiceEntry or Sidecar (`labels`, not `matchLabels`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Why a ServiceEntry cannot become services.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceEntryError {
    #[error("spec.hosts is empty")]
    NoHosts,
    #[error("spec.ports is empty")]
    NoPorts,
    #[error("spec.ports[{0}].number {1} is not a port")]
    BadPort(usize, u32),
    #[error("spec.resolution {0:?} is not NONE, STATIC, DNS or DNS_ROUND_ROBIN")]
    BadResolution(String),
    #[error("spec.location {0:?} is not MESH_EXTERNAL or MESH_INTERNAL")]
    BadLocation(String),
    #[error("spec.hosts {0:?}: a wildcard host cannot use DNS resolution")]
    WildcardDns(String),
    #[error("spec.endpoints and spec.workloadSelector cannot both be set")]
    EndpointsAndSelector,
    #[error("spec.endpoints: DNS_ROUND_ROBIN allows at most one endpoint")]
    RoundRobinEndpoints,
    #[error("spec.endpoints[{0}].address is empty")]
    EmptyAddress(usize),
}

impl ServiceEntrySpec {
    /// The resolution (`NONE` when absent).
    pub fn resolution(&self) -> Result<Resolution, ServiceEntryError> {
        match self.resolution.as_deref().unwrap_or("NONE") {
            "NONE" => Ok(Resolution::Passthrough),
            "STATIC" => Ok(Resolution::Static),
            "DNS" => Ok(Resolution::Dns),
            "DNS_ROUND_ROBIN" => Ok(Resolution::DnsRoundRobin),
            other => Err(ServiceEntryError::BadResolution(other.to_string())),
        }
    }

    /// Whether the location is `MESH_EXTERNAL` (the default).
    pub fn mesh_external(&self) -> Result<bool, ServiceEntryError> {
        match self.location.as_deref().unwrap_or("MESH_EXTERNAL") {
            "MESH_EXTERNAL" => Ok(true),
            "MESH_INTERNAL" => Ok(false),
            other => Err(ServiceEntryError::BadLocation(other.to_string())),
        }
    }

    /// One service per host of ServiceEntry `namespace/name`, with its instances (inline
    /// endpoints, or the `workload_entries` of `namespace` the selector matches).
    pub fn services(
        &self,
        namespace: &str,
        name: &str,
        workload_entries: &[WorkloadEntryItem],
    ) -> Result<Vec<Service>, ServiceEntryError> {
        if self.hosts.is_empty() {
            return Err(ServiceEntryError::NoHosts);
        }
        if self.ports.is_empty() {
            return Err(ServiceEntryError::NoPorts);
        }
        let resolution = self.resolution()?;
        let mesh_external = self.mesh_external()?;
        let selector = self.workload_selector.as_ref().map(|s| &s.labels);
        if !self.endpoints.is_empty() && selector.is_some() {
            return Err(ServiceEntryError::EndpointsAndSelector);
        }
        if let Some(i) = self.endpoints.iter().position(|e| e.address.is_empty()) {
            return Err(ServiceEntryError::EmptyAddress(i));
        }
        if matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin) {
            if let Some(h) = self.hosts.iter().find(|h| h.starts_with('*')) {
                return Err(ServiceEntryError::WildcardDns(h.clone()));
            }
            if resolution == Resolution::DnsRoundRobin && self.endpoints.len() > 1 {
                return Err(ServiceEntryError::RoundRobinEndpoints);
            }
        }
        let mut ports = Vec::new();
        for (i, p) in self.ports.iter().enumerate() {
            let number = u16::try_from(p.number)
                .ok()
                .filter(|n| *n > 0)
                .ok_or(ServiceEntryError::BadPort(i, p.number))?;
            ports.push((number, p));
        }
        // The workloads: inline endpoints, or selected WorkloadEntries (with their name).
        let workloads: Vec<(&WorkloadEntrySpec, Option<String>)> = match selector {
            Some(sel) => workload_entries
                .iter()
                .filter(|w| w.namespace == namespace && w.spec.selected_by(sel))
                .map(|w| (&w.spec, Some(format!("{}/{}", w.namespace, w.name))))
                .collect(),
            None => self.endpoints.iter().map(|e| (e, None)).collect(),
        };
        let mut instances: BTreeMap<u16, Vec<Instance>> = BTreeMap::new();
        for (number, p) in &ports {
            let target = p
                .target_port
                .and_then(|t| u16::try_from(t).ok())
                .filter(|t| *t > 0)
                .unwrap_or(*number);
            let mut list: Vec<Instance> = workloads
                .iter()
                .map(|(w, src)| {
                    let port = w.port_for(p.name.as_deref(), None, target);
                    w.instance(port, src.clone())
                })
                .collect();
            list.sort();
            list.dedup();
            instances.insert(*number, list);
        }
        let mut model_ports: Vec<Port> = ports
            .iter()
            .map(|(number, p)| Port {
                name: p.name.clone(),
                port: *number,
                protocol: Some("TCP".to_string()),
                app_protocol: p.protocol.as_ref().map(|s| s.to_ascii_lowercase()),
            })
            .collect();
        model_ports.sort_by_key(|p| p.port);
        model_ports.dedup_by_key(|p| p.port);
        Ok(self
            .hosts
            .iter()
            .map(|host| Service {
                name: host.clone(),
                namespace: namespace.to_string(),
                fqdn: host.clone(),
                ports: model_ports.clone(),
                instances: instances.clone(),
                origin: ServiceOrigin::ServiceEntry {
                    name: name.to_string(),
                },
                resolution,
                mesh_external,
                addresses: self.addresses.clone(),
                export_to: self.export_to.clone(),
                subject_alt_names: self.subject_alt_names.clone(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> ServiceEntrySpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn hosts_ports_endpoints_and_selector() {
        let se = spec(serde_json::json!({
            "hosts": ["api.example.com", "api2.example.com"],
            "ports": [{"number": 443, "name": "https", "protocol": "TLS"},
                      {"number": 80, "name": "http", "protocol": "HTTP", "targetPort": 8080}],
            "location": "MESH_INTERNAL", "resolution": "STATIC",
            "endpoints": [{"address": "10.0.0.2", "ports": {"https": 8443}, "labels": {"v": "2"}},
                          {"address": "10.0.0.1", "serviceAccount": "api"}]
        }));
        let svcs = se.services("ext", "api", &[]).unwrap();
        assert_eq!(svcs.len(), 2);
        let s = &svcs[0];
        assert_eq!(s.fqdn, "api.example.com");
        assert_eq!(s.namespace, "ext");
        assert_eq!(s.resolution, Resolution::Static);
        assert!(!s.mesh_external);
        assert_eq!(
            s.ports.iter().map(|p| p.port).collect::<Vec<_>>(),
            vec![80, 443]
        );
        assert_eq!(s.ports[1].app_protocol.as_deref(), Some("tls"));
        let https: Vec<_> = s.instances[&443]
            .iter()
            .map(|i| (i.ip.as_str(), i.port))
            .collect();
        assert_eq!(https, vec![("10.0.0.1", 443), ("10.0.0.2", 8443)]);
        let http: Vec<_> = s.instances[&80].iter().map(|i| i.port).collect();
        assert_eq!(http, vec![8080, 8080], "targetPort");
        assert_eq!(
            s.service_accounts().into_iter().collect::<Vec<_>>(),
            vec!["api", "default"]
        );

        let by_selector = spec(serde_json::json!({
            "hosts": ["vm.internal"], "ports": [{"number": 9080, "name": "http"}],
            "resolution": "STATIC", "workloadSelector": {"labels": {"app": "vm"}}
        }));
        let wes = vec![
            WorkloadEntryItem {
                namespace: "ext".into(),
                name: "vm-1".into(),
                spec: WorkloadEntrySpec {
                    address: "10.1.0.1".into(),
                    ports: [("http".to_string(), 19080)].into(),
                    labels: [("app".to_string(), "vm".to_string())].into(),
                    service_account: Some("vm-sa".into()),
                    ..WorkloadEntrySpec::default()
                },
            },
            WorkloadEntryItem {
                namespace: "other".into(),
                name: "vm-2".into(),
                spec: WorkloadEntrySpec {
                    address: "10.1.0.2".into(),
                    labels: [("app".to_string(), "vm".to_string())].into(),
                    ..WorkloadEntrySpec::default()
                },
            },
        ];
        let s = &by_selector.services("ext", "vm", &wes).unwrap()[0];
        assert_eq!(s.resolution, Resolution::Static);
        assert!(s.mesh_external, "MESH_EXTERNAL by default");
        let i = &s.instances[&9080];
        assert_eq!(i.len(), 1, "only WorkloadEntries of the same namespace");
        assert_eq!((i[0].ip.as_str(), i[0].port), ("10.1.0.1", 19080));
        assert_eq!(i[0].service_account.as_deref(), Some("vm-sa"));
        assert_eq!(i[0].pod.as_deref(), Some("ext/vm-1"));
    }

    #[test]
    fn resolution_and_validation() {
        let base = serde_json::json!({"hosts": ["a.example.com"], "ports": [{"number": 80}]});
        let with = |k: &str, v: serde_json::Value| {
            let mut b = base.clone();
            b[k] = v;
            spec(b)
        };
        assert_eq!(spec(base.clone()).resolution(), Ok(Resolution::Passthrough));
        assert_eq!(
            with("resolution", "DNS".into()).resolution(),
            Ok(Resolution::Dns)
        );
        assert!(matches!(
            with("resolution", "MAGIC".into()).services("d", "x", &[]),
            Err(ServiceEntryError::BadResolution(_))
        ));
        let mut wild = with("resolution", "DNS".into());
        wild.hosts = vec!["*.example.com".into()];
        assert!(matches!(
            wild.services("d", "x", &[]),
            Err(ServiceEntryError::WildcardDns(_))
        ));
        assert_eq!(
            with("ports", serde_json::json!([])).services("d", "x", &[]),
            Err(ServiceEntryError::NoPorts)
        );
        assert_eq!(
            with("ports", serde_json::json!([{"number": 70000}])).services("d", "x", &[]),
            Err(ServiceEntryError::BadPort(0, 70000))
        );
        let mut both = spec(base);
        both.endpoints = vec![WorkloadEntrySpec {
            address: "1.1.1.1".into(),
            ..Default::default()
        }];
        both.workload_selector = Some(LabelSelector::default());
        assert_eq!(
            both.services("d", "x", &[]),
            Err(ServiceEntryError::EndpointsAndSelector)
        );
    }
}
