//! The objects analyzed: read leniently (an analyzer looks at what is there, valid or not) from
//! parsed documents or from galley's store.

use mesh_proto::config::{ConfigObject, Kind};
use serde_json::Value;

use crate::source::Document;

/// One object to analyze.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub kind: Kind,
    /// `default` filled in for namespaced kinds.
    pub namespace: String,
    pub name: String,
    /// Where it came from (empty when read from galley).
    pub file: String,
    pub line: usize,
    /// The whole object (`apiVersion`, `kind`, `metadata`, `spec`, ...).
    pub value: Value,
}

impl Object {
    /// An object of a kind the mesh knows, or `None`.
    pub fn from_value(file: &str, line: usize, value: Value) -> Option<Object> {
        let text = |v: &Value, path: &[&str]| {
            path.iter()
                .try_fold(v, |v, k| v.get(k))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let kind = Kind::from_type(&text(&value, &["apiVersion"]), &text(&value, &["kind"]))?;
        let name = text(&value, &["metadata", "name"]);
        let mut namespace = text(&value, &["metadata", "namespace"]);
        if !kind.info().namespaced {
            namespace.clear();
        } else if namespace.is_empty() {
            namespace = "default".into();
        }
        Some(Object {
            kind,
            namespace,
            name,
            file: file.to_string(),
            line,
            value,
        })
    }

    /// A stored object.
    pub fn from_config(obj: &ConfigObject) -> Option<Object> {
        let value = serde_json::to_value(obj).ok()?;
        Object::from_value("", 0, value)
    }

    /// `spec` (or `null`).
    pub fn spec(&self) -> &Value {
        self.value.get("spec").unwrap_or(&Value::Null)
    }

    /// `namespace/name`.
    pub fn full_name(&self) -> String {
        if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }
}

/// The objects of known kinds among `docs`.
pub fn objects_from_documents(docs: &[Document]) -> Vec<Object> {
    docs.iter()
        .filter_map(|d| Object::from_value(&d.file, d.line, d.value.clone()))
        .collect()
}

/// The strings of an array field (non-strings ignored).
pub(crate) fn strings<'a>(v: &'a Value, field: &str) -> Vec<&'a str> {
    v.get(field)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The items of an array field.
pub(crate) fn items<'a>(v: &'a Value, field: &str) -> &'a [Value] {
    v.get(field)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}
