//! Choosing the route for a request.

use http::HeaderMap;

use super::model::{Route, RouteTable, VirtualHost};

/// The outcome of route selection.
#[derive(Debug, Clone, Copy)]
pub struct Selected<'a> {
    pub virtual_host: &'a VirtualHost,
    pub route: &'a Route,
    /// The cluster to forward to; `None` for a redirect or direct response route.
    pub cluster: Option<&'a str>,
}

/// Selects the route for `authority`, `path` (the query, if any, is ignored) and `headers`;
/// `random` picks among weighted clusters. `None` when no virtual host or no route matches.
pub fn select<'a>(
    table: &'a RouteTable,
    authority: &str,
    path: &str,
    headers: &HeaderMap,
    random: u32,
) -> Option<Selected<'a>> {
    let virtual_host = table.virtual_host(authority)?;
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let route = virtual_host.routes.iter().find(|r| {
        r.path.matches(path)
            && r.headers.iter().all(|h| {
                let v = headers.get(h.name.as_str()).and_then(|v| v.to_str().ok());
                h.matches(v)
            })
    })?;
    Some(Selected {
        virtual_host,
        route,
        cluster: route.action.pick(random),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{HeaderMatch, HeaderMatchKind, PathMatch, RouteAction};

    fn route(name: &str, path: PathMatch, headers: Vec<HeaderMatch>, action: RouteAction) -> Route {
        Route {
            name: name.into(),
            path,
            headers,
            action,
            forwarding: Default::default(),
        }
    }

    fn table() -> RouteTable {
        let reviews = VirtualHost {
            name: "reviews.default.svc.cluster.local:9080".into(),
            domains: vec![
                "reviews.default.svc.cluster.local".into(),
                "reviews".into(),
                "reviews:9080".into(),
            ],
            routes: vec![
                route(
                    "jason",
                    PathMatch::Prefix("/".into()),
                    vec![HeaderMatch {
                        name: "end-user".into(),
                        kind: HeaderMatchKind::Exact("jason".into()),
                        invert: false,
                    }],
                    RouteAction::Cluster(
                        "outbound|9080|v2|reviews.default.svc.cluster.local".into(),
                    ),
                ),
                route(
                    "exact",
                    PathMatch::Exact("/exact".into()),
                    vec![],
                    RouteAction::Cluster("exact-cluster".into()),
                ),
                route(
                    "regex",
                    PathMatch::Regex(regex::Regex::new("^(?:/r/[0-9]+)$").unwrap()),
                    vec![],
                    RouteAction::Cluster("regex-cluster".into()),
                ),
                route(
                    "default",
                    PathMatch::Prefix("/".into()),
                    vec![],
                    RouteAction::Weighted {
                        clusters: vec![("v1".into(), 50), ("v3".into(), 50)],
                        total: 100,
                    },
                ),
            ],
        };
        let any = VirtualHost {
            name: "any".into(),
            domains: vec!["*".into()],
            routes: vec![route(
                "api",
                PathMatch::Prefix("/api".into()),
                vec![],
                RouteAction::Cluster("api".into()),
            )],
        };
        let suffix = VirtualHost {
            name: "suffix".into(),
            domains: vec!["*.example.com".into()],
            routes: vec![route(
                "all",
                PathMatch::Prefix("/".into()),
                vec![],
                RouteAction::Cluster("example".into()),
            )],
        };
        RouteTable::new("http_proxy".into(), vec![any, reviews, suffix])
    }

    fn pick(
        t: &RouteTable,
        auth: &str,
        path: &str,
        hdr: &[(&'static str, &str)],
        r: u32,
    ) -> Option<String> {
        let mut h = HeaderMap::new();
        for (k, v) in hdr {
            h.insert(*k, v.parse().unwrap());
        }
        select(t, auth, path, &h, r).map(|s| s.cluster.unwrap_or_default().to_string())
    }

    #[test]
    fn exact_domain_beats_wildcard_listed_first() {
        let t = table();
        assert_eq!(
            pick(&t, "reviews:9080", "/x", &[], 0).as_deref(),
            Some("v1")
        );
        assert_eq!(pick(&t, "REVIEWS", "/x", &[], 99).as_deref(), Some("v3"));
        assert_eq!(pick(&t, "other", "/api/x", &[], 0).as_deref(), Some("api"));
        assert_eq!(
            pick(&t, "other", "/nope", &[], 0),
            None,
            "wildcard host but no route"
        );
    }

    #[test]
    fn port_is_stripped_when_only_the_host_is_listed() {
        let t = table();
        assert_eq!(
            pick(&t, "reviews.default.svc.cluster.local:9080", "/", &[], 0).as_deref(),
            Some("v1")
        );
        assert_eq!(
            pick(&t, "a.example.com:80", "/", &[], 0).as_deref(),
            Some("example")
        );
        assert_eq!(
            pick(&t, "example.com", "/api", &[], 0).as_deref(),
            Some("api")
        );
    }

    #[test]
    fn routes_in_order_with_headers_exact_and_regex() {
        let t = table();
        assert_eq!(
            pick(&t, "reviews", "/x", &[("end-user", "jason")], 0).as_deref(),
            Some("outbound|9080|v2|reviews.default.svc.cluster.local")
        );
        assert_eq!(
            pick(&t, "reviews", "/x", &[("end-user", "bob")], 0).as_deref(),
            Some("v1")
        );
        assert_eq!(
            pick(&t, "reviews", "/exact?q=1", &[], 0).as_deref(),
            Some("exact-cluster")
        );
        assert_eq!(
            pick(&t, "reviews", "/exact/more", &[], 0).as_deref(),
            Some("v1")
        );
        assert_eq!(
            pick(&t, "reviews", "/r/42", &[], 0).as_deref(),
            Some("regex-cluster")
        );
        assert_eq!(pick(&t, "reviews", "/r/42x", &[], 0).as_deref(), Some("v1"));
    }

    #[test]
    fn weighted_pick_follows_weights() {
        let a = RouteAction::Weighted {
            clusters: vec![("a".into(), 10), ("b".into(), 0), ("c".into(), 90)],
            total: 100,
        };
        let mut counts = [0u32; 3];
        for r in 0..1000u32 {
            match a.pick(r).unwrap() {
                "a" => counts[0] += 1,
                "b" => counts[1] += 1,
                _ => counts[2] += 1,
            }
        }
        assert_eq!(counts, [100, 0, 900]);
    }

    #[test]
    fn header_matchers() {
        let m = |kind, invert| HeaderMatch {
            name: "x".into(),
            kind,
            invert,
        };
        assert!(m(HeaderMatchKind::Present(true), false).matches(Some("")));
        assert!(!m(HeaderMatchKind::Present(true), false).matches(None));
        assert!(m(HeaderMatchKind::Present(false), false).matches(None));
        assert!(m(HeaderMatchKind::Prefix("ab".into()), false).matches(Some("abc")));
        assert!(!m(HeaderMatchKind::Prefix("ab".into()), true).matches(Some("abc")));
        assert!(m(HeaderMatchKind::Suffix("bc".into()), false).matches(Some("abc")));
        assert!(m(HeaderMatchKind::Contains("b".into()), false).matches(Some("abc")));
        assert!(!m(HeaderMatchKind::Exact("a".into()), false).matches(None));
    }
}
