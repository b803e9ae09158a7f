//! How a cluster finds its endpoints (Envoy `Cluster.type`): EDS, inline static endpoints,
//! DNS names re-resolved periodically, or the downstream connection's original destination.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// Envoy's default `dns_refresh_rate`.
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(5);

/// A cluster's discovery type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Discovery {
    /// Endpoints from EDS (subscribed under `Cluster::eds_name`).
    Eds,
    /// Endpoints inline in `load_assignment` (none: Istio's `BlackHoleCluster`).
    Static,
    /// `STRICT_DNS` / `LOGICAL_DNS`: `load_assignment` names hosts, resolved every refresh.
    Dns(Arc<DnsSpec>),
    /// `ORIGINAL_DST`: the downstream connection's original destination (`PassthroughCluster`).
    OriginalDst,
}

/// `STRICT_DNS` keeps every resolved address; `LOGICAL_DNS` only the first one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DnsMode {
    Strict,
    Logical,
}

/// Envoy `dns_lookup_family`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LookupFamily {
    /// IPv6 addresses when there are any, else IPv4 (Envoy's default).
    #[default]
    Auto,
    V4Only,
    V6Only,
    /// IPv4 addresses when there are any, else IPv6.
    V4Preferred,
    /// Both.
    All,
}

impl LookupFamily {
    /// The addresses this family keeps out of `addrs` (order kept).
    pub fn filter(self, addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
        let v4: Vec<SocketAddr> = addrs.iter().copied().filter(|a| a.is_ipv4()).collect();
        let v6: Vec<SocketAddr> = addrs.iter().copied().filter(|a| a.is_ipv6()).collect();
        match self {
            LookupFamily::V4Only => v4,
            LookupFamily::V6Only => v6,
            LookupFamily::Auto if v6.is_empty() => v4,
            LookupFamily::Auto => v6,
            LookupFamily::V4Preferred if v4.is_empty() => v6,
            LookupFamily::V4Preferred => v4,
            LookupFamily::All => addrs,
        }
    }
}

/// A DNS cluster's hosts and how they are resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsSpec {
    pub mode: DnsMode,
    pub family: LookupFamily,
    pub refresh: Duration,
    pub targets: Vec<DnsTarget>,
}

/// One `lb_endpoint` of a DNS cluster: a host name (or IP) and port, with its weight,
/// priority and locality carried to every address it resolves to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsTarget {
    pub host: String,
    pub port: u16,
    pub weight: u32,
    pub priority: u32,
    pub locality: Option<Locality>,
}

/// Envoy `Locality`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub sub_zone: String,
}

/// The original destination of the downstream connection or request, as a request extension:
/// the capture listener sets it from `SO_ORIGINAL_DST`; without it an `ORIGINAL_DST` cluster
/// uses the request's authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginalDestination(pub SocketAddr);

/// The destination named by an authority `host[:port]` (`default_port` when it has none), when
/// the host is an IP address; `Err(host, port)` when it is a name to resolve.
pub fn authority_target(
    authority: &str,
    default_port: u16,
) -> Option<Result<SocketAddr, (String, u16)>> {
    let (host, port) = split_authority(authority)?;
    let port = match port {
        Some(p) => p.parse::<u16>().ok()?,
        None => default_port,
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => Some(Ok(SocketAddr::new(ip, port))),
        Err(_) if !bare.is_empty() => Some(Err((bare.to_string(), port))),
        Err(_) => None,
    }
}

fn split_authority(a: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = a.strip_prefix('[') {
        let (_, after) = rest.split_once(']')?;
        let host_len = a.len() - after.len();
        return match after.strip_prefix(':') {
            Some(p) => Some((&a[..host_len], Some(p))),
            None if after.is_empty() => Some((a, None)),
            None => None,
        };
    }
    match a.rsplit_once(':') {
        Some((h, p)) => Some((h, Some(p))),
        None => Some((a, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_filter_addresses() {
        let v4: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        let both = vec![v6, v4];
        assert_eq!(LookupFamily::V4Only.filter(both.clone()), vec![v4]);
        assert_eq!(LookupFamily::V6Only.filter(both.clone()), vec![v6]);
        assert_eq!(LookupFamily::Auto.filter(both.clone()), vec![v6]);
        assert_eq!(LookupFamily::Auto.filter(vec![v4]), vec![v4]);
        assert_eq!(LookupFamily::V4Preferred.filter(both.clone()), vec![v4]);
        assert_eq!(LookupFamily::V4Preferred.filter(vec![v6]), vec![v6]);
        assert_eq!(LookupFamily::All.filter(both.clone()), both);
    }

    #[test]
    fn authority_targets() {
        let ip = |s: &str| Some(Ok(s.parse::<SocketAddr>().unwrap()));
        assert_eq!(authority_target("10.0.0.1:8080", 80), ip("10.0.0.1:8080"));
        assert_eq!(authority_target("10.0.0.1", 80), ip("10.0.0.1:80"));
        assert_eq!(authority_target("[::1]:9", 80), ip("[::1]:9"));
        assert_eq!(authority_target("[::1]", 80), ip("[::1]:80"));
        assert_eq!(
            authority_target("example.com:443", 80),
            Some(Err(("example.com".into(), 443)))
        );
        assert_eq!(authority_target("example.com:x", 80), None);
        assert_eq!(authority_target("", 80), None);
    }
}
