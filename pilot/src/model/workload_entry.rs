//! WorkloadEntry (`networking.istio.io`): a workload outside Kubernetes (a VM) with an address,
//! named ports, labels and an identity. Kubernetes Services of its namespace select it by their
//! `selector`, ServiceEntries by `workloadSelector`; either way it becomes an [`Instance`].
//! The same shape is a ServiceEntry's inline `endpoints[]`.

use std::collections::BTreeMap;

use mesh_proto::config::{ConfigObject, Kind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::service::Instance;
use crate::galley_client::Snapshot;

/// WorkloadEntry spec (also a ServiceEntry endpoint).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEntrySpec {
    /// IP address or (for DNS resolution) a host name.
    #[serde(default)]
    pub address: String,
    /// Port name (of the service) → the workload's port number.
    #[serde(default)]
    pub ports: BTreeMap<String, u32>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub network: Option<String>,
    /// `region/zone/subzone`.
    #[serde(default)]
    pub locality: Option<String>,
    /// Load balancing weight (absent: 1).
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub service_account: Option<String>,
}

/// A WorkloadEntry object: its place and its spec (labels = `metadata.labels` overlaid by
/// `spec.labels`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WorkloadEntryItem {
    pub namespace: String,
    pub name: String,
    pub spec: WorkloadEntrySpec,
}

/// Every WorkloadEntry of the snapshot, in `namespace/name` order; unreadable ones go to
/// `problems`.
pub fn read_workload_entries(
    snapshot: &Snapshot,
    problems: &mut Vec<String>,
) -> Vec<WorkloadEntryItem> {
    let mut out = Vec::new();
    for obj in snapshot.objects(Kind::WorkloadEntry) {
        match item(obj) {
            Ok(w) => out.push(w),
            Err(reason) => {
                tracing::warn!(object = %obj.key(), kind = %obj.kind, reason = %reason, "WorkloadEntry left out");
                problems.push(format!("{} {}: {reason}", obj.kind, obj.key()));
            }
        }
    }
    out
}

fn item(obj: &ConfigObject) -> Result<WorkloadEntryItem, String> {
    let mut spec: WorkloadEntrySpec = obj.spec().map_err(|e| e.to_string())?;
    if spec.address.is_empty() {
        return Err("spec.address is empty".to_string());
    }
    let mut labels = obj.metadata.labels.clone();
    labels.extend(std::mem::take(&mut spec.labels));
    spec.labels = labels;
    Ok(WorkloadEntryItem {
        namespace: obj.metadata.namespace.clone(),
        name: obj.metadata.name.clone(),
        spec,
    })
}

impl WorkloadEntrySpec {
    /// The workload's port for a service port: the entry's port named like the service port,
    /// else the one named like a named `targetPort`, else a numeric `targetPort`, else the
    /// service port itself.
    pub fn port_for(&self, name: Option<&str>, target: Option<&Value>, port: u16) -> u16 {
        let named = |n: &str| self.ports.get(n).and_then(|p| u16::try_from(*p).ok());
        if let Some(p) = name.and_then(named) {
            return p;
        }
        match target {
            Some(Value::String(t)) => named(t).unwrap_or(port),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0)
                .unwrap_or(port),
            _ => port,
        }
    }

    /// This workload as an instance on `port` (its service account `default` when it names
    /// none, as for pods).
    pub fn instance(&self, port: u16, source: Option<String>) -> Instance {
        Instance {
            ip: self.address.clone(),
            port,
            pod: source,
            labels: self.labels.clone(),
            service_account: Some(
                self.service_account
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "default".to_string()),
            ),
            locality: self.locality.clone().filter(|l| !l.is_empty()),
            weight: self.weight.filter(|w| *w > 0),
        }
    }

    /// Whether every label of `selector` is on this workload (an empty selector selects none).
    pub fn selected_by(&self, selector: &BTreeMap<String, String>) -> bool {
        !selector.is_empty() && selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_labels_and_identity() {
        let objs: Vec<ConfigObject> = serde_json::from_value(serde_json::json!([
            {"apiVersion": "networking.istio.io/v1beta1", "kind": "WorkloadEntry",
             "metadata": {"name": "vm-1", "namespace": "default", "labels": {"app": "old", "zone": "a"}},
             "spec": {"address": "10.9.0.1", "ports": {"http": 18080},
                      "labels": {"app": "details"}, "serviceAccount": "details-vm",
                      "locality": "us/east/1", "weight": 3}},
            {"apiVersion": "networking.istio.io/v1beta1", "kind": "WorkloadEntry",
             "metadata": {"name": "no-address", "namespace": "default"}, "spec": {}}
        ]))
        .unwrap();
        let mut problems = Vec::new();
        let wes = read_workload_entries(&Snapshot::from_objects(objs), &mut problems);
        assert_eq!(wes.len(), 1);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("default/no-address"), "{problems:?}");
        let we = &wes[0].spec;
        assert_eq!(we.labels["app"], "details", "spec labels win");
        assert_eq!(we.labels["zone"], "a");
        assert_eq!(we.port_for(Some("http"), None, 9080), 18080);
        assert_eq!(we.port_for(Some("grpc"), None, 7070), 7070);
        assert_eq!(
            we.port_for(None, Some(&serde_json::json!("http")), 80),
            18080
        );
        assert_eq!(we.port_for(None, Some(&serde_json::json!(8000)), 80), 8000);
        let i = we.instance(18080, None);
        assert_eq!(i.service_account.as_deref(), Some("details-vm"));
        assert_eq!(i.locality.as_deref(), Some("us/east/1"));
        assert_eq!(i.weight, Some(3));
        assert!(we.selected_by(&BTreeMap::from([("app".into(), "details".into())])));
        assert!(!we.selected_by(&BTreeMap::new()));
    }
}
