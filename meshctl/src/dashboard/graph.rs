//! The service graph and golden signals, computed from the proxies' Istio standard metrics.
//!
//! A [`Snapshot`] holds the counters of every edge (calling workload → called service and
//! version) at one instant, summed over every proxy. The graph over a window is the difference of
//! two snapshots: request rate, 5xx error rate and p50/p99 latency from the
//! `istio_request_duration_milliseconds` buckets, as Prometheus' `rate()` and
//! `histogram_quantile()` would compute them. Request counts come from the client side
//! (`reporter="source"`), which sees every attempt, including those that never reached the
//! server; whether an edge is mutual TLS comes from the server side (`reporter="destination"`),
//! the only side that knows.

use std::collections::BTreeMap;

use serde::Serialize;

use super::exposition::Sample;

/// A graph node: one version of one app (or a workload without an `app` label).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Node {
    pub service: String,
    pub version: String,
}

impl Node {
    fn new(service: &str, version: &str) -> Self {
        Node {
            service: service.to_string(),
            version: version.to_string(),
        }
    }

    /// `reviews v2`, or `istio-ingressgateway` without a version.
    pub fn id(&self) -> String {
        if self.version.is_empty() || self.version == "unknown" {
            self.service.clone()
        } else {
            format!("{} {}", self.service, self.version)
        }
    }
}

/// One edge of the graph.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EdgeKey {
    pub source: Node,
    pub destination: Node,
}

/// Counters of one edge at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    pub requests: f64,
    /// Requests answered with a 5xx.
    pub errors: f64,
    /// Requests the server side saw over mutual TLS.
    pub mtls_requests: f64,
    /// Requests the server side saw at all.
    pub server_requests: f64,
    /// Cumulative duration buckets: upper bound (ms) → count.
    pub buckets: BTreeMap<Bound, f64>,
}

/// A histogram bucket's upper bound, ordered (`+Inf` last).
#[derive(Debug, Clone, Copy)]
pub struct Bound(pub f64);

impl PartialEq for Bound {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Bound {}

impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Every edge's counters at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub edges: BTreeMap<EdgeKey, Counters>,
}

fn source_node(s: &Sample) -> Node {
    let app = s.label("source_app");
    let name = if app.is_empty() || app == "unknown" {
        s.label("source_workload")
    } else {
        app
    };
    Node::new(name, s.label("source_version"))
}

fn destination_node(s: &Sample) -> Node {
    let svc = s.label("destination_service_name");
    let name = if svc.is_empty() || svc == "unknown" {
        s.label("destination_app")
    } else {
        svc
    };
    Node::new(name, s.label("destination_version"))
}

fn key(s: &Sample) -> EdgeKey {
    EdgeKey {
        source: source_node(s),
        destination: destination_node(s),
    }
}

impl Snapshot {
    /// Adds one proxy's samples (call once per proxy scraped).
    pub fn add(&mut self, samples: &[Sample]) {
        for s in samples {
            let reporter = s.label("reporter");
            match (s.name.as_str(), reporter) {
                ("istio_requests_total", "source") => {
                    let c = self.edges.entry(key(s)).or_default();
                    c.requests += s.value;
                    if s.label("response_code").starts_with('5') {
                        c.errors += s.value;
                    }
                }
                ("istio_requests_total", "destination") => {
                    let c = self.edges.entry(key(s)).or_default();
                    c.server_requests += s.value;
                    if s.label("connection_security_policy") == "mutual_tls" {
                        c.mtls_requests += s.value;
                    }
                }
                ("istio_request_duration_milliseconds_bucket", "source") => {
                    let le = match s.label("le") {
                        "+Inf" => f64::INFINITY,
                        v => match v.parse() {
                            Ok(v) => v,
                            Err(_) => continue,
                        },
                    };
                    *self
                        .edges
                        .entry(key(s))
                        .or_default()
                        .buckets
                        .entry(Bound(le))
                        .or_default() += s.value;
                }
                _ => {}
            }
        }
    }
}

/// One edge over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Edge {
    pub source: String,
    pub destination: String,
    /// Requests per second.
    pub rps: f64,
    /// Fraction of requests answered with a 5xx (0 without requests).
    pub error_rate: f64,
    /// Latency quantiles in ms (None without requests).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Every request the server side saw in the window (or, without traffic in the window, ever)
    /// was mutual TLS.
    pub mtls: bool,
    /// Requests ever counted on this edge.
    pub total: f64,
}

/// The graph over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Graph {
    pub window_seconds: f64,
    pub nodes: Vec<NodeView>,
    pub edges: Vec<Edge>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeView {
    pub id: String,
    pub service: String,
    pub version: String,
    /// Requests per second into this node.
    pub rps_in: f64,
}

/// `now - before`, where a counter that went down (a proxy restarted) counts from zero.
fn delta(now: f64, before: f64) -> f64 {
    if now >= before { now - before } else { now }
}

/// The counters gained between `before` and `now`.
pub fn diff(now: &Counters, before: Option<&Counters>) -> Counters {
    let empty = Counters::default();
    let b = before.unwrap_or(&empty);
    Counters {
        requests: delta(now.requests, b.requests),
        errors: delta(now.errors, b.errors),
        mtls_requests: delta(now.mtls_requests, b.mtls_requests),
        server_requests: delta(now.server_requests, b.server_requests),
        buckets: now
            .buckets
            .iter()
            .map(|(le, v)| (*le, delta(*v, b.buckets.get(le).copied().unwrap_or(0.0))))
            .collect(),
    }
}

/// `histogram_quantile(q, ...)` over cumulative buckets, as Prometheus computes it: linear
/// interpolation inside the bucket holding the q-th request; the highest finite bound when it
/// falls in `+Inf`.
pub fn quantile(q: f64, buckets: &BTreeMap<Bound, f64>) -> Option<f64> {
    let total = buckets
        .get(&Bound(f64::INFINITY))
        .copied()
        .or_else(|| buckets.values().last().copied())?;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = 0.0;
    let mut below = 0.0;
    for (Bound(le), count) in buckets {
        if *count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let in_bucket = count - below;
            if in_bucket <= 0.0 {
                return Some(*le);
            }
            return Some(lower + (le - lower) * (rank - below) / in_bucket);
        }
        lower = *le;
        below = *count;
    }
    Some(lower)
}

/// The graph between two snapshots `seconds` apart (`before` None: since the proxies started).
pub fn graph(now: &Snapshot, before: Option<&Snapshot>, seconds: f64) -> Graph {
    let seconds = seconds.max(f64::EPSILON);
    let mut nodes: BTreeMap<Node, f64> = BTreeMap::new();
    let mut edges = Vec::new();
    for (k, c) in &now.edges {
        let d = diff(c, before.and_then(|b| b.edges.get(k)));
        let rps = d.requests / seconds;
        let mtls = if d.server_requests > 0.0 {
            d.mtls_requests >= d.server_requests
        } else {
            c.server_requests > 0.0 && c.mtls_requests >= c.server_requests
        };
        nodes.entry(k.source.clone()).or_default();
        *nodes.entry(k.destination.clone()).or_default() += rps;
        edges.push(Edge {
            source: k.source.id(),
            destination: k.destination.id(),
            rps,
            error_rate: if d.requests > 0.0 {
                d.errors / d.requests
            } else {
                0.0
            },
            p50_ms: quantile(0.5, &d.buckets),
            p99_ms: quantile(0.99, &d.buckets),
            mtls,
            total: c.requests,
        });
    }
    Graph {
        window_seconds: seconds,
        nodes: nodes
            .into_iter()
            .map(|(n, rps_in)| NodeView {
                id: n.id(),
                service: n.service,
                version: n.version,
                rps_in,
            })
            .collect(),
        edges,
    }
}

/// A service's golden signals at one point of its history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signals {
    /// Seconds before now at which this step ends.
    pub ago_seconds: f64,
    pub rps: f64,
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// The golden signals of requests into `service` (every version) between two snapshots.
pub fn service_signals(
    service: &str,
    now: &Snapshot,
    before: Option<&Snapshot>,
    seconds: f64,
    ago_seconds: f64,
) -> Signals {
    let mut sum = Counters::default();
    for (k, c) in now
        .edges
        .iter()
        .filter(|(k, _)| k.destination.service == service)
    {
        let d = diff(c, before.and_then(|b| b.edges.get(k)));
        sum.requests += d.requests;
        sum.errors += d.errors;
        for (le, v) in d.buckets {
            *sum.buckets.entry(le).or_default() += v;
        }
    }
    let seconds = seconds.max(f64::EPSILON);
    Signals {
        ago_seconds,
        rps: sum.requests / seconds,
        error_rate: if sum.requests > 0.0 {
            sum.errors / sum.requests
        } else {
            0.0
        },
        p50_ms: quantile(0.5, &sum.buckets),
        p99_ms: quantile(0.99, &sum.buckets),
    }
}

#[cfg(test)]
mod tests {
    use super::super::exposition::parse;
    use super::*;

    fn page(reviews_v1: u32, reviews_v3: u32, errors: u32) -> String {
        let src =
            "source_app=\"productpage\",source_version=\"v1\",source_workload=\"productpage-v1\"";
        let mut s = String::new();
        for (version, n) in [("v1", reviews_v1), ("v3", reviews_v3)] {
            let dst =
                format!("destination_service_name=\"reviews\",destination_version=\"{version}\"");
            s.push_str(&format!(
                "istio_requests_total{{reporter=\"source\",{src},{dst},response_code=\"200\"}} {n}\n"
            ));
            s.push_str(&format!(
                "istio_requests_total{{reporter=\"destination\",{src},{dst},response_code=\"200\",connection_security_policy=\"mutual_tls\"}} {n}\n"
            ));
            // Every request took between 5 and 10 ms.
            for le in ["1", "5"] {
                s.push_str(&format!(
                    "istio_request_duration_milliseconds_bucket{{reporter=\"source\",{src},{dst},le=\"{le}\"}} 0\n"
                ));
            }
            for le in ["10", "+Inf"] {
                s.push_str(&format!(
                    "istio_request_duration_milliseconds_bucket{{reporter=\"source\",{src},{dst},le=\"{le}\"}} {n}\n"
                ));
            }
        }
        let dst = "destination_service_name=\"reviews\",destination_version=\"v1\"";
        s.push_str(&format!(
            "istio_requests_total{{reporter=\"source\",{src},{dst},response_code=\"503\"}} {errors}\n"
        ));
        s
    }

    fn snapshot(text: &str) -> Snapshot {
        let mut snap = Snapshot::default();
        snap.add(&parse(text, "istio_"));
        snap
    }

    fn edge<'a>(g: &'a Graph, to: &str) -> &'a Edge {
        g.edges.iter().find(|e| e.destination == to).unwrap()
    }

    #[test]
    fn rates_follow_the_counters_between_snapshots() {
        let before = snapshot(&page(100, 0, 0));
        let now = snapshot(&page(100, 50, 10));
        let g = graph(&now, Some(&before), 10.0);
        let v1 = edge(&g, "reviews v1");
        let v3 = edge(&g, "reviews v3");
        assert_eq!(v1.source, "productpage v1");
        // 10 new requests on v1, all 503.
        assert_eq!(v1.rps, 1.0);
        assert_eq!(v1.error_rate, 1.0);
        assert!(v1.p50_ms.is_none(), "503s carried no duration samples here");
        assert_eq!(v3.rps, 5.0);
        assert_eq!(v3.error_rate, 0.0);
        assert!(v3.mtls);
        let p50 = v3.p50_ms.unwrap();
        assert!((5.0..=10.0).contains(&p50), "{p50}");
        assert_eq!(v3.total, 50.0);
        let reviews_v3 = g.nodes.iter().find(|n| n.id == "reviews v3").unwrap();
        assert_eq!(reviews_v3.rps_in, 5.0);
        assert!(g.nodes.iter().any(|n| n.id == "productpage v1"));
    }

    #[test]
    fn a_restarted_proxy_counts_from_zero() {
        let before = snapshot(&page(100, 0, 0));
        let now = snapshot(&page(20, 0, 0));
        let g = graph(&now, Some(&before), 10.0);
        assert_eq!(edge(&g, "reviews v1").rps, 2.0);
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let b: BTreeMap<Bound, f64> = [(1.0, 0.0), (10.0, 100.0), (f64::INFINITY, 100.0)]
            .into_iter()
            .map(|(k, v)| (Bound(k), v))
            .collect();
        assert_eq!(quantile(0.5, &b), Some(5.5));
        let all_inf: BTreeMap<Bound, f64> = [(10.0, 0.0), (f64::INFINITY, 4.0)]
            .into_iter()
            .map(|(k, v)| (Bound(k), v))
            .collect();
        assert_eq!(quantile(0.99, &all_inf), Some(10.0));
        assert_eq!(quantile(0.5, &BTreeMap::new()), None);
    }

    #[test]
    fn service_signals_sum_every_version() {
        let before = snapshot(&page(0, 0, 0));
        let now = snapshot(&page(30, 10, 10));
        let s = service_signals("reviews", &now, Some(&before), 10.0, 0.0);
        assert_eq!(s.rps, 5.0);
        assert_eq!(s.error_rate, 0.2);
    }
}
