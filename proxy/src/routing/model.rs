//! The route table model the proxy serves from (decoded from RDS `RouteConfiguration`).

use std::collections::HashMap;

use serde::Serialize;

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
}

impl RouteAction {
    /// The cluster for a random number `r` (any `u32`; reduced modulo the total weight).
    pub fn pick(&self, r: u32) -> &str {
        match self {
            RouteAction::Cluster(c) => c,
            RouteAction::Weighted { clusters, total } => {
                let mut x = r % (*total).max(1);
                for (c, w) in clusters {
                    if x < *w {
                        return c;
                    }
                    x -= w;
                }
                clusters.last().map(|(c, _)| c.as_str()).unwrap_or("")
            }
        }
    }
}

fn ser_regex<S: serde::Serializer>(r: &regex::Regex, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}
