//! Who is asking: the proxy's identity, read from its Envoy `Node`.

use std::collections::BTreeMap;

use mesh_proto::envoy::envoy::config::core::v3::Node;
use mesh_proto::envoy::google::protobuf::{Struct, Value, value::Kind as ValueKind};
use serde::Serialize;

/// Sidecar or gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyType {
    Sidecar,
    Router,
}

/// The proxy's identity and placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyInfo {
    /// The node id as sent.
    pub id: String,
    pub proxy_type: ProxyType,
    pub ip: String,
    pub pod: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
    pub workload_name: Option<String>,
}

/// The node id or metadata cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyInfoError {
    #[error("request carries no node")]
    MissingNode,
    #[error("node id {0:?} is not `sidecar|router~<ip>~<pod>.<ns>~<ns>.svc.<domain>`")]
    BadId(String),
}

impl ProxyInfo {
    /// Reads the node id and its metadata (`NAMESPACE`, `LABELS`, `SERVICE_ACCOUNT`,
    /// `WORKLOAD_NAME`; the metadata namespace wins over the id's).
    pub fn from_node(node: &Node) -> Result<ProxyInfo, ProxyInfoError> {
        let mut info = ProxyInfo::from_id(&node.id)?;
        if let Some(meta) = &node.metadata {
            if let Some(ns) = string_field(meta, "NAMESPACE").filter(|s| !s.is_empty()) {
                info.namespace = ns;
            }
            if let Some(ValueKind::StructValue(labels)) =
                meta.fields.get("LABELS").and_then(|v| v.kind.as_ref())
            {
                info.labels = labels
                    .fields
                    .iter()
                    .filter_map(|(k, v)| value_string(v).map(|s| (k.clone(), s)))
                    .collect();
            }
            info.service_account = string_field(meta, "SERVICE_ACCOUNT").filter(|s| !s.is_empty());
            info.workload_name = string_field(meta, "WORKLOAD_NAME").filter(|s| !s.is_empty());
        }
        Ok(info)
    }

    /// Reads only the node id (no labels).
    pub fn from_id(id: &str) -> Result<ProxyInfo, ProxyInfoError> {
        let bad = || ProxyInfoError::BadId(id.to_string());
        let parts: Vec<&str> = id.split('~').collect();
        let [kind, ip, pod_ns, domain] = parts.as_slice() else {
            return Err(bad());
        };
        let proxy_type = match *kind {
            "sidecar" => ProxyType::Sidecar,
            "router" => ProxyType::Router,
            _ => return Err(bad()),
        };
        let namespace = domain.split('.').next().unwrap_or_default();
        if namespace.is_empty() || ip.is_empty() {
            return Err(bad());
        }
        let pod = pod_ns
            .strip_suffix(&format!(".{namespace}"))
            .unwrap_or(pod_ns);
        Ok(ProxyInfo {
            id: id.to_string(),
            proxy_type,
            ip: ip.to_string(),
            pod: pod.to_string(),
            namespace: namespace.to_string(),
            labels: BTreeMap::new(),
            service_account: None,
            workload_name: None,
        })
    }
}

fn string_field(s: &Struct, key: &str) -> Option<String> {
    s.fields.get(key).and_then(value_string)
}

fn value_string(v: &Value) -> Option<String> {
    match v.kind.as_ref()? {
        ValueKind::StringValue(s) => Some(s.clone()),
        ValueKind::NumberValue(n) => Some(n.to_string()),
        ValueKind::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn sv(s: &str) -> Value {
        Value {
            kind: Some(ValueKind::StringValue(s.into())),
        }
    }

    /// A node as the mesh-proxy sends it.
    pub(crate) fn node(kind: &str, ns: &str, pod: &str, labels: &[(&str, &str)]) -> Node {
        let labels = Struct {
            fields: labels.iter().map(|(k, v)| (k.to_string(), sv(v))).collect(),
        };
        let mut meta = Struct::default();
        meta.fields.insert("NAMESPACE".into(), sv(ns));
        meta.fields.insert(
            "LABELS".into(),
            Value {
                kind: Some(ValueKind::StructValue(labels)),
            },
        );
        meta.fields
            .insert("SERVICE_ACCOUNT".into(), sv(&format!("sa-{pod}")));
        Node {
            id: format!("{kind}~10.1.1.1~{pod}.{ns}~{ns}.svc.cluster.local"),
            metadata: Some(meta),
            ..Node::default()
        }
    }

    #[test]
    fn parses_id_and_metadata() {
        let info = ProxyInfo::from_node(&node(
            "sidecar",
            "default",
            "productpage-v1",
            &[("app", "productpage")],
        ))
        .unwrap();
        assert_eq!(info.proxy_type, ProxyType::Sidecar);
        assert_eq!(info.ip, "10.1.1.1");
        assert_eq!(info.pod, "productpage-v1");
        assert_eq!(info.namespace, "default");
        assert_eq!(
            info.labels.get("app").map(String::as_str),
            Some("productpage")
        );
        assert_eq!(info.service_account.as_deref(), Some("sa-productpage-v1"));
        let r = ProxyInfo::from_id(
            "router~127.0.0.1~ingress.istio-system~istio-system.svc.cluster.local",
        )
        .unwrap();
        assert_eq!(r.proxy_type, ProxyType::Router);
        assert_eq!(r.namespace, "istio-system");
        assert_eq!(r.pod, "ingress");
        assert!(ProxyInfo::from_id("sidecar~1.2.3.4").is_err());
        assert!(ProxyInfo::from_id("waypoint~1.2.3.4~a.b~b.svc.cluster.local").is_err());
    }
}
