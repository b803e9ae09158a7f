//! The analyzers: VirtualService destinations (host, port, DestinationRule subset), gateways
//! and the hosts they serve, VirtualServices conflicting on a mesh host, DestinationRules and
//! Sidecar egress hosts that match no service.

use std::collections::BTreeMap;

use mesh_proto::config::Kind;
use serde_json::Value;

use super::finding::{Finding, Level, msg};
use super::hosts::{Visibility, fqdn, overlaps, served_by};
use super::model::{Object, items, strings};

/// A service the mesh knows (a Kubernetes Service or a ServiceEntry host).
struct Service {
    host: String,
    ports: Vec<i64>,
    visibility: Visibility,
}

/// What the analyzers look things up in.
struct Index<'a> {
    objects: &'a [Object],
    services: Vec<Service>,
}

impl<'a> Index<'a> {
    fn new(objects: &'a [Object]) -> Index<'a> {
        let mut services = Vec::new();
        for o in objects {
            match o.kind {
                Kind::Service => {
                    let export = o
                        .value
                        .pointer("/metadata/annotations/networking.istio.io~1exportTo")
                        .and_then(Value::as_str)
                        .map(|s| s.split(',').collect::<Vec<_>>())
                        .unwrap_or_default();
                    services.push(Service {
                        host: fqdn(&o.name, &o.namespace),
                        ports: items(o.spec(), "ports")
                            .iter()
                            .filter_map(|p| p.get("port").and_then(Value::as_i64))
                            .collect(),
                        visibility: Visibility::from_export_to(export, &o.namespace),
                    });
                }
                Kind::ServiceEntry => {
                    let spec = o.spec();
                    let visibility =
                        Visibility::from_export_to(strings(spec, "exportTo"), &o.namespace);
                    let ports: Vec<i64> = items(spec, "ports")
                        .iter()
                        .filter_map(|p| p.get("number").and_then(Value::as_i64))
                        .collect();
                    for h in strings(spec, "hosts") {
                        services.push(Service {
                            host: fqdn(h, &o.namespace),
                            ports: ports.clone(),
                            visibility: visibility.clone(),
                        });
                    }
                }
                _ => {}
            }
        }
        Index { objects, services }
    }

    fn of(&self, kind: Kind) -> impl Iterator<Item = &'a Object> {
        self.objects.iter().filter(move |o| o.kind == kind)
    }

    /// The service `host` (already a FQDN) names, as seen from namespace `ns`.
    fn service(&self, host: &str, ns: &str) -> Option<&Service> {
        self.service_seen_by(host, &[ns])
    }

    /// The service `host` names, seen from every namespace of `from`.
    fn service_seen_by(&self, host: &str, from: &[&str]) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| from.iter().all(|ns| s.visibility.sees(ns)) && served_by(host, &s.host))
    }
}

pub(crate) fn finding(
    o: &Object,
    field: String,
    (code, level, message): (&str, Level, String),
) -> Finding {
    Finding {
        code: code.to_string(),
        level,
        kind: o.kind.info().kind.to_string(),
        namespace: o.namespace.clone(),
        name: o.name.clone(),
        file: o.file.clone(),
        line: o.line,
        field,
        message,
    }
}

/// Every finding about `objects`, ordered by object then code.
pub fn analyze(objects: &[Object]) -> Vec<Finding> {
    let index = Index::new(objects);
    let mut out = Vec::new();
    for vs in index.of(Kind::VirtualService) {
        destinations(&index, vs, &mut out);
        gateways(&index, vs, &mut out);
    }
    conflicting_mesh_hosts(&index, &mut out);
    for dr in index.of(Kind::DestinationRule) {
        destination_rule_host(&index, dr, &mut out);
    }
    for sc in index.of(Kind::Sidecar) {
        sidecar_egress(&index, sc, &mut out);
    }
    super::conflicting_gateways::conflicting_gateways(objects, &mut out);
    for o in objects {
        super::object_checks::check_object(o, &mut out);
    }
    out.sort_by(|a, b| {
        (&a.file, a.line, &a.kind, &a.namespace, &a.name, &a.code).cmp(&(
            &b.file,
            b.line,
            &b.kind,
            &b.namespace,
            &b.name,
            &b.code,
        ))
    });
    out.dedup();
    out
}

/// Every destination of a VirtualService's routes and mirrors, with its field path.
fn route_destinations(spec: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    for section in ["http", "tcp", "tls"] {
        for (i, rule) in items(spec, section).iter().enumerate() {
            for (j, route) in items(rule, "route").iter().enumerate() {
                if let Some(d) = route.get("destination").filter(|d| d.is_object()) {
                    out.push((format!("spec.{section}[{i}].route[{j}].destination"), d));
                }
            }
            if let Some(m) = rule.get("mirror").filter(|m| m.is_object()) {
                out.push((format!("spec.{section}[{i}].mirror"), m));
            }
            for (j, m) in items(rule, "mirrors").iter().enumerate() {
                if let Some(d) = m.get("destination").filter(|d| d.is_object()) {
                    out.push((format!("spec.{section}[{i}].mirrors[{j}].destination"), d));
                }
            }
        }
    }
    out
}

fn text<'v>(v: &'v Value, field: &str) -> &'v str {
    v.get(field).and_then(Value::as_str).unwrap_or_default()
}

/// Istio's DestinationHostAnalyzer and DestinationRuleAnalyzer: each destination's host must be
/// a service (with the port asked, or one port when none is asked), and its subset must be
/// defined by a DestinationRule for that host.
fn destinations(index: &Index, vs: &Object, out: &mut Vec<Finding>) {
    // A VirtualService exported to other namespaces must route to services they see too.
    let exported = Visibility::from_export_to(strings(vs.spec(), "exportTo"), &vs.namespace);
    let from: Vec<&str> = match &exported {
        Visibility::Only(set) if !set.is_empty() => set.iter().map(String::as_str).collect(),
        _ => vec![vs.namespace.as_str()],
    };
    for (field, d) in route_destinations(vs.spec()) {
        let host = text(d, "host");
        if host.is_empty() {
            continue;
        }
        let full = fqdn(host, &vs.namespace);
        let port = d.pointer("/port/number").and_then(Value::as_i64);
        match index.service_seen_by(&full, &from) {
            None => out.push(finding(
                vs,
                format!("{field}.host"),
                msg::referenced_not_found("host", host),
            )),
            Some(svc) => match port {
                Some(p) if !svc.ports.is_empty() && !svc.ports.contains(&p) => out.push(finding(
                    vs,
                    format!("{field}.port.number"),
                    msg::referenced_not_found("host+port", &format!("{host}+{p}")),
                )),
                None if svc.ports.len() > 1 => out.push(finding(
                    vs,
                    field.clone(),
                    msg::port_selector_required(host, &svc.ports),
                )),
                _ => {}
            },
        }
        let subset = text(d, "subset");
        if subset.is_empty() {
            continue;
        }
        let defined = index.of(Kind::DestinationRule).any(|dr| {
            let spec = dr.spec();
            Visibility::from_export_to(strings(spec, "exportTo"), &dr.namespace).sees(&vs.namespace)
                && fqdn(text(spec, "host"), &dr.namespace) == full
                && items(spec, "subsets")
                    .iter()
                    .any(|s| text(s, "name") == subset)
        });
        if !defined {
            out.push(finding(
                vs,
                format!("{field}.subset"),
                msg::referenced_not_found(
                    "host+subset in destinationrule",
                    &format!("{host}+{subset}"),
                ),
            ));
        }
    }
}

/// Istio's GatewayAnalyzer: each gateway named must exist, and serve one of the VirtualService's
/// hosts to the VirtualService's namespace.
fn gateways(index: &Index, vs: &Object, out: &mut Vec<Finding>) {
    let spec = vs.spec();
    let vs_hosts: Vec<String> = strings(spec, "hosts")
        .into_iter()
        .map(str::to_string)
        .collect();
    for (i, gw_name) in strings(spec, "gateways").into_iter().enumerate() {
        if gw_name == "mesh" {
            continue;
        }
        let (gw_ns, name) = gw_name
            .split_once('/')
            .unwrap_or((vs.namespace.as_str(), gw_name));
        let Some(gw) = index
            .of(Kind::Gateway)
            .find(|g| g.namespace == gw_ns && g.name == name)
        else {
            out.push(finding(
                vs,
                format!("spec.gateways[{i}]"),
                msg::referenced_not_found("gateway", gw_name),
            ));
            // Istio then finds none of the hosts in the missing gateway, and says so too.
            out.push(finding(
                vs,
                format!("spec.gateways[{i}]"),
                msg::host_not_in_gateway(&vs_hosts, &vs.full_name(), &format!("{gw_ns}/{name}")),
            ));
            continue;
        };
        let served = items(gw.spec(), "servers").iter().any(|server| {
            strings(server, "hosts").into_iter().any(|entry| {
                let (ns, host) = entry.split_once('/').unwrap_or(("*", entry));
                let ns_ok = match ns {
                    "*" => true,
                    "." => gw.namespace == vs.namespace,
                    ns => ns == vs.namespace,
                };
                ns_ok && vs_hosts.iter().any(|h| overlaps(h, host))
            })
        });
        if !served {
            out.push(finding(
                vs,
                format!("spec.gateways[{i}]"),
                msg::host_not_in_gateway(&vs_hosts, &vs.full_name(), &gw.full_name()),
            ));
        }
    }
}

/// Istio's ConflictingMeshGatewayHostsAnalyzer: two VirtualServices bound to the mesh gateway
/// (no gateways, or `mesh` among them) for one host, seen together from some namespace.
fn conflicting_mesh_hosts(index: &Index, out: &mut Vec<Finding>) {
    // (VirtualService, host as a FQDN, who sees it) for every mesh-bound host.
    let mut bound: Vec<(&Object, String, Visibility)> = Vec::new();
    for vs in index.of(Kind::VirtualService) {
        let spec = vs.spec();
        let gws = strings(spec, "gateways");
        if !gws.is_empty() && !gws.contains(&"mesh") {
            continue;
        }
        let vis = Visibility::from_export_to(strings(spec, "exportTo"), &vs.namespace);
        for h in strings(spec, "hosts") {
            bound.push((vs, fqdn(h, &vs.namespace), vis.clone()));
        }
    }
    // Per (VirtualService, host): every VirtualService sharing that host.
    let mut conflicts: BTreeMap<(String, String), (&Object, Vec<String>)> = BTreeMap::new();
    for (i, (a, ha, va)) in bound.iter().enumerate() {
        for (b, hb, vb) in &bound[i + 1..] {
            if a.full_name() == b.full_name() || !overlaps(ha, hb) || !va.meets(vb) {
                continue;
            }
            for (me, host, other) in [(a, ha, b), (b, hb, a)] {
                let e = conflicts
                    .entry((me.full_name(), host.clone()))
                    .or_insert_with(|| (*me, vec![me.full_name()]));
                e.1.push(other.full_name());
            }
        }
    }
    for ((_, host), (vs, mut names)) in conflicts {
        names.sort();
        names.dedup();
        out.push(finding(
            vs,
            "spec.hosts".into(),
            msg::conflicting_mesh_hosts(&names.join(","), &host),
        ));
    }
}

/// A DestinationRule whose (non-wildcard) host is no service its namespace sees.
fn destination_rule_host(index: &Index, dr: &Object, out: &mut Vec<Finding>) {
    let host = text(dr.spec(), "host");
    if host.is_empty() || host.contains('*') {
        return;
    }
    if index
        .service(&fqdn(host, &dr.namespace), &dr.namespace)
        .is_none()
    {
        out.push(finding(
            dr,
            "spec.host".into(),
            msg::unknown_destination_rule_host(host),
        ));
    }
}

/// A Sidecar egress host (`namespace/dnsName`, not a wildcard) that no service matches.
fn sidecar_egress(index: &Index, sc: &Object, out: &mut Vec<Finding>) {
    for (i, egress) in items(sc.spec(), "egress").iter().enumerate() {
        for (j, entry) in strings(egress, "hosts").into_iter().enumerate() {
            let Some((ns, host)) = entry.split_once('/') else {
                continue;
            };
            if host.contains('*') || ns == "~" {
                continue;
            }
            let ns = if ns == "." { sc.namespace.as_str() } else { ns };
            let found = index.services.iter().any(|s| {
                let host_ok = if ns == "*" {
                    served_by(host, &s.host)
                        || s.host
                            .strip_suffix(&format!(".{}", super::hosts::DOMAIN_SUFFIX))
                            .and_then(|h| h.split_once('.'))
                            .is_some_and(|(name, _)| name == host)
                } else {
                    served_by(&fqdn(host, ns), &s.host)
                };
                host_ok && s.visibility.sees(&sc.namespace)
            });
            if !found {
                out.push(finding(
                    sc,
                    format!("spec.egress[{i}].hosts[{j}]"),
                    msg::referenced_not_found("host", entry),
                ));
            }
        }
    }
}
