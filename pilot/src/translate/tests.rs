//! Golden-style tests: a small Bookinfo snapshot in, decoded Envoy resources out.

use mesh_proto::config::ConfigObject;
use mesh_proto::envoy::envoy::config::cluster::v3::{Cluster, cluster};
use mesh_proto::envoy::envoy::config::core::v3::{address, socket_address, transport_socket};
use mesh_proto::envoy::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use mesh_proto::envoy::envoy::config::listener::v3::{Listener, filter};
use mesh_proto::envoy::envoy::config::route::v3::{
    RouteConfiguration, header_matcher, route, route_action, route_match,
};
use mesh_proto::envoy::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use mesh_proto::envoy::envoy::extensions::transport_sockets::tls::v3::{
    UpstreamTlsContext, common_tls_context,
};
use mesh_proto::envoy::envoy::r#type::matcher::v3::string_matcher;
use mesh_proto::type_url;
use prost::Message;

use super::*;
use crate::galley_client::Snapshot;
use crate::model::Registry;

const REVIEWS: &str = "reviews.default.svc.cluster.local";

fn objects(v: serde_json::Value) -> Vec<ConfigObject> {
    serde_json::from_value(v).unwrap()
}

fn bookinfo() -> Vec<ConfigObject> {
    let mut objs = objects(serde_json::json!([
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews", "namespace": "default"},
         "spec": {"ports": [{"name": "http", "port": 9080}]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "reviews", "namespace": "default"},
         "subsets": [{"addresses": [
             {"ip": "127.0.0.1", "targetRef": {"kind": "Pod", "name": "reviews-v1", "namespace": "default"}},
             {"ip": "127.0.0.2", "targetRef": {"kind": "Pod", "name": "reviews-v2", "namespace": "default"}},
             {"ip": "127.0.0.3", "targetRef": {"kind": "Pod", "name": "reviews-v3", "namespace": "default"}}],
           "ports": [{"name": "http", "port": 15006}]}]},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ratings", "namespace": "default"},
         "spec": {"ports": [{"name": "http", "port": 9080}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "productpage", "namespace": "default"},
         "spec": {"ports": [{"name": "http", "port": 9080}]}},
        {"apiVersion": "networking.istio.io/v1alpha3", "kind": "DestinationRule",
         "metadata": {"name": "reviews", "namespace": "default"},
         "spec": {"host": "reviews", "subsets": [
             {"name": "v1", "labels": {"version": "v1"}},
             {"name": "v2", "labels": {"version": "v2"}},
             {"name": "v3", "labels": {"version": "v3"}}]}},
        {"apiVersion": "networking.istio.io/v1alpha3", "kind": "DestinationRule",
         "metadata": {"name": "ratings", "namespace": "default"},
         "spec": {"host": "ratings.default.svc.cluster.local", "trafficPolicy": {"tls": {"mode": "DISABLE"}}}},
        {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
         "metadata": {"name": "reviews", "namespace": "default"},
         "spec": {"hosts": ["reviews"], "http": [
             {"match": [{"uri": {"prefix": "/wpcatalog"}}, {"headers": {"end-user": {"exact": "jason"}}, "method": {"exact": "GET"}}],
              "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
              "rewrite": {"uri": "/catalog", "authority": "reviews-internal"}, "timeout": "5s"},
             {"route": [
                 {"destination": {"host": "reviews", "subset": "v1"}, "weight": 50},
                 {"destination": {"host": "reviews", "subset": "v3"}, "weight": 50}]}]}},
        {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
         "metadata": {"name": "ratings-broken", "namespace": "default"},
         "spec": {"hosts": ["ratings"], "http": [{"route": [{"destination": {"host": "ratings"}}], "timeout": "soon"}]}},
        {"apiVersion": "networking.istio.io/v1alpha3", "kind": "Gateway",
         "metadata": {"name": "bookinfo-gateway", "namespace": "default"},
         "spec": {"selector": {"istio": "ingressgateway"},
                  "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}},
        {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
         "metadata": {"name": "bookinfo", "namespace": "default"},
         "spec": {"hosts": ["*"], "gateways": ["bookinfo-gateway"], "http": [
             {"match": [{"uri": {"exact": "/productpage"}}, {"uri": {"regex": "^/static/.*"}}],
              "route": [{"destination": {"host": "productpage", "port": {"number": 9080}}}]}]}}
    ]));
    for (v, sa) in [
        ("v1", "bookinfo-reviews"),
        ("v2", "bookinfo-reviews"),
        ("v3", "reviews-v3"),
    ] {
        objs.extend(objects(serde_json::json!([
            {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": format!("reviews-{v}"), "namespace": "default", "labels": {"app": "reviews", "version": v}},
             "spec": {"serviceAccountName": sa}}
        ])));
    }
    objs
}

fn registry(objs: Vec<ConfigObject>) -> Registry {
    Registry::from_snapshot(&Snapshot::from_objects(objs), "cluster.local")
}

fn opts() -> Options {
    Options {
        trust_domain: "cluster.local".into(),
    }
}

fn sidecar(ns: &str) -> ProxyInfo {
    let mut p = ProxyInfo::from_id(&format!(
        "sidecar~127.0.0.9~productpage-v1.{ns}~{ns}.svc.cluster.local"
    ))
    .unwrap();
    p.labels.insert("app".into(), "productpage".into());
    p
}

fn router(labels: &[(&str, &str)]) -> ProxyInfo {
    let mut p = ProxyInfo::from_id(
        "router~127.0.0.1~ingress-1.istio-system~istio-system.svc.cluster.local",
    )
    .unwrap();
    p.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    p
}

fn hcm(l: &Listener) -> HttpConnectionManager {
    let Some(filter::ConfigType::TypedConfig(any)) = &l.filter_chains[0].filters[0].config_type
    else {
        panic!("no typed config");
    };
    assert_eq!(any.type_url, type_url::HTTP_CONNECTION_MANAGER);
    HttpConnectionManager::decode(any.value.as_slice()).unwrap()
}

fn rds_name(l: &Listener) -> String {
    match hcm(l).route_specifier {
        Some(http_connection_manager::RouteSpecifier::Rds(r)) => {
            assert!(r.config_source.is_some());
            r.route_config_name
        }
        other => panic!("not RDS: {other:?}"),
    }
}

fn port_of(l: &Listener) -> u32 {
    match &l.address.as_ref().unwrap().address {
        Some(address::Address::SocketAddress(s)) => match s.port_specifier {
            Some(socket_address::PortSpecifier::PortValue(p)) => p,
            _ => panic!("no port"),
        },
        _ => panic!("no socket"),
    }
}

fn cluster<'a>(cfg: &'a ProxyConfig, name: &str) -> &'a Cluster {
    cfg.clusters
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no cluster {name}"))
}

fn tls(c: &Cluster) -> Option<UpstreamTlsContext> {
    let ts = c.transport_socket.as_ref()?;
    assert_eq!(ts.name, "envoy.transport_sockets.tls");
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
        panic!("no typed config")
    };
    assert_eq!(any.type_url, type_url::UPSTREAM_TLS_CONTEXT);
    Some(UpstreamTlsContext::decode(any.value.as_slice()).unwrap())
}

fn sans(t: &UpstreamTlsContext) -> Vec<String> {
    let ctx = t.common_tls_context.as_ref().unwrap();
    let Some(common_tls_context::ValidationContextType::CombinedValidationContext(c)) =
        &ctx.validation_context_type
    else {
        panic!("no combined validation context")
    };
    assert_eq!(
        c.validation_context_sds_secret_config
            .as_ref()
            .unwrap()
            .name,
        "ROOTCA"
    );
    c.default_validation_context
        .as_ref()
        .unwrap()
        .match_typed_subject_alt_names
        .iter()
        .map(|m| match &m.matcher.as_ref().unwrap().match_pattern {
            Some(string_matcher::MatchPattern::Exact(s)) => s.clone(),
            other => panic!("not exact: {other:?}"),
        })
        .collect()
}

fn endpoints(cla: &ClusterLoadAssignment) -> Vec<String> {
    cla.endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .map(|e| {
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                panic!("no endpoint")
            };
            let Some(address::Address::SocketAddress(s)) = &ep.address.as_ref().unwrap().address
            else {
                panic!("no socket")
            };
            let Some(socket_address::PortSpecifier::PortValue(p)) = s.port_specifier else {
                panic!("no port")
            };
            format!("{}:{p}", s.address)
        })
        .collect()
}

fn route_cluster(a: &Option<route::Action>) -> Vec<(String, u32)> {
    let Some(route::Action::Route(ra)) = a else {
        panic!("not a route action: {a:?}")
    };
    match ra.cluster_specifier.as_ref().unwrap() {
        route_action::ClusterSpecifier::Cluster(c) => vec![(c.clone(), 100)],
        route_action::ClusterSpecifier::WeightedClusters(w) => w
            .clusters
            .iter()
            .map(|c| (c.name.clone(), c.weight.as_ref().unwrap().value))
            .collect(),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn sidecar_listener_points_at_http_proxy() {
    let cfg = translate(&registry(bookinfo()), &sidecar("default"), &opts());
    // virtualInbound (security.rs tests it) sorts before virtualOutbound.
    assert_eq!(cfg.listeners.len(), 2);
    assert_eq!(cfg.listeners[0].name, "virtualInbound");
    let outbound = &cfg.listeners[1];
    assert_eq!(outbound.name, "virtualOutbound");
    assert_eq!(port_of(outbound), 15001);
    assert_eq!(
        outbound.filter_chains[0].filters[0].name,
        "envoy.filters.network.http_connection_manager"
    );
    assert_eq!(rds_name(outbound), "http_proxy");
    assert_eq!(cfg.routes.len(), 1);
    assert_eq!(cfg.routes[0].name, "http_proxy");
}

#[test]
fn sidecar_routes_follow_the_virtual_service() {
    let cfg = translate(&registry(bookinfo()), &sidecar("default"), &opts());
    let rc: &RouteConfiguration = &cfg.routes[0];
    let names: Vec<&str> = rc.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "productpage.default.svc.cluster.local:9080",
            "ratings.default.svc.cluster.local:9080",
            "reviews.default.svc.cluster.local:9080"
        ]
    );
    let vh = &rc.virtual_hosts[2];
    for d in [
        REVIEWS,
        "reviews.default.svc.cluster.local:9080",
        "reviews",
        "reviews:9080",
        "reviews.default",
        "reviews.default:9080",
        "reviews.default.svc",
        "reviews.default.svc:9080",
    ] {
        assert!(vh.domains.iter().any(|x| x == d), "{d} in {:?}", vh.domains);
    }
    assert_eq!(vh.routes.len(), 3, "two matches of rule 0, one catch-all");
    let r0 = &vh.routes[0];
    assert_eq!(
        r0.r#match.as_ref().unwrap().path_specifier,
        Some(route_match::PathSpecifier::Prefix("/wpcatalog".into()))
    );
    assert_eq!(
        route_cluster(&r0.action),
        vec![(format!("outbound|9080|v2|{REVIEWS}"), 100)]
    );
    let Some(route::Action::Route(ra)) = &r0.action else {
        panic!()
    };
    assert_eq!(ra.prefix_rewrite, "/catalog");
    assert_eq!(
        ra.host_rewrite_specifier,
        Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(
            "reviews-internal".into()
        ))
    );
    assert_eq!(ra.timeout.as_ref().map(|d| d.seconds), Some(5));
    let h = &vh.routes[1].r#match.as_ref().unwrap().headers;
    let hdr: Vec<(&str, String)> = h
        .iter()
        .map(|m| {
            let Some(header_matcher::HeaderMatchSpecifier::StringMatch(s)) =
                &m.header_match_specifier
            else {
                panic!()
            };
            let Some(string_matcher::MatchPattern::Exact(e)) = &s.match_pattern else {
                panic!()
            };
            (m.name.as_str(), e.clone())
        })
        .collect();
    assert_eq!(
        hdr,
        vec![
            (":method", "GET".to_string()),
            ("end-user", "jason".to_string())
        ]
    );
    assert_eq!(
        route_cluster(&vh.routes[2].action),
        vec![
            (format!("outbound|9080|v1|{REVIEWS}"), 50),
            (format!("outbound|9080|v3|{REVIEWS}"), 50)
        ]
    );
    // productpage has no VirtualService: one default route.
    let pp = &rc.virtual_hosts[0];
    assert_eq!(pp.routes.len(), 1);
    assert_eq!(
        route_cluster(&pp.routes[0].action),
        vec![(
            "outbound|9080||productpage.default.svc.cluster.local".to_string(),
            100
        )]
    );
}

#[test]
fn broken_virtual_service_is_skipped_alone() {
    let cfg = translate(&registry(bookinfo()), &sidecar("default"), &opts());
    assert_eq!(cfg.skipped.len(), 1, "{:?}", cfg.skipped);
    assert_eq!(cfg.skipped[0].virtual_service, "default/ratings-broken");
    assert!(
        cfg.skipped[0].reason.contains("timeout"),
        "{:?}",
        cfg.skipped
    );
    let ratings = &cfg.routes[0].virtual_hosts[1];
    assert_eq!(
        route_cluster(&ratings.routes[0].action),
        vec![(
            "outbound|9080||ratings.default.svc.cluster.local".to_string(),
            100
        )],
        "falls back to the default route"
    );
}

#[test]
fn a_service_vip_is_a_domain_with_and_without_the_port() {
    let mut objs = bookinfo();
    objs.extend(objects(serde_json::json!([
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "details", "namespace": "default"},
         "spec": {"clusterIP": "10.96.0.12", "ports": [{"name": "http", "port": 9080}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "headless", "namespace": "default"},
         "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 9080}]}},
        {"apiVersion": "networking.istio.io/v1alpha3", "kind": "ServiceEntry",
         "metadata": {"name": "ext", "namespace": "default"},
         "spec": {"hosts": ["ext.example.com"], "addresses": ["240.0.0.1", "240.1.0.0/16"],
                  "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                  "resolution": "DNS", "location": "MESH_EXTERNAL"}},
    ])));
    let cfg = translate(&registry(objs), &sidecar("default"), &opts());
    let domains = |name: &str| -> Vec<String> {
        cfg.routes
            .iter()
            .flat_map(|rc| &rc.virtual_hosts)
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no virtual host {name}"))
            .domains
            .clone()
    };
    let details = domains("details.default.svc.cluster.local:9080");
    assert!(details.contains(&"10.96.0.12".to_string()), "{details:?}");
    assert!(
        details.contains(&"10.96.0.12:9080".to_string()),
        "{details:?}"
    );
    let headless = domains("headless.default.svc.cluster.local:9080");
    assert!(
        !headless.iter().any(|d| d.starts_with("None")),
        "{headless:?}"
    );
    let ext = domains("ext.example.com:80");
    assert_eq!(
        ext,
        [
            "ext.example.com",
            "ext.example.com:80",
            "240.0.0.1",
            "240.0.0.1:80"
        ],
        "a CIDR is no Host"
    );
}

#[test]
fn other_namespace_gets_no_short_name() {
    let cfg = translate(&registry(bookinfo()), &sidecar("prod"), &opts());
    let vh = &cfg.routes[0].virtual_hosts[2];
    assert!(!vh.domains.iter().any(|d| d == "reviews"));
    assert!(vh.domains.iter().any(|d| d == "reviews.default"));
}

#[test]
fn clusters_subsets_and_mtls() {
    let cfg = translate(&registry(bookinfo()), &sidecar("default"), &opts());
    let names: Vec<&str> = cfg.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "outbound|9080|v1|reviews.default.svc.cluster.local",
            "outbound|9080|v2|reviews.default.svc.cluster.local",
            "outbound|9080|v3|reviews.default.svc.cluster.local",
            "outbound|9080||productpage.default.svc.cluster.local",
            "outbound|9080||ratings.default.svc.cluster.local",
            "outbound|9080||reviews.default.svc.cluster.local",
        ],
        "sorted by name"
    );
    let v1 = cluster(&cfg, &format!("outbound|9080|v1|{REVIEWS}"));
    assert_eq!(
        v1.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32
        ))
    );
    let eds = v1.eds_cluster_config.as_ref().unwrap();
    assert_eq!(eds.service_name, v1.name);
    assert!(eds.eds_config.is_some());
    assert_eq!(v1.connect_timeout.as_ref().map(|d| d.seconds), Some(10));
    assert_eq!(v1.lb_policy, cluster::LbPolicy::RoundRobin as i32);
    let t = tls(v1).expect("mTLS");
    assert_eq!(t.sni, format!("outbound_.9080_.v1_.{REVIEWS}"));
    let common = t.common_tls_context.as_ref().unwrap();
    assert_eq!(common.alpn_protocols, vec!["istio"]);
    assert_eq!(common.tls_certificate_sds_secret_configs[0].name, "default");
    assert_eq!(
        sans(&t),
        vec![
            "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
            "spiffe://cluster.local/ns/default/sa/reviews-v3"
        ]
    );
    let ratings = cluster(&cfg, "outbound|9080||ratings.default.svc.cluster.local");
    assert!(tls(ratings).is_none(), "tls mode DISABLE");
}

#[test]
fn endpoints_per_subset() {
    let cfg = translate(&registry(bookinfo()), &sidecar("default"), &opts());
    let cla = |n: String| {
        cfg.endpoints
            .iter()
            .find(|c| c.cluster_name == n)
            .map(endpoints)
            .unwrap_or_else(|| panic!("no CLA {n}"))
    };
    assert_eq!(cfg.endpoints.len(), cfg.clusters.len());
    assert_eq!(
        cla(format!("outbound|9080||{REVIEWS}")),
        vec!["127.0.0.1:15006", "127.0.0.2:15006", "127.0.0.3:15006"]
    );
    assert_eq!(
        cla(format!("outbound|9080|v1|{REVIEWS}")),
        vec!["127.0.0.1:15006"]
    );
    assert_eq!(
        cla(format!("outbound|9080|v3|{REVIEWS}")),
        vec!["127.0.0.3:15006"]
    );
    assert!(cla("outbound|9080||ratings.default.svc.cluster.local".into()).is_empty());
}

#[test]
fn router_gets_gateway_listeners_and_routes() {
    let reg = registry(bookinfo());
    let cfg = translate(&reg, &router(&[("istio", "ingressgateway")]), &opts());
    assert_eq!(cfg.listeners.len(), 1);
    assert_eq!(cfg.listeners[0].name, "0.0.0.0_80");
    assert_eq!(port_of(&cfg.listeners[0]), 80);
    assert_eq!(rds_name(&cfg.listeners[0]), "http.80");
    assert_eq!(cfg.routes.len(), 1);
    let rc = &cfg.routes[0];
    assert_eq!(rc.name, "http.80");
    assert_eq!(rc.virtual_hosts.len(), 1);
    assert_eq!(rc.virtual_hosts[0].domains, vec!["*"]);
    let routes = &rc.virtual_hosts[0].routes;
    assert_eq!(routes.len(), 2);
    assert_eq!(
        routes[0].r#match.as_ref().unwrap().path_specifier,
        Some(route_match::PathSpecifier::Path("/productpage".into()))
    );
    assert!(matches!(
        routes[1].r#match.as_ref().unwrap().path_specifier,
        Some(route_match::PathSpecifier::SafeRegex(ref r)) if r.regex == "^/static/.*"
    ));
    assert_eq!(
        route_cluster(&routes[0].action),
        vec![(
            "outbound|9080||productpage.default.svc.cluster.local".to_string(),
            100
        )]
    );
    assert!(!cfg.clusters.is_empty(), "routers get clusters too");

    let other = translate(&reg, &router(&[("istio", "egressgateway")]), &opts());
    assert!(other.listeners.is_empty());
    assert!(other.routes.is_empty());
}

#[test]
fn versions_are_stable_and_follow_content() {
    let a = translate(&registry(bookinfo()), &sidecar("default"), &opts()).encode();
    let b = translate(&registry(bookinfo()), &sidecar("default"), &opts()).encode();
    assert_eq!(a, b);
    let mut objs = bookinfo();
    for o in objs.iter_mut().filter(|o| o.metadata.name == "reviews-v3") {
        o.body.insert(
            "spec".into(),
            serde_json::json!({"serviceAccountName": "bookinfo-reviews"}),
        );
    }
    let c = translate(&registry(objs), &sidecar("default"), &opts()).encode();
    assert_eq!(a.listeners.version, c.listeners.version);
    assert_eq!(
        a.endpoints.version, c.endpoints.version,
        "addresses unchanged"
    );
    assert_ne!(a.clusters.version, c.clusters.version, "SAN list changed");
    assert_eq!(a.get(XdsType::Route).resources.len(), 1);
}

// ---- traffic features: fault, retries, header operations, mirror, CORS, DestinationRule ----

fn with_ratings_vs(http: serde_json::Value) -> ProxyConfig {
    let mut objs: Vec<ConfigObject> = bookinfo()
        .into_iter()
        .filter(|o| o.metadata.name != "ratings-broken")
        .collect();
    objs.extend(objects(serde_json::json!([
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "ratings", "namespace": "default"},
         "spec": {"hosts": ["ratings"], "http": http}}
    ])));
    let cfg = translate(&registry(objs), &sidecar("default"), &opts());
    assert!(cfg.skipped.is_empty(), "{:?}", cfg.skipped);
    cfg
}

fn ratings_routes(cfg: &ProxyConfig) -> Vec<mesh_proto::envoy::envoy::config::route::v3::Route> {
    cfg.routes[0]
        .virtual_hosts
        .iter()
        .find(|v| v.name == "ratings.default.svc.cluster.local:9080")
        .unwrap()
        .routes
        .clone()
}

fn route_action_of(
    r: &mesh_proto::envoy::envoy::config::route::v3::Route,
) -> mesh_proto::envoy::envoy::config::route::v3::RouteAction {
    match r.action.clone() {
        Some(route::Action::Route(ra)) => ra,
        other => panic!("not a route action: {other:?}"),
    }
}

#[test]
fn fault_becomes_per_route_http_fault_and_the_filter_is_in_the_chain() {
    use mesh_proto::envoy::envoy::extensions::filters::common::fault::v3::fault_delay;
    use mesh_proto::envoy::envoy::extensions::filters::http::fault::v3::{HttpFault, fault_abort};
    use mesh_proto::envoy::envoy::r#type::v3::fractional_percent::DenominatorType;
    let cfg = with_ratings_vs(serde_json::json!([
        {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
         "fault": {"delay": {"percentage": {"value": 100.0}, "fixedDelay": "7s"},
                   "abort": {"percent": 10, "httpStatus": 500}},
         "route": [{"destination": {"host": "ratings"}}]},
        {"fault": {"abort": {"percentage": {"value": 0.5}, "httpStatus": 503}},
         "route": [{"destination": {"host": "ratings"}}]}
    ]));
    let routes = ratings_routes(&cfg);
    let fault = |i: usize| -> HttpFault {
        let any = routes[i]
            .typed_per_filter_config
            .get("envoy.filters.http.fault")
            .expect("fault config");
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
        );
        HttpFault::decode(any.value.as_slice()).unwrap()
    };
    let f0 = fault(0);
    let delay = f0.delay.unwrap();
    assert_eq!(
        delay.fault_delay_secifier,
        Some(fault_delay::FaultDelaySecifier::FixedDelay(
            mesh_proto::envoy::google::protobuf::Duration {
                seconds: 7,
                nanos: 0
            }
        ))
    );
    let p = delay.percentage.unwrap();
    assert_eq!(
        (p.numerator, p.denominator),
        (1_000_000, DenominatorType::Million as i32)
    );
    let abort = f0.abort.unwrap();
    assert_eq!(
        abort.error_type,
        Some(fault_abort::ErrorType::HttpStatus(500))
    );
    let p = abort.percentage.unwrap();
    assert_eq!(
        (p.numerator, p.denominator),
        (10, DenominatorType::Hundred as i32)
    );
    let f1 = fault(1);
    assert!(f1.delay.is_none());
    assert_eq!(f1.abort.unwrap().percentage.unwrap().numerator, 5_000);
    // The HCM carries the fault filter before the router.
    let outbound = cfg
        .listeners
        .iter()
        .find(|l| l.name == "virtualOutbound")
        .unwrap();
    let names: Vec<String> = hcm(outbound)
        .http_filters
        .iter()
        .map(|f| f.name.clone())
        .collect();
    assert_eq!(
        names,
        [
            "mixer",
            "envoy.filters.http.cors",
            "envoy.filters.http.fault",
            "envoy.filters.http.router"
        ]
    );
}

#[test]
fn bad_fault_skips_the_virtual_service() {
    let mut objs = bookinfo();
    objs.extend(objects(serde_json::json!([
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "details", "namespace": "default"},
         "spec": {"hosts": ["ratings"], "http": [{"fault": {"abort": {"httpStatus": 42}},
            "route": [{"destination": {"host": "ratings"}}]}]}}
    ])));
    let cfg = translate(&registry(objs), &sidecar("default"), &opts());
    assert!(
        cfg.skipped
            .iter()
            .any(|s| s.virtual_service == "default/details" && s.reason.contains("httpStatus")),
        "{:?}",
        cfg.skipped
    );
}

#[test]
fn retries_follow_the_rule_or_istio_default() {
    let cfg = with_ratings_vs(serde_json::json!([
        {"match": [{"uri": {"prefix": "/a"}}],
         "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "gateway-error,connect-failure,409"},
         "route": [{"destination": {"host": "ratings"}}]},
        {"match": [{"uri": {"prefix": "/b"}}], "retries": {"attempts": 0},
         "route": [{"destination": {"host": "ratings"}}]},
        {"route": [{"destination": {"host": "ratings"}}]}
    ]));
    let routes = ratings_routes(&cfg);
    let rp = route_action_of(&routes[0]).retry_policy.unwrap();
    assert_eq!(
        rp.retry_on,
        "gateway-error,connect-failure,retriable-status-codes"
    );
    assert_eq!(rp.num_retries.unwrap().value, 3);
    assert_eq!(rp.per_try_timeout.unwrap().seconds, 2);
    assert_eq!(rp.retriable_status_codes, vec![409]);
    assert_eq!(
        rp.retry_host_predicate[0].name,
        "envoy.retry_host_predicates.previous_hosts"
    );
    assert!(route_action_of(&routes[1]).retry_policy.is_none());
    let default = route_action_of(&routes[2]).retry_policy.unwrap();
    assert_eq!(
        default.retry_on,
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    );
    assert_eq!(default.num_retries.unwrap().value, 2);
    assert_eq!(default.retriable_status_codes, vec![503]);
}

#[test]
fn header_operations_rule_and_destination() {
    use mesh_proto::envoy::envoy::config::core::v3::header_value_option::HeaderAppendAction;
    let cfg = with_ratings_vs(serde_json::json!([
        {"match": [{"uri": {"prefix": "/one"}}],
         "headers": {"request": {"set": {"X-Set": "s"}, "add": {"x-add": "a"}, "remove": ["x-gone"]},
                     "response": {"remove": ["server"]}},
         "route": [{"destination": {"host": "ratings"},
                    "headers": {"response": {"set": {"x-dest": "d"}}}}]},
        {"route": [
            {"destination": {"host": "ratings", "subset": "v1"}, "weight": 50,
             "headers": {"request": {"set": {"x-subset": "v1"}}}},
            {"destination": {"host": "ratings", "subset": "v2"}, "weight": 50}]}
    ]));
    let routes = ratings_routes(&cfg);
    let r = &routes[0];
    let adds: Vec<(String, String, i32)> = r
        .request_headers_to_add
        .iter()
        .map(|h| {
            let hv = h.header.clone().unwrap();
            (hv.key, hv.value, h.append_action)
        })
        .collect();
    assert_eq!(
        adds,
        vec![
            (
                "x-set".into(),
                "s".into(),
                HeaderAppendAction::OverwriteIfExistsOrAdd as i32
            ),
            (
                "x-add".into(),
                "a".into(),
                HeaderAppendAction::AppendIfExistsOrAdd as i32
            )
        ]
    );
    assert_eq!(r.request_headers_to_remove, vec!["x-gone"]);
    assert_eq!(r.response_headers_to_remove, vec!["server"]);
    assert_eq!(
        r.response_headers_to_add[0].header.as_ref().unwrap().key,
        "x-dest"
    );
    let Some(route_action::ClusterSpecifier::WeightedClusters(w)) =
        route_action_of(&routes[1]).cluster_specifier
    else {
        panic!("weighted")
    };
    assert_eq!(
        w.clusters[0].request_headers_to_add[0]
            .header
            .as_ref()
            .unwrap()
            .key,
        "x-subset"
    );
    assert!(w.clusters[1].request_headers_to_add.is_empty());
}

#[test]
fn mirror_and_cors() {
    use mesh_proto::envoy::envoy::extensions::filters::http::cors::v3::CorsPolicy;
    let cfg = with_ratings_vs(serde_json::json!([
        {"route": [{"destination": {"host": "ratings"}}],
         "mirror": {"host": "reviews", "subset": "v2"}, "mirrorPercentage": {"value": 25.0},
         "corsPolicy": {"allowOrigins": [{"exact": "https://a.example"}],
                        "allowMethods": ["GET", "POST"], "maxAge": "24h", "allowCredentials": true}}
    ]));
    let routes = ratings_routes(&cfg);
    let ra = route_action_of(&routes[0]);
    let m = &ra.request_mirror_policies[0];
    assert_eq!(
        m.cluster,
        "outbound|9080|v2|reviews.default.svc.cluster.local"
    );
    assert_eq!(
        m.runtime_fraction
            .as_ref()
            .unwrap()
            .default_value
            .unwrap()
            .numerator,
        250_000
    );
    let any = &routes[0].typed_per_filter_config["envoy.filters.http.cors"];
    let cors = CorsPolicy::decode(any.value.as_slice()).unwrap();
    assert_eq!(cors.allow_methods, "GET,POST");
    assert_eq!(cors.max_age, "86400");
    assert!(cors.allow_credentials.unwrap().value);
    assert_eq!(cors.allow_origin_string_match.len(), 1);
}

#[test]
fn destination_rule_policies_become_cluster_settings() {
    let mut objs: Vec<ConfigObject> = bookinfo()
        .into_iter()
        .filter(|o| !(o.kind == "DestinationRule" && o.metadata.name == "reviews"))
        .collect();
    objs.extend(objects(serde_json::json!([
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
         "metadata": {"name": "reviews", "namespace": "default"},
         "spec": {"host": "reviews",
            "trafficPolicy": {
                "loadBalancer": {"simple": "LEAST_CONN"},
                "connectionPool": {"tcp": {"maxConnections": 1},
                                   "http": {"http1MaxPendingRequests": 1, "maxRequestsPerConnection": 1}},
                "outlierDetection": {"consecutive5xxErrors": 1, "interval": "1s",
                                     "baseEjectionTime": "3m", "maxEjectionPercent": 100}},
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"},
                 "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"},
                    "portLevelSettings": [{"port": {"number": 9080},
                        "connectionPool": {"http": {"http2MaxRequests": 7}}}]}},
                {"name": "v2", "labels": {"version": "v2"}}]}}
    ])));
    let cfg = translate(&registry(objs), &sidecar("default"), &opts());
    let top = cluster(&cfg, "outbound|9080||reviews.default.svc.cluster.local");
    assert_eq!(top.lb_policy, cluster::LbPolicy::LeastRequest as i32);
    let t = &top.circuit_breakers.as_ref().unwrap().thresholds[0];
    assert_eq!(t.max_connections.unwrap().value, 1);
    assert_eq!(t.max_pending_requests.unwrap().value, 1);
    assert!(t.max_requests.is_none());
    #[allow(deprecated)]
    let mrpc = top.max_requests_per_connection.unwrap().value;
    assert_eq!(mrpc, 1);
    let od = top.outlier_detection.clone().unwrap();
    assert_eq!(od.consecutive_5xx.unwrap().value, 1);
    assert_eq!(od.enforcing_consecutive_5xx.unwrap().value, 100);
    assert_eq!(od.enforcing_consecutive_gateway_failure.unwrap().value, 0);
    assert_eq!(od.interval.unwrap().seconds, 1);
    assert_eq!(od.base_ejection_time.unwrap().seconds, 180);
    assert_eq!(od.max_ejection_percent.unwrap().value, 100);
    let v1 = cluster(&cfg, "outbound|9080|v1|reviews.default.svc.cluster.local");
    assert_eq!(v1.lb_policy, cluster::LbPolicy::Random as i32);
    let t = &v1.circuit_breakers.as_ref().unwrap().thresholds[0];
    assert_eq!(t.max_requests.unwrap().value, 7, "port level wins");
    assert!(t.max_connections.is_none(), "port level replaces the pool");
    assert!(v1.outlier_detection.is_some(), "inherited from the rule");
    let v2 = cluster(&cfg, "outbound|9080|v2|reviews.default.svc.cluster.local");
    assert_eq!(v2.lb_policy, cluster::LbPolicy::LeastRequest as i32);
    let plain = cluster(&cfg, "outbound|9080||ratings.default.svc.cluster.local");
    assert!(plain.circuit_breakers.is_none() && plain.outlier_detection.is_none());
}

#[test]
fn consistent_hash_becomes_ring_hash_and_route_hash_policy() {
    use mesh_proto::envoy::envoy::config::route::v3::route_action::hash_policy::PolicySpecifier;
    let mut objs: Vec<ConfigObject> = bookinfo()
        .into_iter()
        .filter(|o| {
            !(o.kind == "DestinationRule" && o.metadata.name == "ratings")
                && o.metadata.name != "ratings-broken"
        })
        .collect();
    objs.extend(objects(serde_json::json!([
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
         "metadata": {"name": "ratings", "namespace": "default"},
         "spec": {"host": "ratings",
                  "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpHeaderName": "X-User"}}}}}
    ])));
    let cfg = translate(&registry(objs), &sidecar("default"), &opts());
    let c = cluster(&cfg, "outbound|9080||ratings.default.svc.cluster.local");
    assert_eq!(c.lb_policy, cluster::LbPolicy::RingHash as i32);
    let routes = ratings_routes(&cfg);
    let hp = &route_action_of(&routes[0]).hash_policy;
    assert_eq!(hp.len(), 1);
    match &hp[0].policy_specifier {
        Some(PolicySpecifier::Header(h)) => assert_eq!(h.header_name, "x-user"),
        other => panic!("{other:?}"),
    }
    // Other services keep no hash policy.
    let reviews = cfg.routes[0]
        .virtual_hosts
        .iter()
        .find(|v| v.name == "reviews.default.svc.cluster.local:9080")
        .unwrap();
    assert!(route_action_of(&reviews.routes[0]).hash_policy.is_empty());
}
