//! How a [`ConfigObject`] travels over MCP.
//!
//! `Resource.metadata` carries `namespace/name`, the store revision as `version`, labels and
//! annotations. `Resource.body` is a `google.protobuf.Struct` (type URL
//! `type.googleapis.com/google.protobuf.Struct`) holding the object's body: every top-level field
//! but `apiVersion`, `kind` and `metadata` (so `{spec: ..}` for Istio kinds, `{subsets: ..}` for
//! Endpoints, `{spec, status}` for Pods). The kind is the collection's.
//!
//! [`sink`] is the client side of the stream (the MCP sink shared by Pilot and Mixer).

pub mod sink;

use prost::Message;
use prost_types::Any;

use crate::config::{ConfigObject, Kind, ObjectMeta};
use crate::istio::mcp::v1alpha1::{Metadata, Resource};
use crate::structs::{from_struct, to_struct};
use crate::type_url;

/// A resource could not be turned back into a config object.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown collection {0:?}")]
    UnknownCollection(String),
    #[error("resource has no metadata")]
    MissingMetadata,
    #[error("resource {name}: body type {type_url:?} is not {expected:?}")]
    BodyType {
        name: String,
        type_url: String,
        expected: &'static str,
    },
    #[error("resource {name}: body is not a valid Struct: {source}")]
    Body {
        name: String,
        #[source]
        source: prost::DecodeError,
    },
}

/// Encodes `obj` as an MCP resource.
pub fn to_resource(obj: &ConfigObject) -> Resource {
    let meta = &obj.metadata;
    Resource {
        metadata: Some(Metadata {
            name: obj.key(),
            create_time: None,
            version: meta.resource_version.clone().unwrap_or_default(),
            labels: meta.labels.clone().into_iter().collect(),
            annotations: meta.annotations.clone().into_iter().collect(),
        }),
        body: Some(Any {
            type_url: type_url::STRUCT.to_string(),
            value: to_struct(&obj.body).encode_to_vec(),
        }),
    }
}

/// Decodes a resource of `collection` back into a config object.
pub fn from_resource(collection: &str, res: &Resource) -> Result<ConfigObject, DecodeError> {
    let kind = Kind::from_collection(collection)
        .ok_or_else(|| DecodeError::UnknownCollection(collection.to_string()))?;
    let meta = res.metadata.as_ref().ok_or(DecodeError::MissingMetadata)?;
    let (namespace, name) = match meta.name.split_once('/') {
        Some((ns, n)) => (ns.to_string(), n.to_string()),
        None => (String::new(), meta.name.clone()),
    };
    let body = match &res.body {
        None => Default::default(),
        Some(any) => {
            if any.type_url != type_url::STRUCT {
                return Err(DecodeError::BodyType {
                    name: meta.name.clone(),
                    type_url: any.type_url.clone(),
                    expected: type_url::STRUCT,
                });
            }
            let s = prost_types::Struct::decode(any.value.as_slice()).map_err(|source| {
                DecodeError::Body {
                    name: meta.name.clone(),
                    source,
                }
            })?;
            from_struct(&s)
        }
    };
    Ok(ConfigObject {
        api_version: kind.api_version(),
        kind: kind.info().kind.to_string(),
        metadata: ObjectMeta {
            name,
            namespace,
            labels: meta.labels.clone().into_iter().collect(),
            annotations: meta.annotations.clone().into_iter().collect(),
            resource_version: (!meta.version.is_empty()).then(|| meta.version.clone()),
            creation_timestamp: None,
        },
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let obj: ConfigObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "reviews", "namespace": "default", "labels": {"app": "reviews"}, "resourceVersion": "7"},
            "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": 9080}]}]
        }))
        .unwrap();
        let res = to_resource(&obj);
        assert_eq!(res.metadata.as_ref().unwrap().name, "default/reviews");
        let back = from_resource("k8s/core/v1/endpoints", &res).unwrap();
        assert_eq!(back, obj);
        assert!(matches!(
            from_resource("nope", &res),
            Err(DecodeError::UnknownCollection(_))
        ));
    }
}
