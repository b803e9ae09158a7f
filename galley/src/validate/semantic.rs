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
        Kind::Sidecar => sidecar(spec, cx),
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

fn sidecar(spec: &Value, cx: &ErrorContext) -> Vec<ValidationError> {
    let any = [
        "egress",
        "ingress",
        "outboundTrafficPolicy",
        "inboundConnectionPool",
    ]
    .iter()
    .any(|f| set(spec, f));
    if any {
        Vec::new()
    } else {
        vec![cx.error("spec", "sidecar: empty configuration provided")]
    }
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
}
