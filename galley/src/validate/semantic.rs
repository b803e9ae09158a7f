//! Semantic rules Istio's validating webhook (or the CRDs' CEL rules) enforce for kinds that have
//! no typed model here; they read the untyped `spec` (its structure is already checked by
//! [`super::schema`]).

use std::collections::BTreeSet;

use mesh_proto::config::{ConfigObject, Kind};
use serde_json::Value;

use super::error::{ErrorContext, ValidationError};

/// Every semantic problem of `obj` found by the rules of this file.
pub(crate) fn check_semantic(
    kind: Kind,
    obj: &ConfigObject,
    cx: &ErrorContext,
) -> Vec<ValidationError> {
    let null = Value::Null;
    let spec = obj.body.get("spec").unwrap_or(&null);
    match kind {
        Kind::VirtualService => virtual_service(spec, cx),
        Kind::ServiceEntry => service_entry(spec, cx),
        Kind::PeerAuthentication => peer_authentication(spec, cx),
        Kind::Sidecar => super::sidecar::sidecar(spec, cx),
        Kind::QuotaSpec => quota_spec(spec, cx),
        Kind::QuotaSpecBinding => quota_spec_binding(spec, cx),
        _ => Vec::new(),
    }
}

fn set(spec: &Value, field: &str) -> bool {
    spec.get(field).is_some_and(|v| match v {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
        _ => true,
    })
}

fn port_ok(n: i64) -> bool {
    (1..=65535).contains(&n)
}

fn virtual_service(spec: &Value, cx: &ErrorContext) -> Vec<ValidationError> {
    if ["http", "tcp", "tls"].iter().any(|f| set(spec, f)) {
        return Vec::new();
    }
    vec![cx.error(
        "spec",
        "http, tcp or tls must be provided in virtual service",
    )]
}

fn service_entry(spec: &Value, cx: &ErrorContext) -> Vec<ValidationError> {
    let mut errs = Vec::new();
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    let ports = spec.get("ports").and_then(Value::as_array);
    for (i, p) in ports.into_iter().flatten().enumerate() {
        let at = format!("spec.ports[{i}]");
        if let Some(n) = p.get("number").and_then(Value::as_i64) {
            if !port_ok(n) {
                errs.push(cx.error(
                    format!("{at}.number"),
                    format!("port {n} must be between 1-65535"),
                ));
            } else if !numbers.insert(n) {
                errs.push(cx.error(
                    format!("{at}.number"),
                    format!("port number {n} cannot be duplicated"),
                ));
            }
        }
        if let Some(n) = p.get("targetPort").and_then(Value::as_i64)
            && !port_ok(n)
        {
            errs.push(cx.error(
                format!("{at}.targetPort"),
                format!("port {n} must be between 1-65535"),
            ));
        }
        if let Some(name) = p.get("name").and_then(Value::as_str)
            && !names.insert(name)
        {
            errs.push(cx.error(
                format!("{at}.name"),
                format!("duplicate port name {name:?}"),
            ));
        }
    }
    let endpoints = spec
        .get("endpoints")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let resolution = spec
        .get("resolution")
        .and_then(Value::as_str)
        .unwrap_or("NONE");
    if endpoints > 0 && set(spec, "workloadSelector") {
        errs.push(cx.error(
            "spec.workloadSelector",
            "only one of workloadSelector or endpoints may be set",
        ));
    }
    if endpoints > 0 && resolution == "NONE" {
        errs.push(cx.error("spec.endpoints", "NONE mode cannot set endpoints"));
    }
    if endpoints > 1 && resolution == "DNS_ROUND_ROBIN" {
        errs.push(cx.error(
            "spec.endpoints",
            "DNS_ROUND_ROBIN mode cannot have multiple endpoints",
        ));
    }
    errs
}

fn peer_authentication(spec: &Value, cx: &ErrorContext) -> Vec<ValidationError> {
    let mut errs = Vec::new();
    let Some(levels) = spec.get("portLevelMtls").and_then(Value::as_object) else {
        return errs;
    };
    if !levels.is_empty() && !set(spec, "selector") {
        errs.push(cx.error("spec.portLevelMtls", "portLevelMtls requires selector"));
    }
    for key in levels.keys() {
        let at = format!("spec.portLevelMtls.{key}");
        match key.parse::<i64>() {
            Ok(n) if port_ok(n) => {}
            Ok(n) => errs.push(cx.error(at, format!("port {n} must be between 1-65535"))),
            Err(_) => errs.push(cx.error(at, format!("{key:?} is not a port number"))),
        }
    }
    errs
}

fn items<'a>(v: &'a Value, field: &str) -> &'a [Value] {
    v.get(field)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or_default()
}

/// Istio 1.4's `ValidateQuotaSpec`.
fn quota_spec(spec: &Value, cx: &ErrorContext) -> Vec<ValidationError> {
    let mut errs = Vec::new();
    let rules = items(spec, "rules");
    if rules.is_empty() {
        errs.push(cx.error("spec.rules", "at least one rule must be specified"));
    }
    for (i, rule) in rules.iter().enumerate() {
        for (j, m) in items(rule, "match").iter().enumerate() {
            let at = format!("spec.rules[{i}].match[{j}].clause");
            let clause = m.get("clause").and_then(Value::as_object);
            if clause.is_none_or(|c| c.is_empty()) {
                errs.push(cx.error(at.clone(), "at least one match clause must be specified"));
            }
            for (name, sm) in clause.into_iter().flatten() {
                if name.is_empty() {
                    errs.push(cx.error(at.clone(), "attribute name is required"));
                }
                let set: Vec<&str> = ["exact", "prefix", "regex"]
                    .into_iter()
                    .filter(|k| sm.get(*k).is_some_and(|v| !v.is_null()))
                    .collect();
                if set.len() > 1 {
                    errs.push(cx.error(
                        format!("{at}.{name}"),
                        "only one of exact, prefix, regex may be set",
                    ));
                }
                for k in set {
                    if text(sm, k).is_empty() {
                        errs.push(cx.error(
                            format!("{at}.{name}.{k}"),
                            format!("{k} match for attribute {name:?} cannot be empty"),
                        ));
                    }
                }
            }
        }
        let quotas = items(rule, "quotas");
        if quotas.is_empty() {
            errs.push(cx.error(
                format!("spec.rules[{i}].quotas"),
                "at least one quota must be specified",
            ));
        }
        for (j, q) in quotas.iter().enumerate() {
            let at = format!("spec.rules[{i}].quotas[{j}]");
            if text(q, "quota").is_empty() {
                errs.push(cx.error(format!("{at}.quota"), "quota name is required"));
            }
            let charge = match q.get("charge") {
                Some(Value::String(s)) => s.parse::<i64>().ok(),
                Some(v) => v.as_i64(),
                None => Some(0),
            };
            if charge.is_none_or(|c| c <= 0) {
                errs.push(cx.error(
                    format!("{at}.charge"),
                    "quota charge amount must be positive",
                ));
            }
        }
    }
    errs
}

/// Istio 1.4's `ValidateQuotaSpecBinding`.
fn quota_spec_binding(spec: &Value, cx: &ErrorContext) -> Vec<ValidationError> {
    let mut errs = Vec::new();
    let services = items(spec, "services");
    if services.is_empty() {
        errs.push(cx.error("spec.services", "must specify at least one service"));
    }
    for (i, svc) in services.iter().enumerate() {
        if text(svc, "name").is_empty() && text(svc, "service").is_empty() {
            errs.push(cx.error(format!("spec.services[{i}]"), "name or service is required"));
        }
    }
    let specs = items(spec, "quotaSpecs");
    if specs.is_empty() {
        errs.push(cx.error("spec.quotaSpecs", "must specify at least one quota spec"));
    }
    for (i, q) in specs.iter().enumerate() {
        if text(q, "name").is_empty() {
            errs.push(cx.error(
                format!("spec.quotaSpecs[{i}].name"),
                "quota spec name is required",
            ));
        }
    }
    errs
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(kind: Kind, spec: Value) -> Vec<String> {
        let obj: ConfigObject = serde_json::from_value(json!({
            "apiVersion": kind.api_version(), "kind": kind.info().kind,
            "metadata": {"name": "x"}, "spec": spec
        }))
        .unwrap();
        check_semantic(kind, &obj, &ErrorContext::default())
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    }

    #[test]
    fn virtual_service_needs_a_route_table() {
        assert_eq!(
            fields(Kind::VirtualService, json!({"hosts": ["a"]})),
            vec!["spec: http, tcp or tls must be provided in virtual service"]
        );
        assert!(fields(Kind::VirtualService, json!({"hosts": ["a"], "tcp": [{}]})).is_empty());
    }

    #[test]
    fn service_entry_ports_and_resolution() {
        let f = fields(
            Kind::ServiceEntry,
            json!({"hosts": ["e.com"], "ports": [
                {"name": "a", "number": 1}, {"name": "a", "number": 1},
                {"name": "b", "number": 99999, "targetPort": 0}]}),
        );
        assert_eq!(
            f,
            vec![
                "spec.ports[1].number: port number 1 cannot be duplicated",
                "spec.ports[1].name: duplicate port name \"a\"",
                "spec.ports[2].number: port 99999 must be between 1-65535",
                "spec.ports[2].targetPort: port 0 must be between 1-65535",
            ]
        );
        assert_eq!(
            fields(
                Kind::ServiceEntry,
                json!({"hosts": ["e.com"], "endpoints": [{"address": "1.2.3.4"}]})
            ),
            vec!["spec.endpoints: NONE mode cannot set endpoints"]
        );
        assert_eq!(
            fields(
                Kind::ServiceEntry,
                json!({"hosts": ["e.com"], "resolution": "DNS_ROUND_ROBIN",
                    "endpoints": [{"address": "a.com"}, {"address": "b.com"}]})
            )
            .len(),
            1
        );
        let f = fields(
            Kind::ServiceEntry,
            json!({"hosts": ["e.com"], "resolution": "STATIC", "workloadSelector": {"labels": {"a": "b"}},
                "endpoints": [{"address": "1.2.3.4"}]}),
        );
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(
            fields(
                Kind::ServiceEntry,
                json!({"hosts": ["e.com"], "resolution": "DNS",
                "ports": [{"name": "http", "number": 80, "targetPort": 8080}],
                "endpoints": [{"address": "a.com"}, {"address": "b.com"}]})
            )
            .is_empty()
        );
    }

    #[test]
    fn peer_authentication_port_levels() {
        let sel = json!({"matchLabels": {"app": "a"}});
        assert!(
            fields(
                Kind::PeerAuthentication,
                json!({"selector": sel, "portLevelMtls": {"8080": {"mode": "STRICT"}}})
            )
            .is_empty()
        );
        assert_eq!(
            fields(
                Kind::PeerAuthentication,
                json!({"portLevelMtls": {"80": {"mode": "STRICT"}}})
            ),
            vec!["spec.portLevelMtls: portLevelMtls requires selector"]
        );
        assert_eq!(
            fields(
                Kind::PeerAuthentication,
                json!({"selector": sel, "portLevelMtls": {"0": {}, "acd": {}, "70000": {}}})
            ),
            vec![
                "spec.portLevelMtls.0: port 0 must be between 1-65535",
                "spec.portLevelMtls.70000: port 70000 must be between 1-65535",
                "spec.portLevelMtls.acd: \"acd\" is not a port number",
            ]
        );
    }

    #[test]
    fn sidecar_must_configure_something() {
        assert_eq!(
            fields(Kind::Sidecar, json!({"workloadSelector": {}})).len(),
            1
        );
        assert!(fields(Kind::Sidecar, json!({"egress": [{"hosts": ["./*"]}]})).is_empty());
    }

    #[test]
    fn quota_specs_and_bindings() {
        let ok = json!({"rules": [{"match": [{"clause": {"api.operation": {"exact": "get"}}}],
            "quotas": [{"quota": "read", "charge": 1}]}]});
        assert!(fields(Kind::QuotaSpec, ok).is_empty());
        assert_eq!(
            fields(Kind::QuotaSpec, json!({})),
            vec!["spec.rules: at least one rule must be specified"]
        );
        let f = fields(
            Kind::QuotaSpec,
            json!({"rules": [{"match": [{"clause": {}}], "quotas": [{"quota": "", "charge": 0}]}]}),
        );
        assert_eq!(f.len(), 3, "{f:?}");
        assert!(
            fields(
                Kind::QuotaSpecBinding,
                json!({"services": [{"name": "a", "namespace": "b"}], "quotaSpecs": [{"name": "q"}]})
            )
            .is_empty()
        );
        assert_eq!(
            fields(Kind::QuotaSpecBinding, json!({})),
            vec![
                "spec.services: must specify at least one service",
                "spec.quotaSpecs: must specify at least one quota spec"
            ]
        );
    }
}
