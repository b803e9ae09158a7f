//! The parts of a Pod the injector reads, deserialized from the review's object. Unknown fields
//! are ignored; the patch is computed against the original JSON, not this view.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// A Pod as far as injection cares.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodView {
    #[serde(default)]
    pub metadata: Metadata,
    pub spec: Spec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub generate_name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub owner_references: Vec<OwnerReference>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub controller: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    pub containers: Vec<Container>,
    #[serde(default)]
    pub init_containers: Option<Vec<Container>>,
    #[serde(default)]
    pub volumes: Option<Vec<Value>>,
    #[serde(default)]
    pub host_network: Option<bool>,
    #[serde(default)]
    pub service_account_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    #[serde(default)]
    pub ports: Option<Vec<ContainerPort>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Option<String>,
}

impl PodView {
    /// Reads the view out of the review's object.
    pub fn from_value(object: &Value) -> Result<PodView, serde_json::Error> {
        PodView::deserialize(object)
    }

    pub fn annotations(&self) -> BTreeMap<String, String> {
        self.metadata.annotations.clone().unwrap_or_default()
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        self.metadata.labels.clone().unwrap_or_default()
    }

    /// The name for logs: the name, else `generateName*`.
    pub fn display_name(&self) -> String {
        match (&self.metadata.name, &self.metadata.generate_name) {
            (Some(n), _) if !n.is_empty() => n.clone(),
            (_, Some(g)) => format!("{g}*"),
            _ => "<unnamed>".to_string(),
        }
    }

    /// The workload the pod belongs to, as Istio names it: a ReplicaSet's Deployment (the
    /// ReplicaSet name without its hash suffix), another controller's own name, else none.
    pub fn workload_name(&self) -> Option<String> {
        let owners = &self.metadata.owner_references;
        let owner = owners
            .iter()
            .find(|o| o.controller == Some(true))
            .or_else(|| owners.first())?;
        if owner.name.is_empty() {
            return None;
        }
        if owner.kind == "ReplicaSet"
            && let Some((deployment, hash)) = owner.name.rsplit_once('-')
            && !deployment.is_empty()
            && !hash.is_empty()
            && hash.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Some(deployment.to_string());
        }
        Some(owner.name.clone())
    }

    /// The application's first TCP container port (where the proxy forwards inbound requests).
    pub fn first_app_port(&self) -> Option<u16> {
        self.spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
            .map(|p| p.container_port)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn workload_name_strips_the_replicaset_hash() {
        let pod = PodView::from_value(&json!({
            "metadata": {"generateName": "reviews-v1-5b8f9c7d4-", "ownerReferences": [
                {"kind": "ReplicaSet", "name": "reviews-v1-5b8f9c7d4", "controller": true}]},
            "spec": {"containers": [{"name": "app", "ports": [{"containerPort": 9080}]}]}
        }))
        .unwrap();
        assert_eq!(pod.workload_name().as_deref(), Some("reviews-v1"));
        assert_eq!(pod.first_app_port(), Some(9080));
        assert_eq!(pod.display_name(), "reviews-v1-5b8f9c7d4-*");

        let bare = PodView::from_value(&json!({"spec": {"containers": []}})).unwrap();
        assert_eq!(bare.workload_name(), None);
        assert_eq!(bare.first_app_port(), None);
    }

    #[test]
    fn a_pod_without_containers_is_unreadable() {
        assert!(PodView::from_value(&json!({"spec": {}})).is_err());
        assert!(PodView::from_value(&json!({"spec": {"containers": "x"}})).is_err());
        assert!(PodView::from_value(&json!("pod")).is_err());
    }
}
