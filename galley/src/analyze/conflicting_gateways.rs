//! Istio's ConflictingGatewayAnalyzer (IST0145): two Gateways whose workload selectors pick the
//! same gateway pods (one selector contains the other) and that serve an overlapping host on
//! the same port.

use std::collections::BTreeMap;

use mesh_proto::config::Kind;
use serde_json::Value;

use super::checks::finding;
use super::finding::{Finding, msg};
use super::hosts::overlaps;
use super::model::{Object, items, strings};

/// A Gateway's selector labels.
fn selector(gw: &Object) -> BTreeMap<&str, &str> {
    gw.spec()
        .get("selector")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// `(port, host)` of every server host, without its `namespace/` part.
fn served(gw: &Object) -> Vec<(i64, &str)> {
    let mut out = Vec::new();
    for s in items(gw.spec(), "servers") {
        let Some(port) = s.pointer("/port/number").and_then(Value::as_i64) else {
            continue;
        };
        for h in strings(s, "hosts") {
            out.push((port, h.split_once('/').map_or(h, |(_, host)| host)));
        }
    }
    out
}

/// A Gateway, its selector and what it serves.
type Served<'a> = (&'a Object, BTreeMap<&'a str, &'a str>, Vec<(i64, &'a str)>);

fn contains(big: &BTreeMap<&str, &str>, small: &BTreeMap<&str, &str>) -> bool {
    small.iter().all(|(k, v)| big.get(k) == Some(v))
}

/// Every IST0145 finding among `objects`: one per Gateway that conflicts with others.
pub(crate) fn conflicting_gateways(objects: &[Object], out: &mut Vec<Finding>) {
    let gws: Vec<Served> = objects
        .iter()
        .filter(|o| o.kind == Kind::Gateway)
        .map(|g| (g, selector(g), served(g)))
        .filter(|(_, sel, _)| !sel.is_empty())
        .collect();
    for (i, (a, sel_a, served_a)) in gws.iter().enumerate() {
        let mut others = Vec::new();
        let mut at: Option<(i64, Vec<&str>)> = None;
        for (j, (b, sel_b, served_b)) in gws.iter().enumerate() {
            if i == j || !(contains(sel_a, sel_b) || contains(sel_b, sel_a)) {
                continue;
            }
            let clash = served_a
                .iter()
                .find(|(pa, ha)| served_b.iter().any(|(pb, hb)| pa == pb && overlaps(ha, hb)));
            if let Some((port, host)) = clash {
                others.push(b.full_name());
                at.get_or_insert((*port, vec![host]));
            }
        }
        if let Some((port, hosts)) = at {
            let sel: Vec<String> = sel_a.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push(finding(
                a,
                "spec.servers".into(),
                msg::conflicting_gateways(&others.join(","), &sel.join(","), port, &hosts),
            ));
        }
    }
}
