//! Structural checks of Istio resources against the OpenAPI v3 schemas of Istio's CRDs
//! (`schemas/istio-crd-schemas.json`, made by `schemas/generate.py`): types, unknown fields,
//! required fields, enums, bounds, patterns and one-of groups. CEL rules are not evaluated;
//! the semantic rules in [`super::rules`] cover what matters of them.

use std::collections::HashMap;
use std::sync::LazyLock;

use parking_lot::Mutex;
use regex::Regex;
use serde_json::{Map, Value};

use super::error::{ErrorContext, ValidationError};

static SCHEMAS: LazyLock<Map<String, Value>> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../../schemas/istio-crd-schemas.json")).unwrap_or_else(|e| {
        tracing::error!(error = %e, "embedded CRD schemas do not parse; structural checks off");
        Map::new()
    })
});

static PATTERNS: LazyLock<Mutex<HashMap<String, Option<Regex>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Whether a schema is known for `api_version` + `kind`.
pub fn has_schema(api_version: &str, kind: &str) -> bool {
    SCHEMAS.contains_key(&format!("{api_version}/{kind}"))
}

/// Every structural problem of `body` (the object without apiVersion, kind and metadata), or
/// nothing when no schema is known for the type.
pub(crate) fn check_schema(
    api_version: &str,
    kind: &str,
    body: &Map<String, Value>,
    cx: &ErrorContext,
) -> Vec<ValidationError> {
    let Some(schema) = SCHEMAS.get(&format!("{api_version}/{kind}")) else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    validate(schema, &Value::Object(body.clone()), "", &mut problems);
    problems
        .into_iter()
        .map(|(field, message)| cx.error(field, message))
        .collect()
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => true,
    }
}

fn pattern_matches(pattern: &str, s: &str) -> bool {
    let mut cache = PATTERNS.lock();
    let re = cache
        .entry(pattern.to_string())
        .or_insert_with(|| Regex::new(pattern).ok());
    // A pattern this regex engine cannot compile is not held against the document.
    re.as_ref().is_none_or(|re| re.is_match(s))
}

/// The field names a one-of group is about (its branches' `required` lists).
fn group_fields(branches: &[Value]) -> Vec<String> {
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
    branches.iter().for_each(|b| collect(b, &mut out));
    out.sort();
    out.dedup();
    out
}

fn passes(schema: &Value, v: &Value, path: &str) -> bool {
    let mut errs = Vec::new();
    validate(schema, v, path, &mut errs);
    errs.is_empty()
}

/// Checks `v` against `schema`, pushing `(field path, reason)` for each problem.
fn validate(schema: &Value, v: &Value, path: &str, errs: &mut Vec<(String, String)>) {
    let Some(s) = schema.as_object() else {
        return;
    };
    let flag = |k: &str| s.get(k).and_then(Value::as_bool).unwrap_or(false);
    if v.is_null() {
        // The API server drops nulls of non-nullable fields before validating.
        return;
    }
    if flag("x-kubernetes-int-or-string") {
        if !(type_ok("integer", v) || v.is_string()) {
            errs.push((path.into(), "must be an integer or a string".into()));
        }
        return;
    }
    if let Some(ty) = s.get("type").and_then(Value::as_str)
        && !type_ok(ty, v)
    {
        errs.push((path.into(), format!("must be of type {ty}")));
        return;
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let names: Vec<String> = allowed.iter().map(ToString::to_string).collect();
        errs.push((
            path.into(),
            format!("{v} is not one of {}", names.join(", ")),
        ));
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = s.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            errs.push((path.into(), format!("{v} is less than the minimum {min}")));
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            errs.push((path.into(), format!("{v} is more than the maximum {max}")));
        }
    }
    let bound = |k: &str| s.get(k).and_then(Value::as_u64).map(|n| n as usize);
    if let Some(text) = v.as_str() {
        let len = text.chars().count();
        if let Some(min) = bound("minLength")
            && len < min
        {
            errs.push((
                path.into(),
                format!("must be at least {min} characters long"),
            ));
        }
        if let Some(max) = bound("maxLength")
            && len > max
        {
            errs.push((
                path.into(),
                format!("must be at most {max} characters long"),
            ));
        }
        if let Some(p) = s.get("pattern").and_then(Value::as_str)
            && !pattern_matches(p, text)
        {
            errs.push((path.into(), format!("{text:?} does not match {p:?}")));
        }
    }
    if let Some(items) = v.as_array() {
        if let Some(min) = bound("minItems")
            && items.len() < min
        {
            errs.push((path.into(), format!("must have at least {min} items")));
        }
        if let Some(max) = bound("maxItems")
            && items.len() > max
        {
            errs.push((path.into(), format!("must have at most {max} items")));
        }
        if let Some(item_schema) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                validate(item_schema, item, &format!("{path}[{i}]"), errs);
            }
        }
    }
    if let Some(obj) = v.as_object() {
        validate_object(s, obj, path, errs);
    }
    if let Some(branches) = s.get("oneOf").and_then(Value::as_array) {
        let matched = branches.iter().filter(|b| passes(b, v, path)).count();
        if matched != 1 {
            let fields = group_fields(branches);
            errs.push((
                path.into(),
                if matched == 0 {
                    format!("exactly one of {} must be set", fields.join(", "))
                } else {
                    format!("only one of {} may be set", fields.join(", "))
                },
            ));
        }
    }
    if let Some(branches) = s.get("anyOf").and_then(Value::as_array)
        && !branches.iter().any(|b| passes(b, v, path))
    {
        errs.push((
            path.into(),
            format!("one of {} must be set", group_fields(branches).join(", ")),
        ));
    }
    if let Some(branches) = s.get("allOf").and_then(Value::as_array) {
        for b in branches {
            validate(b, v, path, errs);
        }
    }
    if let Some(not) = s.get("not")
        && passes(not, v, path)
    {
        errs.push((path.into(), "is not allowed here".into()));
    }
}

fn validate_object(
    s: &Map<String, Value>,
    obj: &Map<String, Value>,
    path: &str,
    errs: &mut Vec<(String, String)>,
) {
    if let Some(req) = s.get("required").and_then(Value::as_array) {
        for key in req.iter().filter_map(Value::as_str) {
            if obj.get(key).is_none_or(Value::is_null) {
                errs.push((join(path, key), "is required".into()));
            }
        }
    }
    let bound = |k: &str| s.get(k).and_then(Value::as_u64).map(|n| n as usize);
    if let Some(min) = bound("minProperties")
        && obj.len() < min
    {
        errs.push((path.into(), format!("must have at least {min} entries")));
    }
    if let Some(max) = bound("maxProperties")
        && obj.len() > max
    {
        errs.push((path.into(), format!("must have at most {max} entries")));
    }
    let props = s.get("properties").and_then(Value::as_object);
    let additional = s.get("additionalProperties");
    let preserve = s
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    for (key, value) in obj {
        let at = join(path, key);
        if let Some(p) = props.and_then(|p| p.get(key)) {
            validate(p, value, &at, errs);
        } else if let Some(add @ Value::Object(_)) = additional {
            validate(add, value, &at, errs);
        } else if additional == Some(&Value::Bool(false)) || (props.is_some() && !preserve) {
            errs.push((at, "unknown field".into()));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(api_version: &str, kind: &str, body: Value) -> Vec<(String, String)> {
        let cx = ErrorContext::default();
        check_schema(api_version, kind, body.as_object().unwrap(), &cx)
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect()
    }

    #[test]
    fn schemas_are_embedded_for_the_istio_kinds() {
        assert!(has_schema("networking.istio.io/v1", "VirtualService"));
        assert!(has_schema(
            "security.istio.io/v1beta1",
            "PeerAuthentication"
        ));
        assert!(!has_schema("v1", "Service"));
    }

    #[test]
    fn unknown_fields_types_and_enums() {
        let p = problems(
            "networking.istio.io/v1",
            "VirtualService",
            json!({"spec": {"hosts": ["a"], "http": [{"websocketUpgrade": true, "route": [{"destination": {"host": "a"}, "weight": "x"}]}]}}),
        );
        assert_eq!(
            p.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(),
            vec![
                "spec.http[0].route[0].weight",
                "spec.http[0].websocketUpgrade"
            ],
            "{p:?}"
        );
        assert_eq!(p[1].1, "unknown field");
        let p = problems(
            "security.istio.io/v1",
            "PeerAuthentication",
            json!({"spec": {"mtls": {"mode": "BAD"}}}),
        );
        assert_eq!(p[0].0, "spec.mtls.mode");
        assert!(p[0].1.contains("is not one of"), "{p:?}");
    }

    #[test]
    fn required_bounds_patterns_and_one_of() {
        let p = problems(
            "networking.istio.io/v1",
            "ServiceEntry",
            json!({"spec": {"ports": [{"number": 80, "name": "http"}]}}),
        );
        assert_eq!(p[0].0, "spec.hosts", "{p:?}");
        assert_eq!(p[0].1, "is required");
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
        // integers and int-or-string
        let p = problems(
            "networking.istio.io/v1",
            "DestinationRule",
            json!({"spec": {"host": "a", "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 1.5}}}}}),
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            problems(
                "networking.istio.io/v1",
                "VirtualService",
                json!({"spec": {"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a"}}], "timeout": "5s"}]}}),
            )
            .is_empty()
        );
    }
}
