//! Structural checks of Istio resources with the `jsonschema` crate, against the OpenAPI v3
//! schemas of the project's CustomResourceDefinitions (`charts/mesh/crds/*.yaml`, the files
//! Helm installs; embedded here at build time). One validator per (group, version, kind) is
//! compiled once, at start ([`init`]).
//!
//! The schemas are read as Kubernetes reads them: an object schema with `properties` is closed
//! (unknown fields are errors) unless it says `x-kubernetes-preserve-unknown-fields`; a `null`
//! value of a known field is dropped before validating (as the API server prunes it);
//! `x-kubernetes-int-or-string` means integer or string. The CEL rules
//! (`x-kubernetes-validations`) are evaluated by [`super::cel`]; `format` is not checked.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::LocationSegment;
use jsonschema::{Draft, Validator};
use serde_json::{Map, Value};

use super::cel::check_rules;
use super::error::{ErrorContext, ValidationError};
use crate::source::parse_text;

/// The CRD files of `charts/mesh/crds/`, one per API group.
const CRD_FILES: [(&str, &str); 3] = [
    (
        "charts/mesh/crds/networking.istio.io.yaml",
        include_str!("../../../charts/mesh/crds/networking.istio.io.yaml"),
    ),
    (
        "charts/mesh/crds/security.istio.io.yaml",
        include_str!("../../../charts/mesh/crds/security.istio.io.yaml"),
    ),
    (
        "charts/mesh/crds/config.istio.io.yaml",
        include_str!("../../../charts/mesh/crds/config.istio.io.yaml"),
    ),
];

/// A CRD version's schema, compiled.
struct Compiled {
    /// The schema as validated (closed objects), to name the fields of one-of groups.
    schema: Value,
    validator: Validator,
}

/// Every compiled schema, by `group/version/Kind`, and the problems met compiling them. The
/// versions of a CRD usually share one schema: it is compiled (and held) once.
struct Schemas {
    by_type: HashMap<String, Arc<Compiled>>,
    problems: Vec<String>,
}

static SCHEMAS: LazyLock<Schemas> = LazyLock::new(load);

/// A CRD file or schema that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("embedded CRD schemas: {}", .0.join("; "))]
pub struct SchemaError(pub Vec<String>);

/// Compiles every embedded schema (once; later calls are free) and returns how many there are.
/// An error lists every CRD that could not be read or compiled.
pub fn init() -> Result<usize, SchemaError> {
    let s = &*SCHEMAS;
    if s.problems.is_empty() {
        Ok(s.by_type.len())
    } else {
        Err(SchemaError(s.problems.clone()))
    }
}

/// The `group/version/Kind` keys of every compiled schema, sorted.
pub fn schema_types() -> Vec<String> {
    let mut v: Vec<String> = SCHEMAS.by_type.keys().cloned().collect();
    v.sort();
    v
}

/// Whether a schema is known for `api_version` + `kind`.
pub fn has_schema(api_version: &str, kind: &str) -> bool {
    SCHEMAS
        .by_type
        .contains_key(&format!("{api_version}/{kind}"))
}

fn load() -> Schemas {
    let started = Instant::now();
    let mut out = Schemas {
        by_type: HashMap::new(),
        problems: Vec::new(),
    };
    let mut compiled: Vec<Arc<Compiled>> = Vec::new();
    for (file, text) in CRD_FILES {
        for doc in parse_text(file, text) {
            let doc = match doc {
                Ok(d) => d,
                Err(e) => {
                    out.problems.push(e.to_string());
                    continue;
                }
            };
            if let Err(p) = load_crd(&doc.value, &mut out.by_type, &mut compiled) {
                out.problems.push(format!("{file}:{}: {p}", doc.line));
            }
        }
    }
    for p in &out.problems {
        tracing::error!(problem = %p, "CRD schema unusable; its kind is not checked structurally");
    }
    tracing::debug!(
        schemas = out.by_type.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "compiled CRD schemas"
    );
    out
}

fn load_crd(
    crd: &Value,
    into: &mut HashMap<String, Arc<Compiled>>,
    compiled: &mut Vec<Arc<Compiled>>,
) -> Result<(), String> {
    if crd.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
        return Err("not a CustomResourceDefinition".into());
    }
    let spec = crd.get("spec").ok_or("no spec")?;
    let group = spec
        .get("group")
        .and_then(Value::as_str)
        .ok_or("no spec.group")?;
    let kind = spec
        .pointer("/names/kind")
        .and_then(Value::as_str)
        .ok_or("no spec.names.kind")?;
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .ok_or("no spec.versions")?;
    for v in versions {
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .ok_or("version without name")?;
        let mut schema = v
            .pointer("/schema/openAPIV3Schema")
            .cloned()
            .ok_or_else(|| format!("{kind} {name}: no openAPIV3Schema"))?;
        close(&mut schema);
        let shared = match compiled.iter().find(|c| c.schema == schema) {
            Some(c) => c.clone(),
            None => {
                let validator = jsonschema::options()
                    .with_draft(Draft::Draft7)
                    .should_validate_formats(false)
                    .build(&schema)
                    .map_err(|e| format!("{kind} {name}: {e}"))?;
                let c = Arc::new(Compiled { schema, validator });
                compiled.push(c.clone());
                c
            }
        };
        into.insert(format!("{group}/{name}/{kind}"), shared);
    }
    Ok(())
}

/// Rewrites a Kubernetes structural schema into the JSON Schema that means the same: objects
/// with `properties` are closed unless they preserve unknown fields, int-or-string gets its
/// type, annotations the validator does not need are dropped.
fn close(schema: &mut Value) {
    let Value::Object(m) = schema else {
        return;
    };
    for k in ["description", "format"] {
        m.remove(k);
    }
    let preserve = m.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if m.contains_key("properties") && !m.contains_key("additionalProperties") && !preserve {
        m.insert("additionalProperties".into(), Value::Bool(false));
    }
    let int_or_string = m.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if int_or_string && !m.contains_key("type") {
        m.insert(
            "type".into(),
            Value::Array(vec!["integer".into(), "string".into()]),
        );
    }
    if let Some(Value::Object(props)) = m.get_mut("properties") {
        props.values_mut().for_each(close);
    }
    for k in ["items", "additionalProperties", "not"] {
        if let Some(s @ Value::Object(_)) = m.get_mut(k) {
            close(s);
        }
    }
    for k in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(branches)) = m.get_mut(k) {
            branches.iter_mut().for_each(close);
        }
    }
}

/// Drops `null` values of fields the schema knows (the API server prunes them), recursively.
/// Unknown fields stay, null or not, to be reported.
fn drop_nulls(schema: &Value, v: &mut Value) {
    match v {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let known = |k: &str| props.is_some_and(|p| p.contains_key(k)) || additional.is_some();
            map.retain(|k, val| !(val.is_null() && known(k)));
            for (k, val) in map.iter_mut() {
                if let Some(s) = props.and_then(|p| p.get(k)).or(additional) {
                    drop_nulls(s, val);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                items.iter_mut().for_each(|i| drop_nulls(s, i));
            }
        }
        _ => {}
    }
}

/// What the CRD schema of a type says about a document.
#[derive(Debug, Default)]
pub(crate) struct SchemaFindings {
    /// Structural problems (types, unknown fields, required, enums, bounds, one-of groups).
    pub structural: Vec<ValidationError>,
    /// Failed CEL rules (`x-kubernetes-validations`), with the CRD's message.
    pub rules: Vec<ValidationError>,
}

/// Every problem the CRD schema finds in `body` (the object without apiVersion, kind and
/// metadata), or nothing when no schema is known for the type.
pub(crate) fn check_schema(
    api_version: &str,
    kind: &str,
    body: &Map<String, Value>,
    cx: &ErrorContext,
) -> SchemaFindings {
    let Some(c) = SCHEMAS.by_type.get(&format!("{api_version}/{kind}")) else {
        return SchemaFindings::default();
    };
    let mut instance = Value::Object(body.clone());
    drop_nulls(&c.schema, &mut instance);
    let mut problems: Vec<(String, String)> = Vec::new();
    for e in c.validator.iter_errors(&instance) {
        let path = field_path(e.instance_path().segments());
        let node = c.schema.pointer(e.schema_path().as_str());
        problems.extend(describe(e.kind(), e.instance(), node, &path));
    }
    let mut rules = Vec::new();
    check_rules(&c.schema, &instance, "", &mut rules);
    let to_errors = |mut v: Vec<(String, String)>| -> Vec<ValidationError> {
        v.sort();
        v.dedup();
        v.into_iter()
            .map(|(field, message)| cx.error(field, message))
            .collect()
    };
    SchemaFindings {
        structural: to_errors(problems),
        rules: to_errors(rules),
    }
}

/// `spec.http[0].route[1].weight` from a JSON pointer's segments.
fn field_path<'a>(segments: impl Iterator<Item = LocationSegment<'a>>) -> String {
    let mut out = String::new();
    for s in segments {
        match s {
            LocationSegment::Index(i) => out.push_str(&format!("[{i}]")),
            LocationSegment::Property(p) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&p);
            }
        }
    }
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A value as it appears in a message, cut short.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        let cut: String = s.chars().take(77).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// The field names a one-of group is about (its branches' `required` lists).
fn group_fields(branches: Option<&Value>) -> String {
    fn collect(v: &Value, out: &mut Vec<String>) {
        if let Some(req) = v.get("required").and_then(Value::as_array) {
            out.extend(req.iter().filter_map(Value::as_str).map(str::to_string));
        }
        for k in ["not", "anyOf", "oneOf", "allOf"] {
            match v.get(k) {
                Some(Value::Array(a)) => a.iter().for_each(|x| collect(x, out)),
                Some(x @ Value::Object(_)) => collect(x, out),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    for b in branches.and_then(Value::as_array).into_iter().flatten() {
        collect(b, &mut out);
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        "the alternatives".into()
    } else {
        out.join(", ")
    }
}

/// `(field, message)` for one validator error; `node` is the schema keyword's value.
fn describe(
    kind: &ValidationErrorKind,
    instance: &Value,
    node: Option<&Value>,
    path: &str,
) -> Vec<(String, String)> {
    let at = |m: String| vec![(path.to_string(), m)];
    match kind {
        ValidationErrorKind::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|k| (join(path, k), "unknown field".to_string()))
            .collect(),
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_string);
            vec![(join(path, &name), "is required".to_string())]
        }
        ValidationErrorKind::Type { .. } => {
            let ty = match node {
                Some(Value::String(t)) => t.clone(),
                Some(Value::Array(ts)) => ts
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" or "),
                _ => "another type".into(),
            };
            at(format!("must be of type {ty}"))
        }
        ValidationErrorKind::Enum { options } => {
            let names: Vec<String> = options
                .as_array()
                .map(|a| a.iter().map(ToString::to_string).collect())
                .unwrap_or_default();
            at(format!(
                "{} is not one of {}",
                short(instance),
                names.join(", ")
            ))
        }
        ValidationErrorKind::Minimum { limit } => {
            at(format!("{instance} is less than the minimum {limit}"))
        }
        ValidationErrorKind::Maximum { limit } => {
            at(format!("{instance} is more than the maximum {limit}"))
        }
        ValidationErrorKind::ExclusiveMinimum { limit } => {
            at(format!("{instance} must be more than {limit}"))
        }
        ValidationErrorKind::ExclusiveMaximum { limit } => {
            at(format!("{instance} must be less than {limit}"))
        }
        ValidationErrorKind::MinLength { limit } => {
            at(format!("must be at least {limit} characters long"))
        }
        ValidationErrorKind::MaxLength { limit } => {
            at(format!("must be at most {limit} characters long"))
        }
        ValidationErrorKind::MinItems { limit } => at(format!("must have at least {limit} items")),
        ValidationErrorKind::MaxItems { limit } => at(format!("must have at most {limit} items")),
        ValidationErrorKind::MinProperties { limit } => {
            at(format!("must have at least {limit} entries"))
        }
        ValidationErrorKind::MaxProperties { limit } => {
            at(format!("must have at most {limit} entries"))
        }
        ValidationErrorKind::Pattern { pattern } => {
            at(format!("{} does not match {pattern:?}", short(instance)))
        }
        ValidationErrorKind::OneOfNotValid { .. } => {
            at(format!("exactly one of {} must be set", group_fields(node)))
        }
        ValidationErrorKind::OneOfMultipleValid { .. } => {
            at(format!("only one of {} may be set", group_fields(node)))
        }
        ValidationErrorKind::AnyOf { .. } => {
            at(format!("one of {} must be set", group_fields(node)))
        }
        ValidationErrorKind::Not { .. } => at("is not allowed here".into()),
        ValidationErrorKind::UniqueItems => at("items must be unique".into()),
        other => at(format!("does not satisfy {}", other.keyword())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(api_version: &str, kind: &str, body: Value) -> Vec<(String, String)> {
        let cx = ErrorContext::default();
        let f = check_schema(api_version, kind, body.as_object().unwrap(), &cx);
        f.structural
            .into_iter()
            .chain(f.rules)
            .map(|e| (e.field, e.message))
            .collect()
    }

    #[test]
    fn every_crd_compiles_for_the_istio_kinds() {
        assert_eq!(init(), Ok(schema_types().len()));
        for t in [
            "networking.istio.io/v1/VirtualService",
            "networking.istio.io/v1alpha3/EnvoyFilter",
            "security.istio.io/v1beta1/PeerAuthentication",
            "config.istio.io/v1alpha2/rule",
            "config.istio.io/v1alpha2/QuotaSpec",
            "config.istio.io/v1alpha2/QuotaSpecBinding",
        ] {
            assert!(schema_types().iter().any(|s| s == t), "{t} missing");
        }
        assert!(has_schema("networking.istio.io/v1", "VirtualService"));
        assert!(!has_schema("v1", "Service"));
        let mut unknown = Vec::new();
        for c in SCHEMAS.by_type.values() {
            super::super::cel::unknown_rules(&c.schema, &mut unknown);
        }
        assert!(unknown.is_empty(), "CEL rules not evaluated: {unknown:#?}");
    }

    #[test]
    fn cel_rules_report_the_crd_message() {
        let p = problems(
            "security.istio.io/v1",
            "AuthorizationPolicy",
            json!({"spec": {"rules": [{"from": [{"source": {"serviceAccounts": ["a/b"], "namespaces": ["a"]}}]}]}}),
        );
        assert_eq!(
            p,
            vec![(
                "spec.rules[0].from[0].source".to_string(),
                "Cannot set serviceAccounts with namespaces or principals".to_string()
            )]
        );
        let p = problems(
            "networking.istio.io/v1",
            "VirtualService",
            json!({"spec": {"hosts": ["a"], "http": [{"timeout": "0s", "route": [{"destination": {"host": "a"}}]}]}}),
        );
        assert_eq!(p[0].0, "spec.http[0].timeout");
    }

    #[test]
    fn unknown_fields_types_and_enums() {
        let p = problems(
            "networking.istio.io/v1",
            "VirtualService",
            json!({"spec": {"hosts": ["a"], "http": [{"websocketUpgrade": true, "route": [{"destination": {"host": "a"}, "weight": "x"}]}]}}),
        );
        assert_eq!(
            p,
            vec![
                (
                    "spec.http[0].route[0].weight".to_string(),
                    "must be of type integer".to_string()
                ),
                (
                    "spec.http[0].websocketUpgrade".to_string(),
                    "unknown field".to_string()
                ),
            ]
        );
        let p = problems(
            "security.istio.io/v1",
            "PeerAuthentication",
            json!({"spec": {"mtls": {"mode": "BAD"}}}),
        );
        assert_eq!(p[0].0, "spec.mtls.mode");
        assert!(p[0].1.contains("is not one of"), "{p:?}");
        // Unknown top-level and null unknown fields are reported; null known fields are not.
        let p = problems(
            "config.istio.io/v1alpha2",
            "QuotaSpec",
            json!({"spec": {"quota": null, "rules": null}}),
        );
        assert_eq!(p, vec![("spec.quota".into(), "unknown field".into())]);
        // preserve-unknown-fields stays open
        assert!(
            problems(
                "config.istio.io/v1alpha2",
                "handler",
                json!({"spec": {"compiledAdapter": "denier", "params": {"anything": [1, {"x": 2}]}}}),
            )
            .is_empty()
        );
    }

    #[test]
    fn required_bounds_patterns_and_one_of() {
        let p = problems(
            "networking.istio.io/v1",
            "ServiceEntry",
            json!({"spec": {"ports": [{"number": 80, "name": "http"}]}}),
        );
        assert_eq!(p[0], ("spec.hosts".to_string(), "is required".to_string()));
        let p = problems(
            "networking.istio.io/v1",
            "Gateway",
            json!({"spec": {"servers": [{"hosts": ["*"]}]}}),
        );
        assert_eq!(p[0].0, "spec.servers[0].port", "{p:?}");
        let p = problems(
            "security.istio.io/v1",
            "RequestAuthentication",
            json!({"spec": {"jwtRules": [{"issuer": "a", "fromHeaders": [{"name": ""}]}]}}),
        );
        assert!(
            p.iter()
                .any(|(f, _)| f == "spec.jwtRules[0].fromHeaders[0].name"),
            "{p:?}"
        );
        let p = problems(
            "networking.istio.io/v1",
            "DestinationRule",
            json!({"spec": {"host": "a", "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 1.5}}}}}),
        );
        assert_eq!(p.len(), 1, "{p:?}");
        let p = problems(
            "networking.istio.io/v1",
            "VirtualService",
            json!({"spec": {"hosts": ["a"], "http": [{"match": [{"uri": {"exact": "/a", "prefix": "/b"}}], "route": [{"destination": {"host": "a"}}]}]}}),
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "spec.http[0].match[0].uri");
        assert!(
            p[0].1.starts_with("only one of exact, prefix, regex"),
            "{p:?}"
        );
        assert!(
            problems(
                "networking.istio.io/v1",
                "VirtualService",
                json!({"spec": {"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a", "port": {"number": 80}}}], "timeout": "5s"}]}}),
            )
            .is_empty()
        );
    }

    #[test]
    fn field_paths_from_pointers() {
        let segs = vec![
            LocationSegment::Property("spec".into()),
            LocationSegment::Property("http".into()),
            LocationSegment::Index(0),
            LocationSegment::Property("route".into()),
            LocationSegment::Index(1),
            LocationSegment::Property("weight".into()),
        ];
        assert_eq!(field_path(segs.into_iter()), "spec.http[0].route[1].weight");
    }
}
