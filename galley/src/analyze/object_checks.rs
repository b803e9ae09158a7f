//! Analyzers that look at one object at a time: DestinationRule TLS without CA certificates
//! (IST0128/IST0129), ServiceEntry without addresses for TCP ports (IST0134), EnvoyFilter
//! relative patches without a priority (IST0151), negative status conditions (IST0171).

use mesh_proto::config::Kind;
use serde_json::Value;

use super::checks::finding;
use super::finding::{Finding, msg};
use super::model::{Object, items, strings};

fn text<'v>(v: &'v Value, field: &str) -> &'v str {
    v.get(field).and_then(Value::as_str).unwrap_or_default()
}

/// Every finding of the single-object analyzers about `o`.
pub(crate) fn check_object(o: &Object, out: &mut Vec<Finding>) {
    match o.kind {
        Kind::DestinationRule => destination_rule_tls(o, out),
        Kind::ServiceEntry => service_entry_addresses(o, out),
        Kind::EnvoyFilter => envoy_filter_relative(o, out),
        _ => {}
    }
    negative_conditions(o, out);
}

/// Istio's CaCertificateAnalyzer: a `SIMPLE` or `MUTUAL` TLS setting (of the whole rule, or of
/// one port) with no `caCertificates` does not verify the server.
fn destination_rule_tls(dr: &Object, out: &mut Vec<Finding>) {
    let spec = dr.spec();
    let host = text(spec, "host");
    let unverified = |tls: &Value| {
        let mode = text(tls, "mode");
        let skip = tls.get("insecureSkipVerify").and_then(Value::as_bool) == Some(true);
        (matches!(mode, "SIMPLE" | "MUTUAL") && text(tls, "caCertificates").is_empty() && !skip)
            .then(|| mode.to_string())
    };
    let Some(policy) = spec.get("trafficPolicy") else {
        return;
    };
    if let Some(mode) = policy.get("tls").and_then(unverified) {
        out.push(finding(
            dr,
            "spec.trafficPolicy.tls".into(),
            msg::no_server_cert_verification(&dr.name, &dr.namespace, &mode, host, None),
        ));
    }
    for (i, p) in items(policy, "portLevelSettings").iter().enumerate() {
        if let Some(mode) = p.get("tls").and_then(unverified) {
            let port = p
                .pointer("/port/number")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            out.push(finding(
                dr,
                format!("spec.trafficPolicy.portLevelSettings[{i}].tls"),
                msg::no_server_cert_verification(&dr.name, &dr.namespace, &mode, host, Some(port)),
            ));
        }
    }
}

/// Istio's ProtocolAddressesAnalyzer: a ServiceEntry without `addresses` that has a TCP port (or
/// one with no protocol) cannot be told apart from others on that port.
fn service_entry_addresses(se: &Object, out: &mut Vec<Finding>) {
    let spec = se.spec();
    if !strings(spec, "addresses").is_empty() {
        return;
    }
    let tcp = items(spec, "ports").iter().any(|p| {
        let proto = text(p, "protocol");
        proto.is_empty() || proto.eq_ignore_ascii_case("TCP")
    });
    if tcp {
        out.push(finding(
            se,
            "spec.addresses".into(),
            msg::service_entry_addresses_required(),
        ));
    }
}

/// Istio's EnvoyFilterAnalyzer (relative operations): without a `priority`, an `INSERT_BEFORE`
/// or `INSERT_AFTER` patch, or a `REPLACE` or `REMOVE` of a filter, depends on the order filters
/// are applied in.
fn envoy_filter_relative(ef: &Object, out: &mut Vec<Finding>) {
    let spec = ef.spec();
    if spec.get("priority").and_then(Value::as_i64).unwrap_or(0) != 0 {
        return;
    }
    let relative = items(spec, "configPatches").iter().any(|p| {
        let op = p.pointer("/patch/operation").and_then(Value::as_str);
        let filter = matches!(text(p, "applyTo"), "HTTP_FILTER" | "NETWORK_FILTER");
        match op {
            Some("INSERT_BEFORE" | "INSERT_AFTER") => true,
            Some("REPLACE" | "REMOVE") => filter,
            _ => false,
        }
    });
    if relative {
        out.push(finding(
            ef,
            "spec.configPatches".into(),
            msg::envoy_filter_relative_operation(),
        ));
    }
}

/// Istio's ConditionAnalyzer: a status condition that is `False`, or `PartiallyInvalid`.
fn negative_conditions(o: &Object, out: &mut Vec<Finding>) {
    let Some(status) = o.value.get("status") else {
        return;
    };
    for (i, c) in items(status, "conditions").iter().enumerate() {
        let reason = text(c, "reason");
        if text(c, "status") == "False" || reason == "PartiallyInvalid" {
            out.push(finding(
                o,
                format!("status.conditions[{i}]"),
                msg::negative_condition(text(c, "type"), reason, text(c, "message")),
            ));
        }
    }
}
