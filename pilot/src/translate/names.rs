//! The names Pilot gives to clusters, SNIs and identities (Istio's conventions).

/// `outbound|<port>|<subset>|<fqdn>` (subset empty for the service-wide cluster).
pub fn cluster_name(port: u16, subset: &str, fqdn: &str) -> String {
    format!("outbound|{port}|{subset}|{fqdn}")
}

/// `outbound_.<port>_.<subset>_.<fqdn>`.
pub fn sni(port: u16, subset: &str, fqdn: &str) -> String {
    format!("outbound_.{port}_.{subset}_.{fqdn}")
}

/// `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
pub fn spiffe(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// The sidecar's outbound listener.
pub const VIRTUAL_OUTBOUND: &str = "virtualOutbound";
/// The sidecar's route configuration.
pub const HTTP_PROXY_ROUTE: &str = "http_proxy";

/// A gateway listener name: `0.0.0.0_<port>`.
pub fn gateway_listener(port: u32) -> String {
    format!("0.0.0.0_{port}")
}

/// A gateway route configuration name: `http.<port>`.
pub fn gateway_route(port: u32) -> String {
    format!("http.{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_names() {
        let f = "reviews.default.svc.cluster.local";
        assert_eq!(
            cluster_name(9080, "", f),
            "outbound|9080||reviews.default.svc.cluster.local"
        );
        assert_eq!(
            cluster_name(9080, "v1", f),
            "outbound|9080|v1|reviews.default.svc.cluster.local"
        );
        assert_eq!(
            sni(9080, "", f),
            "outbound_.9080_._.reviews.default.svc.cluster.local"
        );
        assert_eq!(
            spiffe("cluster.local", "default", "bookinfo-reviews"),
            "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
        );
        assert_eq!(gateway_listener(80), "0.0.0.0_80");
        assert_eq!(gateway_route(80), "http.80");
    }
}
