//! The attribute bag the proxy sends for a request.

use std::collections::BTreeMap;
use std::time::Duration;

use http::HeaderMap;
use mesh_proto::attributes::Bag;

use crate::http::Service;

/// What the proxy knows about a request when it calls Check.
#[derive(Debug, Clone)]
pub struct RequestAttributes<'a> {
    /// `inbound` or `outbound`.
    pub reporter_kind: &'static str,
    pub source_principal: Option<&'a str>,
    pub destination_principal: Option<&'a str>,
    pub source_uid: Option<&'a str>,
    pub destination_uid: Option<&'a str>,
    pub destination_service_host: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub method: &'a str,
    pub headers: &'a HeaderMap,
    pub mtls: bool,
}

impl RequestAttributes<'_> {
    /// The Check bag.
    pub fn to_bag(&self) -> Bag {
        let mut bag = Bag::new();
        bag.set("context.reporter.kind", self.reporter_kind);
        let optional = [
            ("source.principal", self.source_principal),
            ("destination.principal", self.destination_principal),
            ("source.uid", self.source_uid),
            ("destination.uid", self.destination_uid),
        ];
        for (name, v) in optional {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                bag.set(name, v);
            }
        }
        if !self.destination_service_host.is_empty() {
            bag.set("destination.service.host", self.destination_service_host);
        }
        bag.set("request.host", self.host);
        bag.set("request.path", self.path);
        bag.set("request.method", self.method);
        let headers: BTreeMap<String, String> = self
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        bag.set("request.headers", headers);
        bag.set("connection.mtls", self.mtls);
        bag
    }
}

/// Sets `destination.service.host`/`.name`/`.namespace` from the routed cluster's Istio
/// service metadata (Pilot's `filter_metadata["istio"]["services"]`), over the host-derived
/// `destination.service.host` of [`RequestAttributes::to_bag`].
pub fn set_destination_service(bag: &mut Bag, service: &Service) {
    bag.set("destination.service.host", &*service.fqdn);
    bag.set("destination.service.name", &*service.name);
    bag.set("destination.service.namespace", &*service.namespace);
}

/// Adds the Report-only attributes to a Check bag.
pub fn add_response(
    bag: &mut Bag,
    code: u16,
    duration: Duration,
    request_size: i64,
    response_size: i64,
) {
    bag.set("response.code", i64::from(code));
    bag.set("response.duration", duration);
    bag.set("request.size", request_size);
    bag.set("response.size", response_size);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bag_holds_the_contract_attributes() {
        let mut h = HeaderMap::new();
        h.insert("end-user", "jason".parse().unwrap());
        let a = RequestAttributes {
            reporter_kind: "inbound",
            source_principal: Some("spiffe://cluster.local/ns/default/sa/productpage"),
            destination_principal: Some("spiffe://cluster.local/ns/default/sa/reviews"),
            source_uid: None,
            destination_uid: Some("kubernetes://reviews-v1.default"),
            destination_service_host: "reviews",
            host: "reviews:9080",
            path: "/reviews/0",
            method: "GET",
            headers: &h,
            mtls: true,
        };
        let mut bag = a.to_bag();
        add_response(&mut bag, 200, Duration::from_millis(5), 0, 10);
        assert_eq!(bag.get_string("context.reporter.kind"), Some("inbound"));
        assert_eq!(
            bag.get_string("destination.uid"),
            Some("kubernetes://reviews-v1.default")
        );
        assert!(!bag.contains("source.uid"));
        assert_eq!(bag.get_bool("connection.mtls"), Some(true));
        assert_eq!(
            bag.get_string_map("request.headers").unwrap()["end-user"],
            "jason"
        );
        assert_eq!(bag.get_int64("response.code"), Some(200));
        let c = mesh_proto::attributes::compress(&bag);
        assert_eq!(mesh_proto::attributes::decompress(&c).unwrap(), bag);
    }

    #[test]
    fn cluster_service_metadata_names_the_destination_service() {
        let h = HeaderMap::new();
        let a = RequestAttributes {
            reporter_kind: "outbound",
            source_principal: None,
            destination_principal: None,
            source_uid: Some("kubernetes://ingress.istio-system"),
            destination_uid: None,
            destination_service_host: "productpage.example.com",
            host: "bookinfo.example.com",
            path: "/productpage",
            method: "GET",
            headers: &h,
            mtls: false,
        };
        // Without metadata: the host as now, no name/namespace.
        let bag = a.to_bag();
        assert_eq!(
            bag.get_string("destination.service.host"),
            Some("productpage.example.com")
        );
        assert!(!bag.contains("destination.service.name"));
        // With the cluster's metadata: its host, name and namespace (not the host's labels).
        let mut bag = a.to_bag();
        let svc = Service {
            fqdn: "productpage.bookinfo.svc.cluster.local".into(),
            name: "productpage-svc".into(),
            namespace: "bookinfo".into(),
        };
        set_destination_service(&mut bag, &svc);
        assert_eq!(
            bag.get_string("destination.service.host"),
            Some("productpage.bookinfo.svc.cluster.local")
        );
        assert_eq!(
            bag.get_string("destination.service.name"),
            Some("productpage-svc")
        );
        assert_eq!(
            bag.get_string("destination.service.namespace"),
            Some("bookinfo")
        );
    }
}
