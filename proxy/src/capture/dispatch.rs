//! Where a captured outbound connection goes, decided from its original destination port and
//! the applied configuration, like Envoy's `virtualOutbound` with `use_original_dst`: a TCP
//! port's `tcp_proxy` listener, an HTTP port's routes (by Host), else the outbound traffic
//! policy (pass through to the original destination, or refuse).

use serde::Serialize;

use crate::xds::Config;

/// The sidecar's outbound listener (its RDS table routes every HTTP service port by Host).
const OUTBOUND_LISTENER: &str = crate::run::OUTBOUND_LISTENER;

/// Istio's cluster for traffic to destinations outside the registry (ALLOW_ANY).
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// Istio's cluster that drops traffic to destinations outside the registry (REGISTRY_ONLY).
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";

/// MeshConfig `outboundTrafficPolicy.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundPolicy {
    /// Unknown destinations are reached directly (Istio's default).
    #[default]
    #[value(name = "ALLOW_ANY", alias = "allow-any")]
    AllowAny,
    /// Only destinations in the service registry are reachable.
    #[value(name = "REGISTRY_ONLY", alias = "registry-only")]
    RegistryOnly,
}

impl OutboundPolicy {
    /// What Pilot says, as Istio does it: the `virtualOutbound` listener's catch-all
    /// `tcp_proxy` names `PassthroughCluster` (ALLOW_ANY) or `BlackHoleCluster` (REGISTRY_ONLY).
    /// `fallback` when Pilot says neither.
    pub fn of_config(config: &Config, fallback: OutboundPolicy) -> OutboundPolicy {
        let cluster = config
            .listeners
            .get(OUTBOUND_LISTENER)
            .and_then(|l| l.tcp.as_ref())
            .and_then(|t| t.chain(None))
            .and_then(|c| c.clusters.first())
            .map(|(c, _)| c.as_str());
        match cluster {
            Some(PASSTHROUGH_CLUSTER) => OutboundPolicy::AllowAny,
            Some(BLACKHOLE_CLUSTER) => OutboundPolicy::RegistryOnly,
            _ => fallback,
        }
    }
}

/// The protocol a port is declared with, by what Pilot sent for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortKind {
    /// A `tcp_proxy` listener `0.0.0.0_<port>` (TCP, TLS, Mongo, MySQL, Redis ports).
    Tcp(String),
    /// HTTP, routed by the named listener's route table.
    Http(String),
    /// Nothing in the registry uses the port: sniff, then the outbound traffic policy.
    Unknown,
}

/// Which listener serves connections whose original destination port is `port`.
pub fn port_kind(config: &Config, port: u16) -> PortKind {
    let name = format!("0.0.0.0_{port}");
    if let Some(l) = config.listeners.get(&name) {
        if l.tcp.is_some() {
            return PortKind::Tcp(name);
        }
        if l.route_config_name.is_some() {
            return PortKind::Http(name);
        }
    }
    let suffix = format!(":{port}");
    let http = config.route_table_for(OUTBOUND_LISTENER).is_some_and(|t| {
        t.virtual_hosts
            .iter()
            .any(|vh| vh.domains.iter().any(|d| d.ends_with(&suffix)))
    });
    if http {
        PortKind::Http(OUTBOUND_LISTENER.to_string())
    } else {
        PortKind::Unknown
    }
}

/// `host` with `:port` added when it names no port, so that a service with several ports is
/// routed by the port the application dialled (`reviews` → `reviews:9080`).
pub fn authority_with_port(host: &str, port: u16) -> String {
    let has_port = match host.rsplit_once(':') {
        // `[v6]` alone has colons inside the brackets only.
        Some((h, p)) => !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.is_empty(),
        None => false,
    } && !host.ends_with(']');
    if has_port {
        host.to_string()
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::routing::{RouteTable, VirtualHost};
    use crate::tcp::TcpProxy;
    use crate::xds::Listener;

    fn listener(name: &str, route: Option<&str>, tcp: Option<&str>) -> (String, Listener) {
        (
            name.to_string(),
            Listener {
                name: name.to_string(),
                address: None,
                route_config_name: route.map(str::to_string),
                inbound: None,
                tcp: tcp.map(|c| Arc::new(TcpProxy::single(vec![(c.to_string(), 1)]))),
                mixer: None,
            },
        )
    }

    fn config() -> Config {
        let mut c = Config::default();
        c.listeners.extend([
            listener(OUTBOUND_LISTENER, Some("http_proxy"), None),
            listener(
                "0.0.0.0_3306",
                None,
                Some("outbound|3306||db.default.svc.cluster.local"),
            ),
            listener("0.0.0.0_8443", Some("8443"), None),
        ]);
        let fqdn = "reviews.default.svc.cluster.local";
        c.routes.insert(
            "http_proxy".into(),
            Arc::new(RouteTable::new(
                "http_proxy".into(),
                vec![VirtualHost {
                    name: format!("{fqdn}:9080"),
                    domains: vec![fqdn.into(), format!("{fqdn}:9080")],
                    routes: vec![],
                }],
            )),
        );
        c
    }

    #[test]
    fn ports_by_what_pilot_sent() {
        let c = config();
        assert_eq!(
            port_kind(&c, 3306),
            PortKind::Tcp("0.0.0.0_3306".to_string())
        );
        assert_eq!(
            port_kind(&c, 9080),
            PortKind::Http(OUTBOUND_LISTENER.to_string())
        );
        assert_eq!(
            port_kind(&c, 8443),
            PortKind::Http("0.0.0.0_8443".to_string())
        );
        assert_eq!(port_kind(&c, 5432), PortKind::Unknown);
        assert_eq!(port_kind(&Config::default(), 9080), PortKind::Unknown);
    }

    #[test]
    fn policy_from_the_outbound_catch_all() {
        let mut c = config();
        assert_eq!(
            OutboundPolicy::of_config(&c, OutboundPolicy::RegistryOnly),
            OutboundPolicy::RegistryOnly,
            "Pilot said nothing: the flag"
        );
        c.listeners.extend([listener(
            OUTBOUND_LISTENER,
            Some("http_proxy"),
            Some(BLACKHOLE_CLUSTER),
        )]);
        assert_eq!(
            OutboundPolicy::of_config(&c, OutboundPolicy::AllowAny),
            OutboundPolicy::RegistryOnly
        );
        c.listeners.extend([listener(
            OUTBOUND_LISTENER,
            Some("http_proxy"),
            Some(PASSTHROUGH_CLUSTER),
        )]);
        assert_eq!(
            OutboundPolicy::of_config(&c, OutboundPolicy::RegistryOnly),
            OutboundPolicy::AllowAny
        );
    }

    #[test]
    fn authority_gets_the_dialled_port() {
        assert_eq!(authority_with_port("reviews", 9080), "reviews:9080");
        assert_eq!(authority_with_port("reviews:9080", 80), "reviews:9080");
        assert_eq!(authority_with_port("[::1]", 80), "[::1]:80");
        assert_eq!(authority_with_port("[::1]:81", 80), "[::1]:81");
    }
}
