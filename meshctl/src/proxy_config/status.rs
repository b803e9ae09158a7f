//! The `proxy-status` table: per proxy, whether each xDS type is in sync with Pilot.

use serde_json::Value;

use super::resolve::display_name;
use super::table::Table;

/// The xDS types in table order (`/debug/syncz` short names); `sds` (gateway credentials) is
/// sent to routers only, so a sidecar shows `NOT SENT` there.
const TYPES: [&str; 5] = ["cds", "lds", "eds", "rds", "sds"];

/// One type's state: `SYNCED` (the proxy ACKed the version last sent), `NACKED` (it rejected
/// the version last sent), `STALE` (sent, not answered yet), `NOT SENT`.
pub fn type_state(t: &Value) -> &'static str {
    let Some(sent) = t["sent_version"].as_str() else {
        return "NOT SENT";
    };
    if t["acked_version"].as_str() == Some(sent) {
        "SYNCED"
    } else if t["last_nack"]["version"].as_str() == Some(sent) {
        "NACKED"
    } else {
        "STALE"
    }
}

/// The table for `/debug/syncz`, then one line per NACK with the proxy's error.
pub fn render(syncz: &Value, pilot: &str) -> String {
    let mut entries: Vec<&Value> = syncz.as_array().into_iter().flatten().collect();
    entries.sort_by_key(|p| display_name(p));
    let mut table = Table::new(&[
        "NAME", "CDS", "LDS", "EDS", "RDS", "SDS", "PILOT", "PROTOCOL",
    ]);
    let mut nacks = Vec::new();
    for p in &entries {
        let name = display_name(p);
        let mut row = vec![name.clone()];
        for t in TYPES {
            let ts = &p["types"][t];
            let state = type_state(ts);
            if state == "NACKED" {
                nacks.push(format!(
                    "{name} {}: {}",
                    t.to_uppercase(),
                    ts["last_nack"]["error"].as_str().unwrap_or("(no detail)")
                ));
            }
            row.push(state.to_string());
        }
        row.push(pilot.to_string());
        row.push(p["protocol"].as_str().unwrap_or("-").to_string());
        table.row(row);
    }
    let mut out = table.render();
    if entries.is_empty() {
        out.push_str("(no proxy is connected to this pilot)\n");
    }
    for n in nacks {
        out.push_str("NACK ");
        out.push_str(&n);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn states_and_table() {
        let syncz = json!([
            {
                "proxy_id": "sidecar~127.0.0.1~reviews-v1.default~default.svc.cluster.local",
                "protocol": "sotw",
                "proxy": {"pod": "reviews-v1", "namespace": "default"},
                "types": {
                    "cds": {"sent_version": "c2", "acked_version": "c1", "last_nack": null},
                    "lds": {"sent_version": "l1", "acked_version": "l1", "last_nack": {"version": "l0", "error": "old"}},
                    "eds": {"sent_version": "e2", "acked_version": "e1", "last_nack": {"version": "e2", "error": "bad endpoint"}},
                }
            },
            {
                "proxy_id": "router~127.0.0.1~istio-ingressgateway.istio-system~istio-system.svc.cluster.local",
                "protocol": "delta",
                "proxy": {"pod": "istio-ingressgateway", "namespace": "istio-system"},
                "types": {
                    "cds": {"sent_version": "a", "acked_version": "a"},
                    "lds": {"sent_version": "b", "acked_version": "b"},
                    "eds": {"sent_version": "c", "acked_version": "c"},
                    "rds": {"sent_version": "d", "acked_version": "d"},
                    "sds": {"sent_version": "s", "acked_version": "s"},
                }
            }
        ]);
        let out = render(&syncz, "127.0.0.1:8080");
        let rows: Vec<Vec<&str>> = out
            .lines()
            .map(|l| {
                l.split("   ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .collect();
        assert_eq!(
            rows[0],
            [
                "NAME", "CDS", "LDS", "EDS", "RDS", "SDS", "PILOT", "PROTOCOL"
            ]
        );
        assert_eq!(
            rows[1],
            [
                "istio-ingressgateway.istio-system",
                "SYNCED",
                "SYNCED",
                "SYNCED",
                "SYNCED",
                "SYNCED",
                "127.0.0.1:8080",
                "delta"
            ]
        );
        assert_eq!(
            rows[2],
            [
                "reviews-v1.default",
                "STALE",
                "SYNCED",
                "NACKED",
                "NOT SENT",
                "NOT SENT",
                "127.0.0.1:8080",
                "sotw"
            ]
        );
        assert_eq!(
            out.lines().nth(3),
            Some("NACK reviews-v1.default EDS: bad endpoint")
        );
        assert_eq!(out.lines().count(), 4);
        let empty = render(&json!([]), "p");
        assert!(empty.contains("no proxy is connected"), "{empty}");
    }
}
