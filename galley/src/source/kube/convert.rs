//! A Kubernetes object through galley's validation: the same `check_document` as files, the
//! apply API and the webhook, with the object (not a file:line) as the origin, so errors read
//! `Kind namespace/name: field: reason`.

use kube::api::DynamicObject;
use mesh_proto::config::ConfigObject;
use serde_json::Value;

use super::kinds::WatchedKind;
use crate::source::Document;
use crate::validate::{Checked, ValidationError, check_document};

/// Annotation on every object the Kubernetes source stored, so a full list can replace
/// exactly what came from Kubernetes (also across restarts with a kept store).
pub const ORIGIN_ANNOTATION: &str = "galley.mesh/origin";
/// Its value.
pub const ORIGIN_KUBERNETES: &str = "kubernetes";

/// Whether `obj` (as stored) came from the Kubernetes source.
pub fn is_from_kubernetes(obj: &ConfigObject) -> bool {
    obj.metadata
        .annotations
        .get(ORIGIN_ANNOTATION)
        .is_some_and(|v| v == ORIGIN_KUBERNETES)
}

/// `namespace/name` (or `name`) of an object from the API server.
pub fn object_key(obj: &DynamicObject) -> String {
    let name = obj.metadata.name.clone().unwrap_or_default();
    match obj.metadata.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name,
    }
}

/// The verdict on one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Judged {
    /// Valid: the object to store (Istio kinds without `status`, with the origin annotation).
    Valid(Box<ConfigObject>),
    Invalid(Vec<ValidationError>),
}

/// Validates `obj`, a `wk` object from the API server.
pub fn judge(wk: &WatchedKind, obj: &DynamicObject) -> Judged {
    let mut value = match serde_json::to_value(obj) {
        Ok(v) => v,
        Err(e) => {
            return Judged::Invalid(vec![ValidationError {
                file: String::new(),
                line: 0,
                kind: wk.name().to_string(),
                namespace: obj.metadata.namespace.clone().unwrap_or_default(),
                name: obj.metadata.name.clone().unwrap_or_default(),
                field: String::new(),
                message: format!("cannot encode the object: {e}"),
            }]);
        }
    };
    if let Some(map) = value.as_object_mut() {
        // List items often lack apiVersion/kind: they are the watched resource's.
        for (field, v) in [
            ("apiVersion", &wk.resource.api_version),
            ("kind", &wk.resource.kind),
        ] {
            if map
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                map.insert(field.to_string(), Value::String(v.clone()));
            }
        }
    }
    let doc = Document {
        file: String::new(),
        line: 0,
        value,
    };
    match check_document(&doc) {
        Checked::Valid(v) => {
            let mut object = v.object;
            if wk.writes_status {
                // The status is what galley (or others) wrote about the object, not config.
                object.body.remove("status");
            }
            object
                .metadata
                .annotations
                .insert(ORIGIN_ANNOTATION.to_string(), ORIGIN_KUBERNETES.to_string());
            Judged::Valid(Box::new(object))
        }
        Checked::Invalid(errors) => Judged::Invalid(errors),
        Checked::Skipped(s) => Judged::Invalid(vec![ValidationError {
            file: String::new(),
            line: 0,
            kind: s.kind,
            namespace: obj.metadata.namespace.clone().unwrap_or_default(),
            name: obj.metadata.name.clone().unwrap_or_default(),
            field: "apiVersion".to_string(),
            message: s.reason,
        }]),
    }
}

/// When the object last changed: the newest `managedFields[].time`, else its creation time.
pub fn changed_at(obj: &DynamicObject) -> Option<k8s_openapi::jiff::Timestamp> {
    let managed = obj
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.time.as_ref().map(|t| t.0))
        .max();
    managed.or_else(|| obj.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::source::kube::kinds::watched_kinds;
    use mesh_proto::config::Kind;

    fn vs_kind() -> WatchedKind {
        watched_kinds()
            .into_iter()
            .find(|w| w.kind == Kind::VirtualService)
            .unwrap()
    }

    fn object(v: serde_json::Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn valid_object_is_stored_without_status_and_with_origin() {
        let obj = object(serde_json::json!({
            "metadata": {"name": "reviews", "namespace": "prod", "resourceVersion": "7", "uid": "u",
                "managedFields": [{"manager": "kubectl", "operation": "Apply", "time": "2024-05-01T10:00:00Z"},
                                  {"manager": "x", "operation": "Update", "time": "2024-05-01T10:00:05Z"}]},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]},
            "status": {"validationMessages": []}
        }));
        let Judged::Valid(o) = judge(&vs_kind(), &obj) else {
            panic!("invalid")
        };
        assert_eq!(o.api_version, "networking.istio.io/v1");
        assert_eq!(o.kind, "VirtualService");
        assert_eq!(o.key(), "prod/reviews");
        assert!(!o.body.contains_key("status"));
        assert!(is_from_kubernetes(&o));
        assert_eq!(object_key(&obj), "prod/reviews");
        assert_eq!(
            changed_at(&obj).unwrap().to_string(),
            "2024-05-01T10:00:05Z"
        );
    }

    #[test]
    fn invalid_object_names_the_object_not_a_file() {
        let obj = object(serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "prod"},
            "spec": {"hosts": []}
        }));
        let Judged::Invalid(errs) = judge(&vs_kind(), &obj) else {
            panic!("valid")
        };
        assert_eq!(errs[0].field, "spec.hosts");
        assert!(
            errs[0]
                .to_string()
                .starts_with("VirtualService prod/reviews: spec.hosts: "),
            "{}",
            errs[0]
        );
    }
}
