//! Who the proxy is, as Pilot sees it: the Envoy `Node` sent on the ADS stream.

use std::collections::BTreeMap;

use mesh_proto::envoy::envoy::config::core::v3::Node;
use mesh_proto::envoy::google::protobuf::{Struct, Value, value::Kind};

/// Sidecar (beside one workload) or router (ingress gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyType {
    Sidecar,
    Router,
}

impl ProxyType {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyType::Sidecar => "sidecar",
            ProxyType::Router => "router",
        }
    }
}

/// The proxy's workload facts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeInfo {
    pub proxy_type: ProxyType,
    pub ip: String,
    pub pod: String,
    /// The workload name in metrics and `WORKLOAD_NAME` (the pod name when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_name: Option<String>,
    pub namespace: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

impl NodeInfo {
    /// `--workload-name` when given, else the pod name.
    pub fn workload_name(&self) -> &str {
        self.workload_name.as_deref().unwrap_or(&self.pod)
    }

    /// `sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local` (or `router~...`).
    pub fn node_id(&self) -> String {
        format!(
            "{}~{}~{}.{}~{}.svc.cluster.local",
            self.proxy_type.as_str(),
            self.ip,
            self.pod,
            self.namespace,
            self.namespace
        )
    }

    /// `kubernetes://<pod>.<ns>`, the workload uid Mixer sees.
    pub fn uid(&self) -> String {
        format!("kubernetes://{}.{}", self.pod, self.namespace)
    }

    /// The Envoy node with metadata `NAMESPACE`, `LABELS`, `SERVICE_ACCOUNT`, `WORKLOAD_NAME`.
    pub fn node(&self) -> Node {
        let labels = Struct {
            fields: self
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), string(v)))
                .collect(),
        };
        let mut fields = std::collections::BTreeMap::new();
        fields.insert("NAMESPACE".to_string(), string(&self.namespace));
        fields.insert(
            "LABELS".to_string(),
            Value {
                kind: Some(Kind::StructValue(labels)),
            },
        );
        fields.insert("SERVICE_ACCOUNT".to_string(), string(&self.service_account));
        fields.insert("WORKLOAD_NAME".to_string(), string(self.workload_name()));
        Node {
            id: self.node_id(),
            cluster: self
                .labels
                .get("app")
                .cloned()
                .unwrap_or_else(|| self.pod.clone()),
            metadata: Some(Struct {
                fields: fields.into_iter().collect(),
            }),
            user_agent_name: "mesh-proxy".to_string(),
            ..Default::default()
        }
    }
}

/// Parses `app=reviews,version=v2` into labels.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("label {part:?} is not key=value"))?;
        if k.trim().is_empty() {
            return Err(format!("label {part:?} has an empty key"));
        }
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_and_metadata() {
        let info = NodeInfo {
            proxy_type: ProxyType::Sidecar,
            ip: "127.0.0.1".into(),
            pod: "reviews-v2".into(),
            workload_name: None,
            namespace: "default".into(),
            service_account: "bookinfo-reviews".into(),
            labels: parse_labels("app=reviews, version=v2").unwrap(),
        };
        let node = info.node();
        assert_eq!(
            node.id,
            "sidecar~127.0.0.1~reviews-v2.default~default.svc.cluster.local"
        );
        let md = node.metadata.unwrap();
        assert_eq!(md.fields["NAMESPACE"], string("default"));
        assert_eq!(md.fields["SERVICE_ACCOUNT"], string("bookinfo-reviews"));
        assert_eq!(md.fields["WORKLOAD_NAME"], string("reviews-v2"));
        let Some(Kind::StructValue(l)) = &md.fields["LABELS"].kind else {
            panic!("labels")
        };
        assert_eq!(l.fields["version"], string("v2"));
        assert!(parse_labels("novalue").is_err());
    }
}
