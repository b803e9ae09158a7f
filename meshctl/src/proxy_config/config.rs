//! The `proxy-config` tables over Pilot's `/debug/config_dump` of one proxy: clusters,
//! listeners, routes and endpoints, with istioctl's columns.

use serde_json::Value;

use super::table::Table;

/// Which part of a proxy's config to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConfigKind {
    /// CDS: one row per cluster.
    #[value(alias = "cluster")]
    Clusters,
    /// LDS: one row per listener.
    #[value(alias = "listener")]
    Listeners,
    /// RDS: one row per route.
    #[value(alias = "route")]
    Routes,
    /// EDS: one row per endpoint of each cluster.
    #[value(alias = "endpoint", alias = "ep")]
    Endpoints,
}

impl ConfigKind {
    /// The key of this part in the config dump.
    pub fn section(self) -> &'static str {
        match self {
            ConfigKind::Clusters => "clusters",
            ConfigKind::Listeners => "listeners",
            ConfigKind::Routes => "routes",
            ConfigKind::Endpoints => "endpoints",
        }
    }
}

/// The table of `kind` for the config dump `dump`.
pub fn render(kind: ConfigKind, dump: &Value) -> String {
    let resources = dump[kind.section()]["resources"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    match kind {
        ConfigKind::Clusters => clusters(resources),
        ConfigKind::Listeners => listeners(resources),
        ConfigKind::Routes => routes(resources),
        ConfigKind::Endpoints => endpoints(resources, dump),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

/// `outbound|9080|v1|reviews.default.svc.cluster.local` → (FQDN, port, subset, direction);
/// other names (`BlackHoleCluster`) are the FQDN column alone.
fn cluster_parts(name: &str) -> [String; 4] {
    let parts: Vec<&str> = name.split('|').collect();
    match parts.as_slice() {
        [direction, port, subset, fqdn] => [
            (*fqdn).to_string(),
            (*port).to_string(),
            if subset.is_empty() { "-" } else { subset }.to_string(),
            direction.to_uppercase(),
        ],
        _ => [name.to_string(), "-".into(), "-".into(), "-".into()],
    }
}

fn clusters(resources: &[Value]) -> String {
    let mut rows: Vec<Vec<String>> = resources
        .iter()
        .map(|c| {
            let [fqdn, port, subset, direction] = cluster_parts(c["name"].as_str().unwrap_or("?"));
            vec![fqdn, port, subset, direction, text(&c["type"])]
        })
        .collect();
    // By service, then port (numerically), then subset (the service-wide cluster, `-`, first).
    rows.sort_by(|a, b| {
        (&a[0], a[1].parse::<u32>().ok(), &a[2]).cmp(&(&b[0], b[1].parse::<u32>().ok(), &b[2]))
    });
    let mut t = Table::new(&["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE"]);
    for r in rows {
        t.row(r);
    }
    t.render()
}

fn listeners(resources: &[Value]) -> String {
    let mut t = Table::new(&["ADDRESS", "PORT", "TYPE", "NAME", "DESTINATION"]);
    for l in resources {
        let address = l["address"].as_str().unwrap_or("");
        let (ip, port) = address.rsplit_once(':').unwrap_or((address, "-"));
        let mut destinations: Vec<String> = Vec::new();
        for f in l["filters"].as_array().into_iter().flatten() {
            let d = if let Some(rds) = f["rds"].as_str() {
                format!("Route: {rds}")
            } else if let Some(cluster) = f["cluster"].as_str() {
                format!("Cluster: {cluster}")
            } else if let Some(inline) = f["inlineRoute"].as_str() {
                format!("Inline Route: {inline}")
            } else {
                continue;
            };
            if !destinations.contains(&d) {
                destinations.push(d);
            }
        }
        t.row(vec![
            ip.to_string(),
            port.to_string(),
            text(&l["type"]),
            text(&l["name"]),
            if destinations.is_empty() {
                "-".to_string()
            } else {
                destinations.join(", ")
            },
        ]);
    }
    t.render()
}

/// The shortest domain without a port (`reviews` of `reviews`, `reviews:9080`,
/// `reviews.default.svc.cluster.local`, ...), with `+N more` for the rest.
fn domains(list: &[Value]) -> String {
    let names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
    let best = names
        .iter()
        .filter(|d| !d.contains(':') || d.starts_with('['))
        .min_by_key(|d| d.len())
        .or_else(|| names.first());
    match best {
        None => "-".to_string(),
        Some(b) if names.len() > 1 => format!("{b} +{} more", names.len() - 1),
        Some(b) => (*b).to_string(),
    }
}

/// istioctl's MATCH: `/*` for prefix `/`, `/api*` for a prefix, the path itself for an exact
/// match, the regex as written; then header conditions.
fn route_match(m: &Value) -> String {
    let p = &m["path"];
    let mut s = if let Some(prefix) = p["prefix"].as_str() {
        format!("{prefix}*")
    } else if let Some(path) = p["path"].as_str() {
        path.to_string()
    } else if let Some(re) = p["regex"].as_str() {
        format!("regex:{re}")
    } else {
        "-".to_string()
    };
    for h in m["headers"].as_array().into_iter().flatten() {
        let name = h["name"].as_str().unwrap_or("?");
        let cond = &h["match"];
        let c = if let Some(v) = cond["exact"].as_str() {
            format!("{name}={v}")
        } else if let Some(v) = cond["prefix"].as_str() {
            format!("{name}={v}*")
        } else if let Some(v) = cond["suffix"].as_str() {
            format!("{name}=*{v}")
        } else if let Some(v) = cond["regex"].as_str() {
            format!("{name}~{v}")
        } else {
            name.to_string()
        };
        s.push(' ');
        s.push_str(&c);
    }
    s
}

/// Where a route sends requests: its clusters (with weights when split), or redirect.
fn destination(action: &Value) -> String {
    if let Some(cs) = action["clusters"].as_array() {
        let many = cs.len() > 1;
        return cs
            .iter()
            .map(|c| {
                let name = text(&c["name"]);
                match (&c["weight"], many) {
                    (w, true) if !w.is_null() => format!("{name} {w}%"),
                    _ => name,
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
    }
    if action["redirect"].is_string() {
        return "redirect".to_string();
    }
    "-".to_string()
}

fn routes(resources: &[Value]) -> String {
    let mut t = Table::new(&["NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE", "DESTINATION"]);
    for rc in resources {
        let name = text(&rc["name"]);
        for vh in rc["virtualHosts"].as_array().into_iter().flatten() {
            let doms = domains(
                vh["domains"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
            );
            for r in vh["routes"].as_array().into_iter().flatten() {
                t.row(vec![
                    name.clone(),
                    doms.clone(),
                    route_match(&r["match"]),
                    text(&r["virtualService"]),
                    destination(&r["action"]),
                ]);
            }
        }
    }
    t.render()
}

/// Envoy treats an endpoint of unknown health as healthy.
fn status(health: &Value) -> String {
    match health.as_str() {
        None | Some("UNKNOWN") => "HEALTHY".to_string(),
        Some(h) => h.to_string(),
    }
}

fn endpoints(resources: &[Value], dump: &Value) -> String {
    // Pilot only knows whether outlier detection is configured; ejections happen in the proxy.
    let outlier = |cluster: &str| {
        let configured = dump["clusters"]["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"] == cluster && c["outlierDetection"] == true);
        if configured { "CONFIGURED" } else { "-" }
    };
    let mut t = Table::new(&["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"]);
    for cla in resources {
        let cluster = cla["clusterName"].as_str().unwrap_or("?");
        for e in cla["endpoints"].as_array().into_iter().flatten() {
            t.row(vec![
                text(&e["address"]),
                status(&e["health"]),
                outlier(cluster).to_string(),
                cluster.to_string(),
            ]);
        }
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A config dump as Pilot's `/debug/config_dump` writes it (trimmed).
    fn dump() -> Value {
        json!({
            "clusters": {"version": "c1", "resources": [
                {"name": "outbound|9080||reviews.default.svc.cluster.local", "type": "EDS", "outlierDetection": false},
                {"name": "outbound|9080|v3|reviews.default.svc.cluster.local", "type": "EDS", "outlierDetection": true},
                {"name": "BlackHoleCluster", "type": "STATIC", "outlierDetection": false},
            ]},
            "listeners": {"version": "l1", "resources": [
                {"name": "0.0.0.0_27017", "address": "0.0.0.0:27017", "type": "TCP",
                 "filters": [{"filter": "envoy.filters.network.tcp_proxy", "rds": null, "cluster": "outbound|27017||mongo.default.svc.cluster.local"}]},
                {"name": "virtualInbound", "address": "0.0.0.0:15006", "type": "HTTP",
                 "filters": [{"filter": "envoy.filters.network.http_connection_manager", "rds": null, "inlineRoute": "inbound|http|9080", "cluster": null}]},
                {"name": "virtualOutbound", "address": "127.0.0.1:15001", "type": "HTTP",
                 "filters": [{"filter": "mixer", "rds": null, "cluster": null},
                             {"filter": "envoy.filters.network.http_connection_manager", "rds": "http_proxy", "cluster": null}]},
            ]},
            "routes": {"version": "r1", "resources": [{"name": "http_proxy", "virtualHosts": [
                {"name": "reviews.default.svc.cluster.local:9080",
                 "domains": ["reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local:9080", "reviews", "reviews:9080"],
                 "routes": [
                    {"name": "default.reviews.0", "match": {"path": {"prefix": "/"}, "headers": [{"name": "end-user", "match": {"exact": "jason"}}]},
                     "action": {"clusters": [{"name": "outbound|9080|v2|reviews.default.svc.cluster.local", "weight": 100}]},
                     "virtualService": "reviews.default"},
                    {"name": "default.reviews.1", "match": {"path": {"prefix": "/"}, "headers": []},
                     "action": {"clusters": [
                        {"name": "outbound|9080|v1|reviews.default.svc.cluster.local", "weight": 50},
                        {"name": "outbound|9080|v3|reviews.default.svc.cluster.local", "weight": 50}]},
                     "virtualService": "reviews.default"},
                 ]},
                {"name": "ratings.default.svc.cluster.local:9080", "domains": ["ratings.default.svc.cluster.local"],
                 "routes": [{"name": "default", "match": {"path": {"path": "/ratings"}, "headers": []},
                     "action": {"clusters": [{"name": "outbound|9080||ratings.default.svc.cluster.local", "weight": 100}]},
                     "virtualService": null}]},
            ]}]},
            "endpoints": {"version": "e1", "resources": [
                {"clusterName": "outbound|9080|v3|reviews.default.svc.cluster.local",
                 "endpoints": [{"address": "127.0.0.1:40001", "health": "UNKNOWN"}, {"address": "127.0.0.1:40002", "health": "UNHEALTHY"}]},
                {"clusterName": "outbound|9080||reviews.default.svc.cluster.local",
                 "endpoints": [{"address": "127.0.0.1:40001", "health": "HEALTHY"}]},
            ]},
        })
    }

    fn cells(out: &str) -> Vec<Vec<String>> {
        out.lines()
            .map(|l| {
                l.split("   ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn clusters_table() {
        let rows = cells(&render(ConfigKind::Clusters, &dump()));
        assert_eq!(
            rows[0],
            ["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE"]
        );
        // Sorted by service, port, subset (BlackHoleCluster sorts first).
        assert_eq!(rows[1], ["BlackHoleCluster", "-", "-", "-", "STATIC"]);
        assert_eq!(
            rows[2],
            [
                "reviews.default.svc.cluster.local",
                "9080",
                "-",
                "OUTBOUND",
                "EDS"
            ]
        );
        assert_eq!(
            rows[3],
            [
                "reviews.default.svc.cluster.local",
                "9080",
                "v3",
                "OUTBOUND",
                "EDS"
            ]
        );
    }

    #[test]
    fn listeners_table() {
        let rows = cells(&render(ConfigKind::Listeners, &dump()));
        assert_eq!(rows[0], ["ADDRESS", "PORT", "TYPE", "NAME", "DESTINATION"]);
        assert_eq!(
            rows[1],
            [
                "0.0.0.0",
                "27017",
                "TCP",
                "0.0.0.0_27017",
                "Cluster: outbound|27017||mongo.default.svc.cluster.local"
            ]
        );
        assert_eq!(
            rows[2],
            [
                "0.0.0.0",
                "15006",
                "HTTP",
                "virtualInbound",
                "Inline Route: inbound|http|9080"
            ]
        );
        assert_eq!(
            rows[3],
            [
                "127.0.0.1",
                "15001",
                "HTTP",
                "virtualOutbound",
                "Route: http_proxy"
            ]
        );
    }

    #[test]
    fn routes_table() {
        let rows = cells(&render(ConfigKind::Routes, &dump()));
        assert_eq!(
            rows[0],
            ["NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE", "DESTINATION"]
        );
        assert_eq!(
            rows[1],
            [
                "http_proxy",
                "reviews +3 more",
                "/* end-user=jason",
                "reviews.default",
                "outbound|9080|v2|reviews.default.svc.cluster.local"
            ]
        );
        assert_eq!(
            rows[2],
            [
                "http_proxy",
                "reviews +3 more",
                "/*",
                "reviews.default",
                "outbound|9080|v1|reviews.default.svc.cluster.local 50%, outbound|9080|v3|reviews.default.svc.cluster.local 50%"
            ]
        );
        assert_eq!(
            rows[3],
            [
                "http_proxy",
                "ratings.default.svc.cluster.local",
                "/ratings",
                "-",
                "outbound|9080||ratings.default.svc.cluster.local"
            ]
        );
        assert_eq!(route_match(&json!({"path": {"prefix": "/api/"}})), "/api/*");
        assert_eq!(route_match(&json!({"path": {"prefix": "/api"}})), "/api*");
        assert_eq!(
            route_match(&json!({"path": {"regex": "/v[0-9]+"}})),
            "regex:/v[0-9]+"
        );
    }

    #[test]
    fn endpoints_table() {
        let rows = cells(&render(ConfigKind::Endpoints, &dump()));
        assert_eq!(rows[0], ["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"]);
        assert_eq!(
            rows[1],
            [
                "127.0.0.1:40001",
                "HEALTHY",
                "CONFIGURED",
                "outbound|9080|v3|reviews.default.svc.cluster.local"
            ]
        );
        assert_eq!(
            rows[2],
            [
                "127.0.0.1:40002",
                "UNHEALTHY",
                "CONFIGURED",
                "outbound|9080|v3|reviews.default.svc.cluster.local"
            ]
        );
        assert_eq!(
            rows[3],
            [
                "127.0.0.1:40001",
                "HEALTHY",
                "-",
                "outbound|9080||reviews.default.svc.cluster.local"
            ]
        );
    }

    #[test]
    fn empty_dump_gives_headers_only() {
        for kind in [
            ConfigKind::Clusters,
            ConfigKind::Listeners,
            ConfigKind::Routes,
            ConfigKind::Endpoints,
        ] {
            assert_eq!(render(kind, &json!({})).lines().count(), 1, "{kind:?}");
        }
    }
}
