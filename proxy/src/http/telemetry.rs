//! Istio's standard request labels, and the metadata exchange that fills in the peer's
//! workload: a sidecar sends its workload name, namespace, app and version in `x-mesh-peer-*`
//! headers over mTLS (on requests to other sidecars and on responses from them); the receiving
//! sidecar reads them only over mTLS and always strips them before the application sees them.

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use crate::admin::RequestLabels;
use crate::xds::NodeInfo;

/// `x-mesh-peer-workload`.
pub static PEER_WORKLOAD: HeaderName = HeaderName::from_static("x-mesh-peer-workload");
/// `x-mesh-peer-namespace`.
pub static PEER_NAMESPACE: HeaderName = HeaderName::from_static("x-mesh-peer-namespace");
/// `x-mesh-peer-app`.
pub static PEER_APP: HeaderName = HeaderName::from_static("x-mesh-peer-app");
/// `x-mesh-peer-version`.
pub static PEER_VERSION: HeaderName = HeaderName::from_static("x-mesh-peer-version");
/// `x-mesh-destination-service`: the service FQDN the calling sidecar routed the request to
/// (the cluster's service), so the server side labels its series with the same
/// `destination_service` rather than guessing from the Host header. Istio 1.4's client sidecar
/// forwarded `destination.service.*` to the server the same way (`x-istio-attributes`).
pub static DESTINATION_SERVICE: HeaderName = HeaderName::from_static("x-mesh-destination-service");

/// The DNS suffix of service FQDNs.
const CLUSTER_DOMAIN: &str = "svc.cluster.local";

/// Envoy response flags the proxy sets.
pub mod flags {
    /// No flag.
    pub const NONE: &str = "-";
    /// No route for the request.
    pub const NO_ROUTE: &str = "NR";
    /// No healthy upstream (unknown cluster, no endpoints).
    pub const NO_HEALTHY_UPSTREAM: &str = "UH";
    /// Upstream connection failure.
    pub const UPSTREAM_CONNECT_FAILURE: &str = "UF";
    /// Upstream connection terminated during the request.
    pub const UPSTREAM_CONNECTION_TERMINATION: &str = "UC";
    /// The route timeout ran out before the upstream answered.
    pub const UPSTREAM_REQUEST_TIMEOUT: &str = "UT";
    /// Denied by the external authorizer (Mixer Check).
    pub const UNAUTHORIZED_EXTERNAL: &str = "UAEX";
}

static UNKNOWN: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("unknown"));

/// The shared `"unknown"` label value.
pub fn unknown() -> Arc<str> {
    UNKNOWN.clone()
}

fn or_unknown(s: &str) -> Arc<str> {
    if s.is_empty() {
        unknown()
    } else {
        Arc::from(s)
    }
}

/// A workload as metrics name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    pub app: Arc<str>,
    pub version: Arc<str>,
}

impl Workload {
    /// Every part `unknown`.
    pub fn unknown() -> Self {
        Workload {
            name: unknown(),
            namespace: unknown(),
            app: unknown(),
            version: unknown(),
        }
    }

    /// This proxy's workload: its workload name, namespace and `app`/`version` labels.
    pub fn of_node(node: &NodeInfo) -> Self {
        let label = |k: &str| or_unknown(node.labels.get(k).map_or("", String::as_str));
        Workload {
            name: or_unknown(node.workload_name()),
            namespace: or_unknown(&node.namespace),
            app: label("app"),
            version: label("version"),
        }
    }

    /// The peer's workload from `x-mesh-peer-*` headers; the namespace falls back to the one in
    /// the peer's SPIFFE id. Call only for headers that came over mTLS from a sidecar.
    pub fn from_peer_headers(headers: &HeaderMap, principal: &str) -> Self {
        let get = |h: &HeaderName| {
            headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map_or_else(unknown, or_unknown)
        };
        let mut namespace = get(&PEER_NAMESPACE);
        if &*namespace == "unknown"
            && let Some(ns) = namespace_of_principal(principal)
        {
            namespace = Arc::from(ns);
        }
        Workload {
            name: get(&PEER_WORKLOAD),
            namespace,
            app: get(&PEER_APP),
            version: get(&PEER_VERSION),
        }
    }

    /// Writes this workload into `x-mesh-peer-*` headers (replacing any there).
    pub fn write_peer_headers(&self, headers: &mut HeaderMap) {
        for (h, v) in [
            (&PEER_WORKLOAD, &self.name),
            (&PEER_NAMESPACE, &self.namespace),
            (&PEER_APP, &self.app),
            (&PEER_VERSION, &self.version),
        ] {
            match HeaderValue::from_str(v) {
                Ok(v) => {
                    headers.insert(h.clone(), v);
                }
                Err(_) => {
                    headers.remove(h);
                }
            }
        }
    }
}

/// Removes the `x-mesh-peer-*` and `x-mesh-destination-service` headers (one pass over the
/// names first: most messages carry none).
pub fn strip_peer_headers(headers: &mut HeaderMap) {
    if !headers.keys().any(|n| n.as_str().starts_with("x-mesh-")) {
        return;
    }
    for h in [
        &PEER_WORKLOAD,
        &PEER_NAMESPACE,
        &PEER_APP,
        &PEER_VERSION,
        &DESTINATION_SERVICE,
    ] {
        headers.remove(h);
    }
}

/// The service a calling sidecar routed to, from `x-mesh-destination-service` (call only for
/// headers that came over mTLS from a sidecar).
pub fn forwarded_destination_service(headers: &HeaderMap) -> Option<Service> {
    let fqdn = headers.get(&DESTINATION_SERVICE)?.to_str().ok()?;
    (!fqdn.is_empty()).then(|| Service::from_fqdn(fqdn))
}

/// `N` of `spiffe://<td>/ns/N/sa/S`.
pub fn namespace_of_principal(principal: &str) -> Option<&str> {
    let path = principal.strip_prefix("spiffe://")?;
    let mut parts = path.split('/').skip(1);
    match (parts.next(), parts.next()) {
        (Some("ns"), Some(ns)) if !ns.is_empty() => Some(ns),
        _ => None,
    }
}

/// A destination service: FQDN, short name and namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub fqdn: Arc<str>,
    pub name: Arc<str>,
    pub namespace: Arc<str>,
}

impl Service {
    /// From `name.namespace.svc.cluster.local` (or any host: name is its first label, namespace
    /// its second when it has one).
    pub fn from_fqdn(fqdn: &str) -> Self {
        if fqdn.is_empty() {
            return Service {
                fqdn: unknown(),
                name: unknown(),
                namespace: unknown(),
            };
        }
        if fqdn.parse::<IpAddr>().is_ok() {
            return Service {
                fqdn: Arc::from(fqdn),
                name: Arc::from(fqdn),
                namespace: unknown(),
            };
        }
        let mut labels = fqdn.split('.');
        Service {
            fqdn: Arc::from(fqdn),
            name: or_unknown(labels.next().unwrap_or_default()),
            namespace: or_unknown(labels.next().unwrap_or_default()),
        }
    }

    /// From a request's host (`reviews`, `reviews:9080`, `reviews.default`, ...), completed to
    /// the FQDN as cluster DNS would for a client in `namespace`.
    pub fn from_host(host: &str, namespace: &str) -> Self {
        let host = strip_port(host);
        if host.is_empty() || host.parse::<IpAddr>().is_ok() {
            return Service::from_fqdn(host);
        }
        let dots = host.matches('.').count();
        let fqdn = match dots {
            0 => format!("{host}.{namespace}.{CLUSTER_DOMAIN}"),
            1 => format!("{host}.{CLUSTER_DOMAIN}"),
            2 if host.ends_with(".svc") => format!("{host}.cluster.local"),
            _ => return Service::from_fqdn(host),
        };
        Service::from_fqdn(&fqdn)
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host
            .split_once(']')
            .map_or(host, |(h, _)| h.trim_start_matches('['));
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// One side of a request.
#[derive(Debug, Clone)]
pub struct Party<'a> {
    pub workload: &'a Workload,
    /// SPIFFE id, or empty when unknown.
    pub principal: &'a str,
}

/// Who reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    /// The client side (outbound sidecar, gateway).
    Source,
    /// The server side (inbound sidecar).
    Destination,
}

impl Reporter {
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        }
    }
}

/// The outcome of a request as labels record it.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub response_code: u16,
    pub response_flags: &'static str,
    /// Whether the request travelled over mTLS between the two sidecars.
    pub mtls: bool,
}

/// Builds Istio's standard label set.
pub fn request_labels(
    reporter: Reporter,
    source: &Party<'_>,
    destination: &Party<'_>,
    service: &Service,
    outcome: Outcome,
) -> RequestLabels {
    let policy = match (reporter, outcome.mtls) {
        // Istio's client side does not know the server's policy.
        (Reporter::Source, _) => "unknown",
        (Reporter::Destination, true) => "mutual_tls",
        (Reporter::Destination, false) => "none",
    };
    RequestLabels {
        reporter: reporter.as_str(),
        source_workload: source.workload.name.clone(),
        source_workload_namespace: source.workload.namespace.clone(),
        source_principal: or_unknown(source.principal),
        source_app: source.workload.app.clone(),
        source_version: source.workload.version.clone(),
        destination_workload: destination.workload.name.clone(),
        destination_workload_namespace: destination.workload.namespace.clone(),
        destination_principal: or_unknown(destination.principal),
        destination_service: service.fqdn.clone(),
        destination_service_name: service.name.clone(),
        destination_service_namespace: service.namespace.clone(),
        destination_app: destination.workload.app.clone(),
        destination_version: destination.workload.version.clone(),
        request_protocol: "http",
        response_code: outcome.response_code,
        grpc_response_status: "",
        response_flags: outcome.response_flags,
        connection_security_policy: policy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::{ProxyType, parse_labels};

    fn node() -> NodeInfo {
        NodeInfo {
            proxy_type: ProxyType::Sidecar,
            ip: "127.0.0.1".into(),
            pod: "reviews-v2".into(),
            workload_name: None,
            namespace: "default".into(),
            service_account: "bookinfo-reviews".into(),
            labels: parse_labels("app=reviews,version=v2").unwrap(),
        }
    }

    #[test]
    fn own_workload_from_node_and_flag() {
        let mut n = node();
        let w = Workload::of_node(&n);
        assert_eq!(
            (&*w.name, &*w.namespace, &*w.app, &*w.version),
            ("reviews-v2", "default", "reviews", "v2")
        );
        n.workload_name = Some("reviews-v2-deploy".into());
        n.labels.clear();
        let w = Workload::of_node(&n);
        assert_eq!(
            (&*w.name, &*w.app, &*w.version),
            ("reviews-v2-deploy", "unknown", "unknown")
        );
    }

    #[test]
    fn peer_headers_round_trip_and_strip() {
        let mut h = HeaderMap::new();
        Workload::of_node(&node()).write_peer_headers(&mut h);
        assert_eq!(h[&PEER_WORKLOAD], "reviews-v2");
        assert_eq!(h[&PEER_VERSION], "v2");
        let back = Workload::from_peer_headers(&h, "");
        assert_eq!(back, Workload::of_node(&node()));
        strip_peer_headers(&mut h);
        assert!(h.is_empty(), "{h:?}");
        // Nothing sent: unknown, namespace from the SPIFFE id.
        let w = Workload::from_peer_headers(&h, "spiffe://cluster.local/ns/shop/sa/web");
        assert_eq!((&*w.name, &*w.namespace), ("unknown", "shop"));
        assert_eq!(namespace_of_principal("spiffe://td/sa/x"), None);
    }

    #[test]
    fn destination_service_is_forwarded_then_stripped() {
        let mut h = HeaderMap::new();
        assert_eq!(forwarded_destination_service(&h), None);
        h.insert(
            DESTINATION_SERVICE.clone(),
            HeaderValue::from_static("productpage.default.svc.cluster.local"),
        );
        let s = forwarded_destination_service(&h).unwrap();
        assert_eq!(&*s.name, "productpage");
        assert_eq!(&*s.namespace, "default");
        assert_eq!(&*s.fqdn, "productpage.default.svc.cluster.local");
        strip_peer_headers(&mut h);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn services_from_cluster_fqdn_and_host() {
        let s = Service::from_fqdn("reviews.default.svc.cluster.local");
        assert_eq!(
            (&*s.fqdn, &*s.name, &*s.namespace),
            ("reviews.default.svc.cluster.local", "reviews", "default")
        );
        for host in [
            "reviews",
            "reviews:9080",
            "reviews.default",
            "reviews.default.svc:9080",
            "reviews.default.svc.cluster.local",
        ] {
            assert_eq!(
                Service::from_host(host, "default"),
                s,
                "{host} completes to the FQDN"
            );
        }
        let ip = Service::from_host("127.0.0.1:80", "default");
        assert_eq!((&*ip.fqdn, &*ip.namespace), ("127.0.0.1", "unknown"));
        assert_eq!(&*Service::from_host("", "default").fqdn, "unknown");
    }

    #[test]
    fn labels_per_reporter() {
        let productpage = Workload {
            name: "productpage-v1".into(),
            namespace: "default".into(),
            app: "productpage".into(),
            version: "v1".into(),
        };
        let reviews = Workload::of_node(&node());
        let service = Service::from_fqdn("reviews.default.svc.cluster.local");
        let src = Party {
            workload: &productpage,
            principal: "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        };
        let dst = Party {
            workload: &reviews,
            principal: "",
        };
        let ok = Outcome {
            response_code: 200,
            response_flags: flags::NONE,
            mtls: true,
        };
        let d = request_labels(Reporter::Destination, &src, &dst, &service, ok);
        assert_eq!(d.reporter, "destination");
        assert_eq!(&*d.source_workload, "productpage-v1");
        assert_eq!(&*d.source_app, "productpage");
        assert_eq!(&*d.destination_version, "v2");
        assert_eq!(&*d.destination_principal, "unknown");
        assert_eq!(&*d.destination_service_name, "reviews");
        assert_eq!(d.connection_security_policy, "mutual_tls");
        assert_eq!((d.request_protocol, d.grpc_response_status), ("http", ""));
        let plain = Outcome { mtls: false, ..ok };
        assert_eq!(
            request_labels(Reporter::Destination, &src, &dst, &service, plain)
                .connection_security_policy,
            "none"
        );
        let s = request_labels(Reporter::Source, &src, &dst, &service, ok);
        assert_eq!(
            (s.reporter, s.connection_security_policy),
            ("source", "unknown")
        );
        // Shared per-proxy parts are the same allocation, not copies.
        assert!(Arc::ptr_eq(&s.destination_app, &reviews.app));
    }
}
