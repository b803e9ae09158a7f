//! The proxy's model of a listener's `tcp_proxy` filter chains.

use serde::Serialize;

/// One filter chain: the TLS server names it matches (none: any connection) and its
/// clusters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TcpChain {
    /// `filter_chain_match.server_names`: exact names or `*.suffix` wildcards.
    pub server_names: Vec<String>,
    /// (cluster name, weight); weights are positive.
    pub clusters: Vec<(String, u32)>,
}

/// Where a TCP listener sends its connections: the chain matching the connection's SNI (TLS
/// passthrough), else the chain without server names; a cluster of it picked by weight.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TcpProxy {
    pub chains: Vec<TcpChain>,
}

impl TcpProxy {
    /// A listener with one chain for every connection.
    pub fn single(clusters: Vec<(String, u32)>) -> Self {
        TcpProxy {
            chains: vec![TcpChain {
                server_names: vec![],
                clusters,
            }],
        }
    }

    /// Whether a connection's SNI is needed to choose its chain.
    pub fn routes_by_sni(&self) -> bool {
        self.chains.iter().any(|c| !c.server_names.is_empty())
    }

    /// The chain for a connection with `sni`: an exact name first, then the longest wildcard,
    /// then a chain without names (Envoy's filter chain match order).
    pub fn chain(&self, sni: Option<&str>) -> Option<&TcpChain> {
        if let Some(sni) = sni.map(str::to_ascii_lowercase) {
            if let Some(c) = self
                .chains
                .iter()
                .find(|c| c.server_names.iter().any(|n| n.eq_ignore_ascii_case(&sni)))
            {
                return Some(c);
            }
            let wildcard = self
                .chains
                .iter()
                .flat_map(|c| c.server_names.iter().map(move |n| (n, c)))
                .filter_map(|(n, c)| {
                    let suffix = n.strip_prefix('*')?.to_ascii_lowercase();
                    (sni.ends_with(&suffix) && sni.len() > suffix.len())
                        .then_some((suffix.len(), c))
                })
                .max_by_key(|(len, _)| *len);
            if let Some((_, c)) = wildcard {
                return Some(c);
            }
        }
        self.chains.iter().find(|c| c.server_names.is_empty())
    }
}

impl TcpChain {
    /// The cluster for a connection; `roll` is uniform over `u32`.
    pub fn pick(&self, roll: u32) -> Option<&str> {
        let total: u64 = self.clusters.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return self.clusters.first().map(|(c, _)| c.as_str());
        }
        let mut at = u64::from(roll) * total / (u64::from(u32::MAX) + 1);
        for (c, w) in &self.clusters {
            let w = u64::from(*w);
            if at < w {
                return Some(c);
            }
            at -= w;
        }
        self.clusters.last().map(|(c, _)| c.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(names: &[&str], cluster: &str) -> TcpChain {
        TcpChain {
            server_names: names.iter().map(|s| s.to_string()).collect(),
            clusters: vec![(cluster.into(), 1)],
        }
    }

    #[test]
    fn weighted_pick_follows_the_weights() {
        let c = TcpChain {
            server_names: vec![],
            clusters: vec![("a".into(), 25), ("b".into(), 75)],
        };
        assert_eq!(c.pick(0), Some("a"));
        assert_eq!(c.pick(u32::MAX / 4 - 1), Some("a"));
        assert_eq!(c.pick(u32::MAX / 4 + 1), Some("b"));
        assert_eq!(c.pick(u32::MAX), Some("b"));
        let one = TcpProxy::single(vec![("only".into(), 1)]);
        assert_eq!(one.chain(None).unwrap().pick(12345), Some("only"));
        assert!(!one.routes_by_sni());
    }

    #[test]
    fn chain_by_sni_exact_then_wildcard_then_default() {
        let p = TcpProxy {
            chains: vec![
                chain(&["*.example.com"], "wild"),
                chain(&["*.a.example.com"], "longer-wild"),
                chain(&["db.example.com"], "exact"),
                chain(&[], "default"),
            ],
        };
        assert!(p.routes_by_sni());
        let pick = |sni: Option<&str>| p.chain(sni).map(|c| c.clusters[0].0.as_str());
        assert_eq!(pick(Some("DB.example.com")), Some("exact"));
        assert_eq!(pick(Some("x.a.example.com")), Some("longer-wild"));
        assert_eq!(pick(Some("web.example.com")), Some("wild"));
        assert_eq!(pick(Some("example.com")), Some("default"));
        assert_eq!(pick(None), Some("default"));
        let strict = TcpProxy {
            chains: vec![chain(&["db.example.com"], "exact")],
        };
        assert_eq!(strict.chain(Some("other")), None);
    }
}
