//! The typed configuration model shared by every service.
//!
//! ```text
//!  YAML/JSON object ──► ConfigObject { apiVersion, kind, metadata, body: {spec, status, subsets, ..} }
//!                          │ Kind::from_type(apiVersion, kind)  → collection name for MCP
//!                          └ typed view: ConfigObject::spec::<VirtualService>() / ::body_as::<Endpoints>()
//! ```

mod core;
mod kind;
mod legacy;
mod mesh_config;
mod networking;
mod policy;
mod security;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

pub use self::core::*;
pub use self::kind::{Kind, KindInfo};
pub use self::legacy::LegacyKind;
pub use self::mesh_config::*;
pub use self::networking::*;
pub use self::policy::*;
pub use self::security::*;

/// Kubernetes-style object metadata (the fields the mesh uses; others are ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}

/// One configuration object of any kind: the envelope plus its untyped body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigObject {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Everything but apiVersion, kind and metadata: `spec`, `status`, `subsets`, ...
    #[serde(flatten)]
    pub body: Map<String, Value>,
}

/// A body field could not be read as the typed model.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ModelError {
    /// Field path, e.g. `spec.http[0].route[1].weight`.
    pub field: String,
    pub message: String,
}

impl ConfigObject {
    /// The object's kind, if the mesh knows it.
    pub fn kind_info(&self) -> Option<Kind> {
        Kind::from_type(&self.api_version, &self.kind)
    }

    /// `namespace/name`, or `name` for cluster-scoped objects.
    pub fn key(&self) -> String {
        if self.metadata.namespace.is_empty() {
            self.metadata.name.clone()
        } else {
            format!("{}/{}", self.metadata.namespace, self.metadata.name)
        }
    }

    /// The `spec` read as `T` (an empty spec when absent).
    pub fn spec<T: DeserializeOwned>(&self) -> Result<T, ModelError> {
        let spec = self
            .body
            .get("spec")
            .cloned()
            .unwrap_or(Value::Object(Map::new()));
        from_value_at("spec", spec)
    }

    /// The whole body read as `T` (for kinds like Endpoints and Pod whose data is not all in spec).
    pub fn body_as<T: DeserializeOwned>(&self) -> Result<T, ModelError> {
        from_value_at("", Value::Object(self.body.clone()))
    }
}

/// Deserializes `value` as `T`, naming the failing field path under `prefix`.
pub fn from_value_at<T: DeserializeOwned>(prefix: &str, value: Value) -> Result<T, ModelError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let field = match (prefix.is_empty(), inner == ".") {
            (true, _) => inner,
            (false, true) => prefix.to_string(),
            (false, false) => format!("{prefix}.{inner}"),
        };
        ModelError {
            field,
            message: e.into_inner().to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_errors_name_the_field() {
        let obj: ConfigObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}, "weight": "x"}]}]}
        }))
        .unwrap();
        assert_eq!(obj.kind_info(), Some(Kind::VirtualService));
        assert_eq!(obj.key(), "default/reviews");
        let err = obj.spec::<VirtualService>().unwrap_err();
        assert_eq!(err.field, "spec.http[0].route[0].weight");
    }
}
