//! The route table model the proxy serves from (decoded from RDS `RouteConfiguration`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;

use super::policy::{Cors, Fault, HashPolicy, HeaderPolicy, Mirror, RetryPolicy};

/// One route configuration (`http_proxy`, `http.80`, ...).
#[derive(Debug, Clone, Serialize)]
pub struct RouteTable {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
    /// Lower-cased exact domain → index into `virtual_hosts`.
    #[serde(skip)]
    exact: HashMap<String, usize>,
    /// `*.suffix` domains (suffix kept with its leading dot) → index, longest first.
    #[serde(skip)]
    suffixes: Vec<(String, usize)>,
    /// The first virtual host with domain `*`.
    #[serde(skip)]
    wildcard: Option<usize>,
}

impl RouteTable {
    /// Builds the table and its domain index. The first virtual host naming a domain wins.
    pub fn new(name: String, virtual_hosts: Vec<VirtualHost>) -> Self {
        let mut exact = HashMap::new();
        let mut suffixes = Vec::new();
        let mut wildcard = None;
        for (i, vh) in virtual_hosts.iter().enumerate() {
            for d in &vh.domains {
                let d = d.to_ascii_lowercase();
                if d == "*" {
                    wildcard.get_or_insert(i);
                } else if let Some(rest) = d.strip_prefix('*') {
                    suffixes.push((rest.to_string(), i));
                } else {
                    exact.entry(d).or_insert(i);
                }
            }
        }
        suffixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        RouteTable {
            name,
            virtual_hosts,
            exact,
            suffixes,
            wildcard,
        }
    }

    /// The virtual host for `authority`: exact domain, then `*.suffix`, then `*`. An authority with
    /// a port that matches nothing is retried without the port.
    pub fn virtual_host(&self, authority: &str) -> Option<&VirtualHost> {
        let lower;
        let authority = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = authority.to_ascii_lowercase();
            lower.as_str()
        } else {
            authority
        };
        let idx = self.lookup(authority).or_else(|| {
            let (host, port) = authority.rsplit_once(':')?;
            if port.bytes().all(|b| b.is_ascii_digit()) {
                self.lookup(host)
            } else {
                None
            }
        });
        idx.or(self.wildcard)
            .and_then(|i| self.virtual_hosts.get(i))
    }

    fn lookup(&self, host: &str) -> Option<usize> {
        if let Some(i) = self.exact.get(host) {
            return Some(*i);
        }
        self.suffixes
            .iter()
            .find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
            .map(|(_, i)| *i)
    }
}

/// A virtual host: domains and ordered routes.
#[derive(Debug, Clone, Serialize)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
}

/// A route: what it matches and where it sends.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    pub name: String,
    pub path: PathMatch,
    pub headers: Vec<HeaderMatch>,
    pub action: RouteAction,
    pub forwarding: Forwarding,
}

/// What a route changes about the forwarded request, and how long it may take.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Forwarding {
    /// Envoy `prefix_rewrite`: replaces the matched prefix, or the whole path when the route
    /// matched the exact path or a regex.
    pub prefix_rewrite: Option<String>,
    /// Envoy `host_rewrite_literal`: the `Host` sent upstream.
    pub host_rewrite: Option<String>,
    /// Envoy route `timeout`, from sending the request upstream to the response headers (the
    /// request answers 504 when it runs out). `None`: no limit, Istio's default.
    pub timeout: Option<Duration>,
    /// Route-level header operations (`request_headers_to_add/remove`, `response_...`).
    pub headers: HeaderPolicy,
    /// Header operations of individual weighted clusters, by cluster name.
    pub cluster_headers: BTreeMap<String, HeaderPolicy>,
    /// `envoy.filters.http.fault` per-route config.
    pub fault: Option<Fault>,
    /// `retry_policy`; `None`: a single attempt.
    pub retry: Option<RetryPolicy>,
    /// `request_mirror_policies`.
    pub mirrors: Vec<Mirror>,
    /// `envoy.filters.http.cors` per-route config.
    pub cors: Option<Cors>,
    /// `hash_policy`, for consistent-hash clusters.
    pub hash_policy: Vec<HashPolicy>,
}

impl Route {
    /// The path (with its query) to send upstream for `path_and_query`, or `None` to keep it.
    pub fn rewritten_path(&self, path_and_query: &str) -> Option<String> {
        let new_prefix = self.forwarding.prefix_rewrite.as_deref()?;
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let rest = match &self.path {
            PathMatch::Prefix(p) => path.strip_prefix(p.as_str()).unwrap_or(""),
            PathMatch::Exact(_) | PathMatch::Regex(_) => "",
        };
        let mut out = String::with_capacity(new_prefix.len() + rest.len() + 1);
        out.push_str(new_prefix);
        out.push_str(rest);
        if out.is_empty() {
            out.push('/');
        }
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        Some(out)
    }
}

/// How a route matches the request path (query string excluded).
#[derive(Debug, Clone, Serialize)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    Regex(#[serde(serialize_with = "ser_regex")] regex::Regex),
}

impl PathMatch {
    /// Whether `path` (without query) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Exact(p) => path == p,
            PathMatch::Regex(r) => r.is_match(path),
        }
    }
}

/// A header condition on a route.
#[derive(Debug, Clone, Serialize)]
pub struct HeaderMatch {
    pub name: String,
    pub kind: HeaderMatchKind,
    pub invert: bool,
}

/// The kinds of header condition Envoy's `HeaderMatcher` expresses that the mesh uses.
#[derive(Debug, Clone, Serialize)]
pub enum HeaderMatchKind {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(#[serde(serialize_with = "ser_regex")] regex::Regex),
    Present(bool),
}

impl HeaderMatch {
    /// Whether the header value (`None` when absent) satisfies the condition.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let m = match (&self.kind, value) {
            (HeaderMatchKind::Present(p), v) => v.is_some() == *p,
            (_, None) => return false,
            (HeaderMatchKind::Exact(e), Some(v)) => v == e,
            (HeaderMatchKind::Prefix(p), Some(v)) => v.starts_with(p.as_str()),
            (HeaderMatchKind::Suffix(s), Some(v)) => v.ends_with(s.as_str()),
            (HeaderMatchKind::Contains(c), Some(v)) => v.contains(c.as_str()),
            (HeaderMatchKind::Regex(r), Some(v)) => r.is_match(v),
        };
        m != self.invert
    }
}

/// Where a route sends the request.
#[derive(Debug, Clone, Serialize)]
pub enum RouteAction {
    Cluster(String),
    /// (cluster, weight) pairs and the total weight (> 0).
    Weighted {
        clusters: Vec<(String, u32)>,
        total: u32,
    },
    /// Answer with a redirect instead of forwarding (Envoy `RedirectAction`).
    Redirect(Redirect),
    /// Answer with a fixed status and body (Envoy `DirectResponseAction`).
    DirectResponse(DirectResponse),
}

/// A response the proxy answers itself (Istio's REGISTRY_ONLY 502, for instance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectResponse {
    /// 200..=599.
    pub status: u16,
    /// `inline_string` / `inline_bytes`; empty: no body.
    #[serde(serialize_with = "ser_lossy")]
    pub body: Vec<u8>,
}

fn ser_lossy<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

/// An HTTP redirect: each part left `None` keeps the request's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub strip_query: bool,
    /// 301, 302, 303, 307 or 308.
    pub code: u16,
}

impl Redirect {
    /// The `Location` for a request to `authority` with `path_and_query`.
    pub fn location(&self, authority: &str, path_and_query: &str) -> String {
        let (req_host, req_port) = match authority.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
            _ => (authority, None),
        };
        let (req_path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let scheme = self.scheme.as_deref().unwrap_or("http");
        let host = self.host.as_deref().unwrap_or(req_host);
        let mut out = format!("{scheme}://{host}");
        match (self.port, req_port) {
            (Some(p), _) => out.push_str(&format!(":{p}")),
            (None, Some(p)) if self.host.is_none() => {
                out.push(':');
                out.push_str(p);
            }
            _ => {}
        }
        out.push_str(self.path.as_deref().unwrap_or(req_path));
        if let (Some(q), false) = (query, self.strip_query) {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}

impl RouteAction {
    /// The cluster for a random number `r` (any `u32`; reduced modulo the total weight); `None`
    /// for a redirect or a direct response.
    pub fn pick(&self, r: u32) -> Option<&str> {
        Some(match self {
            RouteAction::Redirect(_) | RouteAction::DirectResponse(_) => return None,
            RouteAction::Cluster(c) => c,
            RouteAction::Weighted { clusters, total } => {
                let mut x = r % (*total).max(1);
                for (c, w) in clusters {
                    if x < *w {
                        return Some(c);
                    }
                    x -= w;
                }
                return clusters.last().map(|(c, _)| c.as_str());
            }
        })
    }
}

fn ser_regex<S: serde::Serializer>(r: &regex::Regex, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: PathMatch, prefix_rewrite: Option<&str>) -> Route {
        Route {
            name: "r".into(),
            path,
            headers: vec![],
            action: RouteAction::Cluster("c".into()),
            forwarding: Forwarding {
                prefix_rewrite: prefix_rewrite.map(str::to_string),
                ..Default::default()
            },
        }
    }

    #[test]
    fn prefix_rewrite_replaces_the_matched_prefix_and_keeps_the_query() {
        let r = route(PathMatch::Prefix("/api/v1/".into()), Some("/v2/"));
        assert_eq!(
            r.rewritten_path("/api/v1/items?x=1").as_deref(),
            Some("/v2/items?x=1")
        );
        let whole = route(PathMatch::Exact("/old".into()), Some("/new"));
        assert_eq!(whole.rewritten_path("/old?a").as_deref(), Some("/new?a"));
        let to_root = route(PathMatch::Prefix("/app".into()), Some(""));
        assert_eq!(to_root.rewritten_path("/app").as_deref(), Some("/"));
        assert_eq!(
            route(PathMatch::Prefix("/".into()), None).rewritten_path("/x"),
            None
        );
    }

    #[test]
    fn redirect_location_keeps_what_it_does_not_set() {
        let r = Redirect {
            scheme: None,
            host: None,
            port: None,
            path: Some("/new".into()),
            strip_query: false,
            code: 301,
        };
        assert_eq!(
            r.location("reviews:9080", "/old?x=1"),
            "http://reviews:9080/new?x=1"
        );
        let r = Redirect {
            scheme: Some("https".into()),
            host: Some("example.com".into()),
            port: None,
            path: None,
            strip_query: true,
            code: 302,
        };
        assert_eq!(r.location("reviews:9080", "/a?b"), "https://example.com/a");
    }
}
