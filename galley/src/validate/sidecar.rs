//! Istio's `ValidateSidecar` (istio/istio `pkg/config/validation/validation.go` and
//! `pkg/config/validation/agent/validation.go`, the 1.2x/master line the conformance corpus
//! `istio/` was taken from): workload selector, ingress and egress listeners, outbound traffic
//! policy. Messages reuse Istio's wording; the field path says where.
//!
//! Differences from Istio 1.4 (deliberate, the current line is the reference): an ingress
//! listener may leave `defaultEndpoint` unset, `defaultEndpoint` may also name `0.0.0.0`, `::1`
//! and `::`, and a Sidecar needs egress only when it sets nothing else. Istio's warnings
//! (duplicated egress hosts, selector without labels) are not errors and are not reported.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde_json::Value;

use super::error::{ErrorContext, ValidationError};

const UNIX_PREFIX: &str = "unix://";

/// Every problem Istio's `ValidateSidecar` finds in `spec`.
pub(crate) fn sidecar(spec: &Value, cx: &ErrorContext) -> Vec<ValidationError> {
    let mut errs = Vec::new();
    // Istio returns the selector's errors alone.
    workload_selector(spec.get("workloadSelector"), cx, &mut errs);
    if !errs.is_empty() {
        return errs;
    }
    let present = |f: &str| spec.get(f).is_some_and(|v| !v.is_null());
    if list(spec, "egress").is_empty()
        && list(spec, "ingress").is_empty()
        && !present("outboundTrafficPolicy")
        && !present("inboundConnectionPool")
    {
        errs.push(cx.error("spec", "sidecar: empty configuration provided"));
        return errs;
    }
    let mut e = |field: String, msg: String| errs.push(cx.error(field, msg));
    ingress(spec, &mut e);
    connection_pool(
        spec.get("inboundConnectionPool"),
        "spec.inboundConnectionPool",
        &mut e,
    );
    egress(spec, &mut e);
    outbound_traffic_policy(spec.get("outboundTrafficPolicy"), &mut e);
    errs
}

fn list<'a>(v: &'a Value, field: &str) -> &'a [Value] {
    v.get(field)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or_default()
}

/// Istio's `ValidateAlphaWorkloadSelector`: no empty key, no `*` in keys or values.
fn workload_selector(sel: Option<&Value>, cx: &ErrorContext, errs: &mut Vec<ValidationError>) {
    let labels = sel.and_then(|s| s.get("labels")).and_then(Value::as_object);
    for (k, v) in labels.into_iter().flatten() {
        let v = v.as_str().unwrap_or_default();
        let at = format!("spec.workloadSelector.labels.{k}");
        if k.is_empty() {
            errs.push(cx.error(
                at.clone(),
                format!("empty key is not supported in selector: \"{k}={v}\""),
            ));
        }
        if k.contains('*') || v.contains('*') {
            errs.push(cx.error(
                at,
                format!("wildcard is not supported in selector: \"{k}={v}\""),
            ));
        }
    }
}

fn ingress(spec: &Value, e: &mut impl FnMut(String, String)) {
    let mut ports = BTreeSet::new();
    for (i, l) in list(spec, "ingress").iter().enumerate() {
        let at = format!("spec.ingress[{i}]");
        if l.is_null() {
            e(at, "sidecar: ingress may not be null".into());
            continue;
        }
        let Some(port) = l.get("port").filter(|p| !p.is_null()) else {
            e(
                format!("{at}.port"),
                "sidecar: port is required for ingress listeners".into(),
            );
            continue;
        };
        target_port(port, &at, e);
        let number = port.get("number").and_then(Value::as_i64).unwrap_or(0);
        port_name_and_protocol(port, &at, e);
        if let Some(p) = port_problem(number) {
            e(format!("{at}.port.number"), p);
        }
        let bind = text(l, "bind");
        if !bind.is_empty()
            && let Some(p) = ip_problem(bind)
        {
            e(format!("{at}.bind"), p);
        }
        if !ports.insert(number) {
            e(
                format!("{at}.port.number"),
                "sidecar: ports on IP bound listeners must be unique".into(),
            );
        }
        let endpoint = text(l, "defaultEndpoint");
        if !endpoint.is_empty() {
            for p in default_endpoint_problems(endpoint) {
                e(format!("{at}.defaultEndpoint"), p);
            }
        }
        capture_mode(l, &at, e);
        if let Some(tls) = l.get("tls").filter(|t| !t.is_null()) {
            ingress_tls(tls, port, &at, e);
        }
        connection_pool(l.get("connectionPool"), &format!("{at}.connectionPool"), e);
    }
}

/// Istio's `validateConnectionPool` (the durations are the CRD schema's CEL rules): at least
/// one of `http`/`tcp`, no negative limits, no `useClientProtocol` with `UPGRADE`.
fn connection_pool(pool: Option<&Value>, at: &str, e: &mut impl FnMut(String, String)) {
    let Some(pool) = pool.filter(|p| !p.is_null()) else {
        return;
    };
    let http = pool.get("http").filter(|h| !h.is_null());
    let tcp = pool.get("tcp").filter(|t| !t.is_null());
    if http.is_none() && tcp.is_none() {
        e(
            at.into(),
            "connection pool must have at least one field".into(),
        );
        return;
    }
    let mut negative = |v: &Value, group: &str, field: &str, what: &str| {
        if v.get(field).and_then(Value::as_i64).is_some_and(|n| n < 0) {
            e(
                format!("{at}.{group}.{field}"),
                format!("{what} must be non-negative"),
            );
        }
    };
    if let Some(h) = http {
        negative(
            h,
            "http",
            "http1MaxPendingRequests",
            "http1 max pending requests",
        );
        negative(h, "http", "http2MaxRequests", "http2 max requests");
        negative(
            h,
            "http",
            "maxRequestsPerConnection",
            "max requests per connection",
        );
        negative(h, "http", "maxRetries", "max retries");
        negative(h, "http", "maxConcurrentStreams", "max concurrent streams");
    }
    if let Some(t) = tcp {
        negative(t, "tcp", "maxConnections", "max connections");
    }
    if let Some(h) = http
        && text(h, "h2UpgradePolicy") == "UPGRADE"
        && h.get("useClientProtocol").and_then(Value::as_bool) == Some(true)
    {
        e(
            format!("{at}.http.useClientProtocol"),
            "use client protocol must not be true when H2UpgradePolicy is UPGRADE".into(),
        );
    }
}

/// Istio's checks of `ingress[].tls` (not `validateTLSOptions`' cipher/version rules).
fn ingress_tls(tls: &Value, port: &Value, at: &str, e: &mut impl FnMut(String, String)) {
    let at = format!("{at}.tls");
    let non_empty = |f: &str| {
        tls.get(f)
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    if non_empty("subjectAltNames") {
        e(
            format!("{at}.subjectAltNames"),
            "sidecar: subjectAltNames is not supported in ingress tls".into(),
        );
    }
    if tls.get("httpsRedirect").and_then(Value::as_bool) == Some(true) {
        e(
            format!("{at}.httpsRedirect"),
            "sidecar: httpsRedirect is not supported".into(),
        );
    }
    if !text(tls, "credentialName").is_empty() {
        e(
            format!("{at}.credentialName"),
            "sidecar: credentialName is not currently supported".into(),
        );
    }
    if non_empty("credentialNames") {
        e(
            format!("{at}.credentialNames"),
            "sidecar: credentialNames is not currently supported".into(),
        );
    }
    if non_empty("tlsCertificates") {
        e(
            format!("{at}.tlsCertificates"),
            "sidecar: tls_certificates is not currently supported".into(),
        );
    }
    let mode = text(tls, "mode");
    if matches!(mode, "ISTIO_MUTUAL" | "AUTO_PASSTHROUGH") {
        e(
            format!("{at}.mode"),
            format!("configuration is invalid: cannot set mode to {mode} in sidecar ingress tls"),
        );
    }
    let protocol = text(port, "protocol").to_ascii_lowercase();
    if !matches!(protocol.as_str(), "https" | "tls") {
        e(
            at,
            "server cannot have TLS settings for non HTTPS/TLS ports".into(),
        );
    }
}

fn egress(spec: &Value, e: &mut impl FnMut(String, String)) {
    let listeners = list(spec, "egress");
    let mut ports = BTreeSet::new();
    let mut sockets = BTreeSet::new();
    let mut catch_all = false;
    for (i, l) in listeners.iter().enumerate() {
        let at = format!("spec.egress[{i}]");
        if l.is_null() {
            e(at, "egress listener may not be null".into());
            continue;
        }
        capture_mode(l, &at, e);
        match l.get("port").filter(|p| !p.is_null()) {
            None if catch_all => {
                e(
                    at,
                    "sidecar: egress can have only one listener with empty port".into(),
                );
                continue;
            }
            None if i + 1 == listeners.len() => catch_all = true,
            None => e(
                at.clone(),
                "sidecar: the egress listener with empty port should be the last listener in the list"
                    .into(),
            ),
            Some(port) => {
                target_port(port, &at, e);
                let bind = text(l, "bind");
                let number = port.get("number").and_then(Value::as_i64).unwrap_or(0);
                egress_port_bind_and_capture_mode(l, port, number, bind, &at, e);
                if number == 0 {
                    if !sockets.insert(bind) {
                        e(
                            format!("{at}.bind"),
                            "sidecar: unix domain socket values for listeners must be unique"
                                .into(),
                        );
                    }
                } else if !ports.insert(number) {
                    e(
                        format!("{at}.port.number"),
                        "sidecar: ports on IP bound listeners must be unique".into(),
                    );
                }
            }
        }
        let hosts = list(l, "hosts");
        if hosts.is_empty() {
            e(
                format!("{at}.hosts"),
                "sidecar: egress listener must contain at least one host".into(),
            );
        }
        for (j, h) in hosts.iter().enumerate() {
            for p in namespace_slash_host_problems(h.as_str().unwrap_or_default()) {
                e(format!("{at}.hosts[{j}]"), p);
            }
        }
    }
}

/// Istio's `validateSidecarEgressPortBindAndCaptureMode`: port 0 means a unix domain socket
/// listener, whose bind must be `unix:///path` (or `unix://@abstract`) and whose capture mode
/// DEFAULT or NONE; any other port needs a valid number and an IP bind (or none).
fn egress_port_bind_and_capture_mode(
    l: &Value,
    port: &Value,
    number: i64,
    bind: &str,
    at: &str,
    e: &mut impl FnMut(String, String),
) {
    port_name_and_protocol(port, at, e);
    if number == 0 {
        match bind.strip_prefix(UNIX_PREFIX) {
            None => e(
                format!("{at}.bind"),
                "sidecar: ports with 0 value must have a unix domain socket bind address".into(),
            ),
            Some(path) => {
                if let Some(p) = unix_address_problem(path) {
                    e(format!("{at}.bind"), p);
                }
            }
        }
        if !matches!(text(l, "captureMode"), "" | "DEFAULT" | "NONE") {
            e(
                format!("{at}.captureMode"),
                "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners".into(),
            );
        }
    } else {
        if let Some(p) = port_problem(number) {
            e(format!("{at}.port.number"), p);
        }
        if !bind.is_empty()
            && let Some(p) = ip_problem(bind)
        {
            e(format!("{at}.bind"), p);
        }
    }
}

fn target_port(port: &Value, at: &str, e: &mut impl FnMut(String, String)) {
    if port.get("targetPort").and_then(Value::as_i64).unwrap_or(0) > 0 {
        e(
            format!("{at}.port.targetPort"),
            "targetPort has no impact on Sidecars".into(),
        );
    }
}

/// `captureMode` is one of the enum's names (the CRD schema says so too).
fn capture_mode(l: &Value, at: &str, e: &mut impl FnMut(String, String)) {
    if let Some(m) = l.get("captureMode").and_then(Value::as_str)
        && !matches!(m, "DEFAULT" | "IPTABLES" | "NONE")
    {
        e(
            format!("{at}.captureMode"),
            format!("unsupported captureMode {m:?}: must be DEFAULT, IPTABLES or NONE"),
        );
    }
}

/// Istio's `ValidatePortName` (when a name is set) and `ValidateProtocol` (empty means sniffing).
fn port_name_and_protocol(port: &Value, at: &str, e: &mut impl FnMut(String, String)) {
    let name = text(port, "name");
    if !name.is_empty() && !is_dns1123_label(name) {
        e(
            format!("{at}.port.name"),
            format!("invalid port name: {name}"),
        );
    }
    let protocol = text(port, "protocol");
    if !protocol.is_empty() && !known_protocol(protocol) {
        e(
            format!("{at}.port.protocol"),
            format!("unsupported protocol: {protocol}"),
        );
    }
}

/// Istio's `protocol.Parse` (case-insensitive) knows these.
fn known_protocol(p: &str) -> bool {
    const KNOWN: [&str; 12] = [
        "tcp",
        "udp",
        "grpc",
        "grpc-web",
        "http",
        "http_proxy",
        "http2",
        "https",
        "tls",
        "mongo",
        "redis",
        "mysql",
    ];
    KNOWN.iter().any(|k| k.eq_ignore_ascii_case(p))
}

/// Istio's `agent.ValidatePort`.
fn port_problem(n: i64) -> Option<String> {
    (!(1..=65535).contains(&n)).then(|| format!("port number {n} must be in the range 1..65535"))
}

/// Istio's `agent.ValidateIPAddress` (`netip.ParseAddr`: IPv4 or IPv6, IPv6 zones allowed).
fn ip_problem(addr: &str) -> Option<String> {
    let bare = addr.split_once('%').map_or(addr, |(ip, zone)| {
        if zone.is_empty() || !ip.contains(':') {
            addr
        } else {
            ip
        }
    });
    bare.parse::<IpAddr>()
        .is_err()
        .then(|| format!("{addr} is not a valid IP"))
}

/// Istio's `ValidateUnixAddress` (the part after `unix://`).
fn unix_address_problem(path: &str) -> Option<String> {
    if path.is_empty() {
        return Some("unix address must not be empty".into());
    }
    if path.starts_with('@') {
        return None;
    }
    (!path.starts_with('/') || path.ends_with('/'))
        .then(|| format!("{path} is not an absolute path to a file"))
}

/// Istio's ingress `defaultEndpoint` rule: `unix:///path`, or `host:port` (Go's
/// `net.SplitHostPort`) with host empty, `127.0.0.1`, `0.0.0.0`, `::1` or `::`.
fn default_endpoint_problems(endpoint: &str) -> Vec<String> {
    if let Some(path) = endpoint.strip_prefix(UNIX_PREFIX) {
        return unix_address_problem(path).into_iter().collect();
    }
    let mut out = Vec::new();
    let (host, port) = match split_host_port(endpoint) {
        Ok(hp) => hp,
        Err(why) => {
            out.push(format!("address {endpoint}: {why}"));
            ("", "")
        }
    };
    if !matches!(host, "" | "127.0.0.1" | "0.0.0.0" | "::1" | "::") {
        out.push(
            "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset"
                .into(),
        );
    }
    match port.parse::<i64>() {
        Ok(n) => out.extend(port_problem(n)),
        Err(_) => out.push(format!(
            "sidecar: defaultEndpoint port ({port}) is not a number"
        )),
    }
    out
}

/// Go's `net.SplitHostPort`: `host:port` or `[host]:port`; the host may not hold a colon
/// unless bracketed.
fn split_host_port(s: &str) -> Result<(&str, &str), &'static str> {
    let Some(colon) = s.rfind(':') else {
        return Err("missing port in address");
    };
    let (host, port) = (&s[..colon], &s[colon + 1..]);
    let host = if let Some(inner) = host.strip_prefix('[') {
        inner.strip_suffix(']').ok_or("missing ']' in address")?
    } else {
        if host.contains(':') {
            return Err("too many colons in address");
        }
        host
    };
    if host.contains(['[', ']']) || port.contains(['[', ']']) {
        return Err("unexpected bracket in address");
    }
    Ok((host, port))
}

/// Istio's `ValidateNamespaceSlashWildcardHostname(host, false, false)`: `namespace/dnsName`,
/// the namespace `*`, `.`, `~` or a DNS-1123 label, the name a (wildcard) FQDN or `*`.
fn namespace_slash_host_problems(host: &str) -> Vec<String> {
    let Some((ns, name)) = host.split_once('/') else {
        return vec!["host must be of form namespace/dnsName".into()];
    };
    let mut out = Vec::new();
    if ns.is_empty() || name.is_empty() {
        out.push("config namespace and dnsName in host entry cannot be empty".into());
    }
    if !matches!(ns, "*" | "." | "~") && !is_dns1123_label(ns) {
        out.push(format!("invalid namespace value {ns:?} in sidecar"));
    }
    if name != "*" && !name.contains('.') {
        out.push("short names (non FQDN) are not allowed".into());
    }
    out.extend(wildcard_domain_problem(name));
    if name.contains('*') && name.len() != 1 && !name.starts_with("*.") {
        out.push(format!("partial wildcard {name:?} not allowed"));
    }
    out
}

/// Kubernetes' `IsDNS1123Label`: at most 63 lower-case alphanumerics or `-`, alphanumeric at
/// both ends.
fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Istio's `IsWildcardDNS1123Label`: `*`, or a label optionally prefixed by `*` or `*-`.
fn is_wildcard_label(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    let rest = s
        .strip_prefix("*-")
        .or_else(|| s.strip_prefix('*'))
        .unwrap_or(s);
    s.len() <= 63 && is_dns1123_label(rest)
}

/// Istio's `ValidateWildcardDomain`.
fn wildcard_domain_problem(domain: &str) -> Option<String> {
    if domain.len() > 255 {
        return Some(format!("domain name {domain:?} too long (max 255)"));
    }
    if domain.is_empty() {
        return Some("empty domain name not allowed".into());
    }
    let (first, rest) = match domain.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (domain, None),
    };
    if !is_wildcard_label(first) {
        return Some(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    rest.and_then(dns1123_labels_problem)
}

/// Istio's `ValidateDNS1123Labels`: an all-numeric top-level label is refused, a trailing dot
/// is allowed.
fn dns1123_labels_problem(domain: &str) -> Option<String> {
    let labels: Vec<&str> = domain.split('.').collect();
    let top = labels.last().copied().unwrap_or_default();
    if !top.is_empty() && top.parse::<i64>().is_ok() {
        return Some(format!(
            "domain name {domain:?} invalid (top level domain {top:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in labels.iter().enumerate() {
        if i + 1 == labels.len() && label.is_empty() {
            return None;
        }
        if !is_dns1123_label(label) {
            return Some(format!(
                "domain name {domain:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    None
}

/// Istio's `ValidateFQDN`.
fn fqdn_problem(host: &str) -> Option<String> {
    if host.len() > 255 {
        return Some(format!("domain name {host:?} too long (max 255)"));
    }
    if host.is_empty() {
        return Some("empty domain name not allowed".into());
    }
    dns1123_labels_problem(host)
}

/// Istio's `validateSidecarOutboundTrafficPolicy`: `egressProxy` only with `ALLOW_ANY`, an FQDN
/// host and a port.
fn outbound_traffic_policy(tp: Option<&Value>, e: &mut impl FnMut(String, String)) {
    let Some(tp) = tp.filter(|t| !t.is_null()) else {
        return;
    };
    let Some(proxy) = tp.get("egressProxy").filter(|p| !p.is_null()) else {
        return;
    };
    let at = "spec.outboundTrafficPolicy.egressProxy";
    // The mode's default is REGISTRY_ONLY.
    if text(tp, "mode") != "ALLOW_ANY" {
        e(
            at.into(),
            "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode"
                .into(),
        );
        return;
    }
    if let Some(p) = fqdn_problem(text(proxy, "host")) {
        e(format!("{at}.host"), p);
    }
    let Some(port) = proxy.get("port").filter(|p| !p.is_null()) else {
        e(
            format!("{at}.port"),
            "sidecar: egress_proxy port must be non-nil".into(),
        );
        return;
    };
    let number = port.get("number").and_then(Value::as_i64).unwrap_or(0);
    if let Some(p) = port_problem(number) {
        e(format!("{at}.port.number"), p);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(spec: Value) -> Vec<String> {
        sidecar(&spec, &ErrorContext::default())
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    }

    fn ok(spec: Value) {
        let errs = check(spec.clone());
        assert!(errs.is_empty(), "{spec} refused: {errs:?}");
    }

    /// `spec` is refused with exactly one error, at `field`, whose message holds `msg`.
    fn refused(spec: Value, field: &str, msg: &str) {
        let errs = check(spec.clone());
        assert_eq!(errs.len(), 1, "{spec}: {errs:?}");
        assert!(
            errs[0].starts_with(&format!("{field}: ")) && errs[0].contains(msg),
            "{spec}: {errs:?}, wanted {field}: ..{msg}.."
        );
    }

    fn ingress1(l: Value) -> Value {
        json!({"ingress": [l]})
    }

    #[test]
    fn empty_sidecar_is_refused() {
        refused(json!({}), "spec", "sidecar: empty configuration provided");
        refused(
            json!({"workloadSelector": {"labels": {"app": "a"}}, "egress": []}),
            "spec",
            "empty configuration",
        );
        ok(json!({"outboundTrafficPolicy": {}}));
        ok(json!({"egress": [{"hosts": ["./*"]}]}));
    }

    #[test]
    fn workload_selector_labels() {
        ok(
            json!({"workloadSelector": {"labels": {"app": "reviews"}}, "egress": [{"hosts": ["*/*"]}]}),
        );
        refused(
            json!({"workloadSelector": {"labels": {"app": "rev*"}}, "egress": [{"hosts": ["*/*"]}]}),
            "spec.workloadSelector.labels.app",
            "wildcard is not supported in selector: \"app=rev*\"",
        );
        refused(
            json!({"workloadSelector": {"labels": {"": "x"}}}),
            "spec.workloadSelector.labels.",
            "empty key is not supported in selector",
        );
    }

    #[test]
    fn ingress_port_is_required_and_checked() {
        ok(ingress1(
            json!({"port": {"number": 9080, "protocol": "HTTP", "name": "http"},
            "defaultEndpoint": "127.0.0.1:8080"}),
        ));
        ok(ingress1(
            json!({"port": {"number": 9080, "protocol": "grpc-web"}}),
        ));
        refused(
            ingress1(json!({"defaultEndpoint": "127.0.0.1:8080"})),
            "spec.ingress[0].port",
            "sidecar: port is required for ingress listeners",
        );
        refused(
            ingress1(json!({"port": {"number": 0, "protocol": "HTTP"}})),
            "spec.ingress[0].port.number",
            "port number 0 must be in the range 1..65535",
        );
        refused(
            ingress1(json!({"port": {"number": 70000, "protocol": "HTTP"}})),
            "spec.ingress[0].port.number",
            "must be in the range 1..65535",
        );
        refused(
            ingress1(json!({"port": {"number": 80, "protocol": "SPDY"}})),
            "spec.ingress[0].port.protocol",
            "unsupported protocol: SPDY",
        );
        refused(
            ingress1(json!({"port": {"number": 80, "name": "Http_1"}})),
            "spec.ingress[0].port.name",
            "invalid port name: Http_1",
        );
        refused(
            ingress1(json!({"port": {"number": 80, "targetPort": 81}})),
            "spec.ingress[0].port.targetPort",
            "targetPort has no impact on Sidecars",
        );
    }

    #[test]
    fn ingress_bind_must_be_an_ip() {
        ok(ingress1(
            json!({"port": {"number": 80}, "bind": "10.1.2.3"}),
        ));
        ok(ingress1(
            json!({"port": {"number": 80}, "bind": "fe80::1%eth0"}),
        ));
        refused(
            ingress1(json!({"port": {"number": 80}, "bind": "unix:///var/run/a.sock"})),
            "spec.ingress[0].bind",
            "unix:///var/run/a.sock is not a valid IP",
        );
        refused(
            ingress1(json!({"port": {"number": 80}, "bind": "example.com"})),
            "spec.ingress[0].bind",
            "is not a valid IP",
        );
    }

    #[test]
    fn ingress_default_endpoint_forms() {
        for good in [
            "127.0.0.1:8080",
            "0.0.0.0:8080",
            "[::1]:8080",
            "[::]:8080",
            ":8080",
            "unix:///var/run/app.sock",
            "unix://@abstract",
        ] {
            ok(ingress1(
                json!({"port": {"number": 80}, "defaultEndpoint": good}),
            ));
        }
        let at = "spec.ingress[0].defaultEndpoint";
        let bad = |ep: &str| ingress1(json!({"port": {"number": 80}, "defaultEndpoint": ep}));
        refused(
            bad("10.0.0.1:8080"),
            at,
            "defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>",
        );
        refused(bad("127.0.0.1:0"), at, "port number 0 must be in the range");
        refused(
            bad("127.0.0.1:http"),
            at,
            "defaultEndpoint port (http) is not a number",
        );
        refused(
            bad("unix://relative.sock"),
            at,
            "is not an absolute path to a file",
        );
        refused(
            bad("unix:///var/run/"),
            at,
            "is not an absolute path to a file",
        );
        refused(bad("unix://"), at, "unix address must not be empty");
        // `::1:8080` is not `host:port` for Go (too many colons), so the port is empty too.
        let errs = check(bad("::1:8080"));
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].contains("too many colons"), "{errs:?}");
    }

    #[test]
    fn ingress_ports_must_be_unique() {
        let spec = json!({"ingress": [
            {"port": {"number": 80, "protocol": "HTTP"}},
            {"port": {"number": 80, "protocol": "TCP"}, "bind": "10.0.0.1"},
        ]});
        refused(
            spec,
            "spec.ingress[1].port.number",
            "sidecar: ports on IP bound listeners must be unique",
        );
        ok(json!({"ingress": [{"port": {"number": 80}}, {"port": {"number": 81}}]}));
    }

    #[test]
    fn capture_mode_enum() {
        ok(ingress1(
            json!({"port": {"number": 80}, "captureMode": "NONE"}),
        ));
        refused(
            ingress1(json!({"port": {"number": 80}, "captureMode": "TPROXY"})),
            "spec.ingress[0].captureMode",
            "unsupported captureMode \"TPROXY\"",
        );
    }

    #[test]
    fn ingress_tls_restrictions() {
        ok(ingress1(
            json!({"port": {"number": 443, "protocol": "HTTPS"},
            "tls": {"mode": "SIMPLE", "serverCertificate": "/c.pem", "privateKey": "/k.pem"}}),
        ));
        refused(
            ingress1(
                json!({"port": {"number": 443, "protocol": "HTTPS"}, "tls": {"mode": "ISTIO_MUTUAL"}}),
            ),
            "spec.ingress[0].tls.mode",
            "cannot set mode to ISTIO_MUTUAL in sidecar ingress tls",
        );
        refused(
            ingress1(
                json!({"port": {"number": 443, "protocol": "TLS"}, "tls": {"credentialName": "c"}}),
            ),
            "spec.ingress[0].tls.credentialName",
            "credentialName is not currently supported",
        );
        refused(
            ingress1(
                json!({"port": {"number": 80, "protocol": "HTTP"}, "tls": {"mode": "SIMPLE"}}),
            ),
            "spec.ingress[0].tls",
            "server cannot have TLS settings for non HTTPS/TLS ports",
        );
    }

    #[test]
    fn connection_pools_top_level_and_per_port() {
        ok(json!({"inboundConnectionPool": {"tcp": {"maxConnections": 100}}}));
        ok(ingress1(json!({"port": {"number": 80, "protocol": "HTTP"},
            "connectionPool": {"http": {"http1MaxPendingRequests": 10}}})));
        refused(
            json!({"inboundConnectionPool": {}}),
            "spec.inboundConnectionPool",
            "connection pool must have at least one field",
        );
        refused(
            json!({"inboundConnectionPool": {"tcp": {"maxConnections": -1}}}),
            "spec.inboundConnectionPool.tcp.maxConnections",
            "max connections must be non-negative",
        );
        refused(
            ingress1(json!({"port": {"number": 80},
                "connectionPool": {"http": {"maxRetries": -2}}})),
            "spec.ingress[0].connectionPool.http.maxRetries",
            "max retries must be non-negative",
        );
        refused(
            ingress1(json!({"port": {"number": 80}, "connectionPool": {"http":
                {"h2UpgradePolicy": "UPGRADE", "useClientProtocol": true}}})),
            "spec.ingress[0].connectionPool.http.useClientProtocol",
            "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
        );
    }

    #[test]
    fn egress_hosts_are_required_and_namespace_scoped() {
        for good in [
            "*/*",
            "./*",
            "~/*",
            "istio-system/*",
            "prod/reviews.prod.svc.cluster.local",
            "*/*.example.com",
            "./istio.io.",
        ] {
            ok(json!({"egress": [{"hosts": [good]}]}));
        }
        refused(
            json!({"egress": [{"port": {"number": 80}}]}),
            "spec.egress[0].hosts",
            "sidecar: egress listener must contain at least one host",
        );
        let at = "spec.egress[0].hosts[0]";
        let h = |host: &str| json!({"egress": [{"hosts": [host]}]});
        refused(
            h("reviews.default.svc"),
            at,
            "host must be of form namespace/dnsName",
        );
        refused(
            h("Prod/*"),
            at,
            "invalid namespace value \"Prod\" in sidecar",
        );
        refused(
            h("prod/reviews"),
            at,
            "short names (non FQDN) are not allowed",
        );
        refused(
            h("prod/*-foo.com"),
            at,
            "partial wildcard \"*-foo.com\" not allowed",
        );
        // A `*` inside a label is both an invalid label and a partial wildcard, as in Istio.
        assert_eq!(check(h("prod/foo*.com")).len(), 2);
        refused(
            h("prod/a.123"),
            at,
            "top level domain \"123\" cannot be all-numeric",
        );
        refused(h("prod/a_b.com"), at, "invalid (label \"a_b\" invalid)");
        let errs = check(h("/*"));
        assert_eq!(
            errs,
            vec![
                "spec.egress[0].hosts[0]: config namespace and dnsName in host entry cannot be empty",
                "spec.egress[0].hosts[0]: invalid namespace value \"\" in sidecar"
            ]
        );
    }

    #[test]
    fn egress_port_bind_and_capture_mode() {
        ok(
            json!({"egress": [{"port": {"number": 9080, "protocol": "HTTP", "name": "h"},
            "bind": "127.0.0.1", "captureMode": "NONE", "hosts": ["*/*"]}]}),
        );
        ok(
            json!({"egress": [{"port": {"number": 0, "protocol": "HTTP"},
            "bind": "unix:///var/run/out.sock", "captureMode": "NONE", "hosts": ["*/*"]}]}),
        );
        refused(
            json!({"egress": [{"port": {"number": 0, "protocol": "HTTP"}, "bind": "127.0.0.1",
                "hosts": ["*/*"]}]}),
            "spec.egress[0].bind",
            "sidecar: ports with 0 value must have a unix domain socket bind address",
        );
        refused(
            json!({"egress": [{"port": {"number": 0}, "bind": "unix:///a.sock",
                "captureMode": "IPTABLES", "hosts": ["*/*"]}]}),
            "spec.egress[0].captureMode",
            "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
        );
        refused(
            json!({"egress": [{"port": {"number": 80}, "bind": "unix:///a.sock", "hosts": ["*/*"]}]}),
            "spec.egress[0].bind",
            "unix:///a.sock is not a valid IP",
        );
        refused(
            json!({"egress": [{"port": {"number": 80, "protocol": "bogus"}, "hosts": ["*/*"]}]}),
            "spec.egress[0].port.protocol",
            "unsupported protocol: bogus",
        );
    }

    #[test]
    fn egress_ports_and_sockets_must_be_unique() {
        refused(
            json!({"egress": [
                {"port": {"number": 80}, "hosts": ["*/*"]},
                {"port": {"number": 80}, "bind": "10.0.0.1", "hosts": ["*/*"]},
            ]}),
            "spec.egress[1].port.number",
            "sidecar: ports on IP bound listeners must be unique",
        );
        refused(
            json!({"egress": [
                {"port": {"number": 0}, "bind": "unix:///a.sock", "hosts": ["*/*"]},
                {"port": {"number": 0}, "bind": "unix:///a.sock", "hosts": ["*/*"]},
            ]}),
            "spec.egress[1].bind",
            "sidecar: unix domain socket values for listeners must be unique",
        );
    }

    #[test]
    fn one_catch_all_egress_listener_last() {
        ok(json!({"egress": [{"port": {"number": 80}, "hosts": ["*/*"]}, {"hosts": ["./*"]}]}));
        refused(
            json!({"egress": [{"hosts": ["./*"]}, {"port": {"number": 80}, "hosts": ["*/*"]}]}),
            "spec.egress[0]",
            "sidecar: the egress listener with empty port should be the last listener in the list",
        );
        let errs = check(json!({"egress": [{"hosts": ["./*"]}, {"hosts": ["*/*"]}]}));
        assert_eq!(
            errs,
            vec![
                "spec.egress[0]: sidecar: the egress listener with empty port should be the last listener in the list"
            ],
            "the last catch-all is the one that counts, as in Istio"
        );
        let errs =
            check(json!({"egress": [{"hosts": ["./*"]}, {"hosts": ["./*"]}, {"hosts": ["*/*"]}]}));
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    #[test]
    fn egress_proxy_only_with_allow_any() {
        let proxy = json!({"host": "proxy.example.com", "port": {"number": 3128}});
        ok(json!({"outboundTrafficPolicy": {"mode": "ALLOW_ANY", "egressProxy": proxy}}));
        ok(json!({"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}));
        refused(
            json!({"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY", "egressProxy": proxy}}),
            "spec.outboundTrafficPolicy.egressProxy",
            "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
        );
        refused(
            json!({"outboundTrafficPolicy": {"egressProxy": proxy}}),
            "spec.outboundTrafficPolicy.egressProxy",
            "only with ALLOW_ANY",
        );
        refused(
            json!({"outboundTrafficPolicy": {"mode": "ALLOW_ANY", "egressProxy": {"host": "p.example.com"}}}),
            "spec.outboundTrafficPolicy.egressProxy.port",
            "sidecar: egress_proxy port must be non-nil",
        );
        refused(
            json!({"outboundTrafficPolicy": {"mode": "ALLOW_ANY",
                "egressProxy": {"host": "bad_host.com", "port": {"number": 3128}}}}),
            "spec.outboundTrafficPolicy.egressProxy.host",
            "invalid (label \"bad_host\" invalid)",
        );
    }
}
