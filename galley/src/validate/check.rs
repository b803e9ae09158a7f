//! Checking documents: envelope (apiVersion, kind, metadata), then the kind's own rules.

use mesh_proto::config::{ConfigObject, Kind, ModelError, ObjectMeta};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::{ErrorContext, ValidationError};
use super::names::{dns1123_label_problem, dns1123_subdomain_problem, path_segment_problem};
use super::rules::check_body;
use super::schema::check_schema;
use super::semantic::check_semantic;
use crate::source::{Document, parse_text};

/// A document that passed validation, normalized (namespace filled in).
#[derive(Debug, Clone, PartialEq)]
pub struct ValidObject {
    pub kind: Kind,
    pub object: ConfigObject,
    pub file: String,
    pub line: usize,
}

/// A document of a kind the mesh does not know: not an error, but noted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub file: String,
    pub line: usize,
    pub kind: String,
    pub reason: String,
}

/// What checking one document found.
#[derive(Debug, Clone, PartialEq)]
pub enum Checked {
    Valid(ValidObject),
    Skipped(Skipped),
    Invalid(Vec<ValidationError>),
}

/// What checking a whole text (one or many documents) found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub objects: Vec<ValidObject>,
    pub skipped: Vec<Skipped>,
    pub errors: Vec<ValidationError>,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Parses and checks every document of `text` (named `file` in errors), reporting every
/// problem found in one pass.
pub fn check_text(file: &str, text: &str) -> Report {
    let mut report = Report::default();
    for doc in parse_text(file, text) {
        match doc {
            Err(e) => report.errors.push(ValidationError {
                file: e.file,
                line: e.line,
                kind: String::new(),
                namespace: String::new(),
                name: String::new(),
                field: String::new(),
                message: e.message,
            }),
            Ok(doc) => match check_document(&doc) {
                Checked::Valid(v) => report.objects.push(v),
                Checked::Skipped(s) => report.skipped.push(s),
                Checked::Invalid(errs) => report.errors.extend(errs),
            },
        }
    }
    report
}

/// Checks one parsed document.
pub fn check_document(doc: &Document) -> Checked {
    let mut cx = ErrorContext {
        file: doc.file.clone(),
        line: doc.line,
        ..ErrorContext::default()
    };
    let Some(map) = doc.value.as_object() else {
        return Checked::Invalid(vec![cx.error("", "document is not a mapping")]);
    };
    let str_field = |f: &str| map.get(f).and_then(Value::as_str).unwrap_or_default();
    let (api_version, kind_name) = (str_field("apiVersion"), str_field("kind"));
    cx.kind = kind_name.to_string();
    cx.name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut errs = Vec::new();
    if api_version.is_empty() {
        errs.push(cx.error("apiVersion", "apiVersion is required"));
    }
    if kind_name.is_empty() {
        errs.push(cx.error("kind", "kind is required"));
    }
    if !errs.is_empty() {
        return Checked::Invalid(errs);
    }
    let Some(kind) = Kind::from_type(api_version, kind_name) else {
        return Checked::Skipped(Skipped {
            file: doc.file.clone(),
            line: doc.line,
            kind: kind_name.to_string(),
            reason: format!("unknown kind {kind_name} of apiVersion {api_version}"),
        });
    };
    let mut obj = match object_of(api_version, kind_name, map) {
        Ok(o) => o,
        Err(e) => return Checked::Invalid(vec![cx.error(e.field, e.message)]),
    };
    normalize_namespace(kind, &mut obj);
    cx.namespace = obj.metadata.namespace.clone();
    // Kubernetes objects need DNS-1123 names; Istio resources are also read from files where
    // Istio accepts any path-segment name (e.g. `BACKEND`).
    let name_problem = if kind.info().group.ends_with("istio.io") {
        path_segment_problem(&obj.metadata.name)
    } else {
        dns1123_subdomain_problem(&obj.metadata.name)
    };
    match name_problem {
        Some(_) if obj.metadata.name.is_empty() => {
            errs.push(cx.error("metadata.name", "metadata.name is required"));
        }
        Some(p) => errs.push(cx.error("metadata.name", p)),
        None => {}
    }
    if kind.info().namespaced
        && let Some(p) = dns1123_label_problem(&obj.metadata.namespace)
    {
        errs.push(cx.error("metadata.namespace", p));
    }
    let findings = check_schema(api_version, kind_name, &obj.body, &cx);
    let structural = findings.structural;
    // The typed model and the semantic rules may trip over the same fields: keep the
    // structural error for them.
    let nested = |inner: &str, outer: &str| {
        inner == outer
            || outer.is_empty()
            || inner.starts_with(&format!("{outer}."))
            || inner.starts_with(&format!("{outer}["))
    };
    let covered = |field: &str| {
        structural
            .iter()
            .any(|s| nested(field, &s.field) || nested(&s.field, field))
    };
    let body_errs: Vec<ValidationError> = check_body(kind, &obj, &cx)
        .into_iter()
        .chain(check_semantic(kind, &obj, &cx))
        .filter(|e| !covered(&e.field))
        .collect();
    // A CEL rule and a Rust rule may say the same thing: keep the Rust one (its field path is
    // the more precise), and keep nothing under a structural error.
    let rule_errs: Vec<ValidationError> = findings
        .rules
        .into_iter()
        .filter(|r| !covered(&r.field) && !body_errs.iter().any(|b| b.message == r.message))
        .collect();
    errs.extend(structural);
    errs.extend(rule_errs);
    errs.extend(body_errs);
    if errs.is_empty() {
        Checked::Valid(ValidObject {
            kind,
            object: obj,
            file: doc.file.clone(),
            line: doc.line,
        })
    } else {
        Checked::Invalid(errs)
    }
}

/// The document as a [`ConfigObject`], read from the parsed value in place (no copy of the
/// whole document, no buffering of the flattened body): only `metadata` goes through serde,
/// with the field path of any error.
fn object_of(
    api_version: &str,
    kind: &str,
    map: &Map<String, Value>,
) -> Result<ConfigObject, ModelError> {
    let metadata = match map.get("metadata") {
        None => ObjectMeta::default(),
        Some(m) => serde_path_to_error::deserialize::<_, ObjectMeta>(m).map_err(|e| {
            let inner = e.path().to_string();
            ModelError {
                field: if inner == "." {
                    "metadata".to_string()
                } else {
                    format!("metadata.{inner}")
                },
                message: e.into_inner().to_string(),
            }
        })?,
    };
    let body = map
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(ConfigObject {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        metadata,
        body,
    })
}

/// Namespaced objects without a namespace get `default`; cluster-scoped objects have none.
pub fn normalize_namespace(kind: Kind, obj: &mut ConfigObject) {
    if !kind.info().namespaced {
        obj.metadata.namespace.clear();
    } else if obj.metadata.namespace.is_empty() {
        obj.metadata.namespace = "default".to_string();
    }
}
