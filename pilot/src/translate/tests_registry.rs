//! ServiceEntry, WorkloadEntry and Sidecar scoping: config in, the encoded xDS resources decoded
//! back and checked per feature.

use mesh_proto::config::ConfigObject;
use mesh_proto::envoy::envoy::config::cluster::v3::{Cluster, cluster};
use mesh_proto::envoy::envoy::config::core::v3::{address, socket_address, transport_socket};
use mesh_proto::envoy::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use mesh_proto::envoy::envoy::config::listener::v3::{Listener, filter};
use mesh_proto::envoy::envoy::config::route::v3::{
    RouteConfiguration, VirtualHost, route, route_action,
};
use mesh_proto::envoy::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use mesh_proto::envoy::envoy::extensions::transport_sockets::tls::v3::{
    UpstreamTlsContext, common_tls_context,
};
use mesh_proto::envoy::envoy::r#type::matcher::v3::string_matcher;
use mesh_proto::type_url;
use prost::Message;

use super::*;
use crate::galley_client::Snapshot;
use crate::model::Registry;

fn objects(v: serde_json::Value) -> Vec<ConfigObject> {
    serde_json::from_value(v).unwrap()
}

fn registry(v: serde_json::Value) -> Registry {
    Registry::from_snapshot(&Snapshot::from_objects(objects(v)), "cluster.local")
}

fn opts() -> Options {
    Options {
        trust_domain: "cluster.local".into(),
    }
}

fn sidecar(ns: &str, app: &str) -> ProxyInfo {
    let mut p = ProxyInfo::from_id(&format!(
        "sidecar~10.0.0.9~{app}-1.{ns}~{ns}.svc.cluster.local"
    ))
    .unwrap();
    p.labels.insert("app".into(), app.into());
    p
}

/// The proxy's config as it goes on the wire, decoded back.
struct Wire {
    clusters: Vec<Cluster>,
    endpoints: Vec<ClusterLoadAssignment>,
    listeners: Vec<Listener>,
    routes: Vec<RouteConfiguration>,
    bytes: usize,
}

fn wire(reg: &Registry, proxy: &ProxyInfo) -> Wire {
    let enc = translate(reg, proxy, &opts()).encode();
    let bytes = XdsType::ALL
        .iter()
        .flat_map(|t| &enc.get(*t).resources)
        .map(|r| r.resource.value.len())
        .sum();
    fn dec<M: Message + Default>(t: &TypeResources, url: &str) -> Vec<M> {
        t.resources
            .iter()
            .map(|r| {
                assert_eq!(r.resource.type_url, url);
                M::decode(r.resource.value.as_slice()).unwrap()
            })
            .collect()
    }
    Wire {
        clusters: dec(&enc.clusters, type_url::CLUSTER),
        endpoints: dec(&enc.endpoints, type_url::ENDPOINT),
        listeners: dec(&enc.listeners, type_url::LISTENER),
        routes: dec(&enc.routes, type_url::ROUTE),
        bytes,
    }
}

impl Wire {
    fn cluster(&self, name: &str) -> &Cluster {
        self.clusters
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no cluster {name}: {:?}", self.cluster_names()))
    }
    fn cluster_names(&self) -> Vec<&str> {
        self.clusters.iter().map(|c| c.name.as_str()).collect()
    }
    fn cla(&self, name: &str) -> Option<&ClusterLoadAssignment> {
        self.endpoints.iter().find(|c| c.cluster_name == name)
    }
    fn vhosts(&self) -> &[VirtualHost] {
        &self
            .routes
            .iter()
            .find(|r| r.name == HTTP_PROXY_ROUTE)
            .expect("http_proxy")
            .virtual_hosts
    }
    fn vhost(&self, name: &str) -> &VirtualHost {
        self.vhosts()
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no virtual host {name}"))
    }
    fn listener_names(&self) -> Vec<&str> {
        self.listeners.iter().map(|l| l.name.as_str()).collect()
    }
}

fn discovery(c: &Cluster) -> cluster::DiscoveryType {
    match c.cluster_discovery_type {
        Some(cluster::ClusterDiscoveryType::Type(t)) => {
            cluster::DiscoveryType::try_from(t).unwrap()
        }
        ref other => panic!("no type: {other:?}"),
    }
}

fn addrs(cla: &ClusterLoadAssignment) -> Vec<String> {
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

fn sans(c: &Cluster) -> Option<Vec<String>> {
    let ts = c.transport_socket.as_ref()?;
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
        panic!("no typed config")
    };
    let t = UpstreamTlsContext::decode(any.value.as_slice()).unwrap();
    let Some(common_tls_context::ValidationContextType::CombinedValidationContext(v)) =
        &t.common_tls_context.unwrap().validation_context_type
    else {
        panic!("no validation context")
    };
    Some(
        v.default_validation_context
            .as_ref()
            .unwrap()
            .match_typed_subject_alt_names
            .iter()
            .map(|m| match &m.matcher.as_ref().unwrap().match_pattern {
                Some(string_matcher::MatchPattern::Exact(s)) => s.clone(),
                other => panic!("not exact: {other:?}"),
            })
            .collect(),
    )
}

fn route_targets(vh: &VirtualHost) -> Vec<String> {
    vh.routes
        .iter()
        .flat_map(|r| match &r.action {
            Some(route::Action::Route(ra)) => match ra.cluster_specifier.as_ref().unwrap() {
                route_action::ClusterSpecifier::Cluster(c) => vec![c.clone()],
                route_action::ClusterSpecifier::WeightedClusters(w) => {
                    w.clusters.iter().map(|c| c.name.clone()).collect()
                }
                other => panic!("unexpected {other:?}"),
            },
            other => panic!("not a route: {other:?}"),
        })
        .collect()
}

fn tcp_proxy_cluster(l: &Listener) -> String {
    let Some(filter::ConfigType::TypedConfig(any)) = &l.filter_chains[0].filters[0].config_type
    else {
        panic!("no typed config")
    };
    let tp = TcpProxy::decode(any.value.as_slice()).unwrap();
    match tp.cluster_specifier {
        Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => c,
        other => panic!("{other:?}"),
    }
}

fn service_entry(ns: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "ServiceEntry",
                       "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

#[test]
fn dns_service_entries_become_strict_and_logical_dns_clusters() {
    let reg = registry(serde_json::json!([
        service_entry("default", "httpbin", serde_json::json!({
            "hosts": ["httpbin.org"], "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
            "resolution": "DNS"})),
        service_entry("default", "db", serde_json::json!({
            "hosts": ["db.corp.example"], "ports": [{"number": 5432, "name": "tcp-pg", "protocol": "TCP"}],
            "resolution": "DNS", "location": "MESH_EXTERNAL",
            "endpoints": [{"address": "db-a.corp.example", "labels": {"role": "primary"}},
                          {"address": "db-b.corp.example", "ports": {"tcp-pg": 6432}, "labels": {"role": "replica"}}]})),
        service_entry("default", "one", serde_json::json!({
            "hosts": ["one.example.com"], "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}],
            "resolution": "DNS_ROUND_ROBIN", "endpoints": [{"address": "lb.example.com"}]})),
        {"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
         "metadata": {"name": "db", "namespace": "default"},
         "spec": {"host": "db.corp.example", "subsets": [{"name": "primary", "labels": {"role": "primary"}}]}}
    ]));
    assert!(reg.problems.is_empty(), "{:?}", reg.problems);
    let w = wire(&reg, &sidecar("default", "client"));

    let httpbin = w.cluster("outbound|80||httpbin.org");
    assert_eq!(discovery(httpbin), cluster::DiscoveryType::StrictDns);
    assert!(httpbin.eds_cluster_config.is_none());
    assert_eq!(
        httpbin.dns_lookup_family,
        cluster::DnsLookupFamily::V4Only as i32
    );
    let la = httpbin.load_assignment.as_ref().expect("inline endpoints");
    assert_eq!(la.cluster_name, httpbin.name);
    assert_eq!(addrs(la), vec!["httpbin.org:80"], "the host itself");
    assert!(sans(httpbin).is_none(), "MESH_EXTERNAL: no Istio mTLS");
    assert!(
        w.cla("outbound|80||httpbin.org").is_none(),
        "not an EDS cluster"
    );

    let db = w.cluster("outbound|5432||db.corp.example");
    assert_eq!(discovery(db), cluster::DiscoveryType::StrictDns);
    assert_eq!(
        addrs(db.load_assignment.as_ref().unwrap()),
        vec!["db-a.corp.example:5432", "db-b.corp.example:6432"]
    );
    let primary = w.cluster("outbound|5432|primary|db.corp.example");
    assert_eq!(
        addrs(primary.load_assignment.as_ref().unwrap()),
        vec!["db-a.corp.example:5432"],
        "subset by endpoint labels"
    );
    // The TCP port gets its listener.
    let l = w
        .listeners
        .iter()
        .find(|l| l.name == "0.0.0.0_5432")
        .unwrap();
    assert_eq!(tcp_proxy_cluster(l), "outbound|5432||db.corp.example");

    let one = w.cluster("outbound|443||one.example.com");
    assert_eq!(discovery(one), cluster::DiscoveryType::LogicalDns);
    assert_eq!(
        addrs(one.load_assignment.as_ref().unwrap()),
        vec!["lb.example.com:443"]
    );
}

#[test]
fn static_service_entry_is_eds_with_locality_weights_subsets_and_routes() {
    let reg = registry(serde_json::json!([
        service_entry("default", "api", serde_json::json!({
            "hosts": ["api.internal.example"], "location": "MESH_INTERNAL", "resolution": "STATIC",
            "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
            "subjectAltNames": ["spiffe://other.domain/ns/x/sa/api"],
            "endpoints": [
                {"address": "10.1.0.1", "labels": {"version": "v1"}, "locality": "us-east/a", "weight": 3, "serviceAccount": "api"},
                {"address": "10.1.0.2", "labels": {"version": "v2"}, "locality": "us-east/b", "ports": {"http": 9090}},
                {"address": "10.1.0.3", "labels": {"version": "v2"}}]})),
        {"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
         "metadata": {"name": "api", "namespace": "default"},
         "spec": {"host": "api.internal.example", "subsets": [
             {"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]}},
        {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
         "metadata": {"name": "api", "namespace": "default"},
         "spec": {"hosts": ["api.internal.example"], "http": [{"route": [
             {"destination": {"host": "api.internal.example", "subset": "v1"}, "weight": 90},
             {"destination": {"host": "api.internal.example", "subset": "v2"}, "weight": 10}]}]}}
    ]));
    assert!(reg.problems.is_empty(), "{:?}", reg.problems);
    let w = wire(&reg, &sidecar("default", "client"));
    let host = "api.internal.example";
    let c = w.cluster(&format!("outbound|8080||{host}"));
    assert_eq!(discovery(c), cluster::DiscoveryType::Eds);
    assert_eq!(
        sans(c).expect("MESH_INTERNAL: Istio mTLS"),
        vec![
            "spiffe://cluster.local/ns/default/sa/api",
            "spiffe://cluster.local/ns/default/sa/default",
            "spiffe://other.domain/ns/x/sa/api"
        ]
    );
    let cla = w.cla(&format!("outbound|8080||{host}")).unwrap();
    let localities: Vec<(String, String, Vec<String>)> = cla
        .endpoints
        .iter()
        .map(|l| {
            let loc = l.locality.clone().unwrap_or_default();
            let a = l
                .lb_endpoints
                .iter()
                .map(|e| {
                    format!(
                        "{}",
                        e.load_balancing_weight.as_ref().map_or(1, |w| w.value)
                    )
                })
                .collect();
            (loc.region, loc.zone, a)
        })
        .collect();
    assert_eq!(
        localities,
        vec![
            (String::new(), String::new(), vec!["1".to_string()]),
            ("us-east".into(), "a".into(), vec!["3".into()]),
            ("us-east".into(), "b".into(), vec!["1".into()]),
        ]
    );
    assert_eq!(
        addrs(w.cla(&format!("outbound|8080|v2|{host}")).unwrap()),
        vec!["10.1.0.3:8080", "10.1.0.2:9090"]
    );
    assert_eq!(
        addrs(w.cla(&format!("outbound|8080|v1|{host}")).unwrap()),
        vec!["10.1.0.1:8080"]
    );
    let vh = w.vhost(&format!("{host}:8080"));
    assert_eq!(vh.domains, vec![host.to_string(), format!("{host}:8080")]);
    assert_eq!(
        route_targets(vh),
        vec![
            format!("outbound|8080|v1|{host}"),
            format!("outbound|8080|v2|{host}")
        ],
        "the VirtualService applies to the ServiceEntry host"
    );
}

#[test]
fn resolution_none_is_original_dst_and_hosts_stay_as_written() {
    let reg = registry(serde_json::json!([
        service_entry("default", "google", serde_json::json!({
            "hosts": ["*.google.com"], "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}]})),
        service_entry("default", "example", serde_json::json!({
            "hosts": ["example.com"], "ports": [{"number": 80, "name": "http"}], "resolution": "NONE"})),
        {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
         "metadata": {"name": "example", "namespace": "default"},
         "spec": {"hosts": ["example.com"], "http": [{"timeout": "3s", "route": [{"destination": {"host": "example.com"}}]}]}}
    ]));
    assert!(reg.problems.is_empty(), "{:?}", reg.problems);
    assert_eq!(reg.resolve("example.com", "default"), "example.com");
    let w = wire(&reg, &sidecar("default", "client"));
    let g = w.cluster("outbound|443||*.google.com");
    assert_eq!(discovery(g), cluster::DiscoveryType::OriginalDst);
    assert_eq!(g.lb_policy, cluster::LbPolicy::ClusterProvided as i32);
    assert!(g.load_assignment.is_none() && g.eds_cluster_config.is_none());
    assert!(w.cla("outbound|443||*.google.com").is_none());
    let vh = w.vhost("example.com:80");
    assert_eq!(route_targets(vh), vec!["outbound|80||example.com"]);
    let Some(route::Action::Route(ra)) = &vh.routes[0].action else {
        panic!()
    };
    assert_eq!(
        ra.timeout.as_ref().map(|d| d.seconds),
        Some(3),
        "the VS, not the default route"
    );
}

#[test]
fn workload_entries_join_kubernetes_services_and_service_entries() {
    let reg = registry(serde_json::json!([
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "details", "namespace": "default"},
         "spec": {"selector": {"app": "details"}, "ports": [{"name": "http", "port": 9080, "targetPort": 9080}]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "details", "namespace": "default"},
         "subsets": [{"addresses": [{"ip": "10.0.0.1", "targetRef": {"kind": "Pod", "name": "details-v1"}}],
                      "ports": [{"name": "http", "port": 9080}]}]},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "details-v1", "namespace": "default",
         "labels": {"app": "details", "version": "v1"}}, "spec": {"serviceAccountName": "bookinfo-details"}},
        {"apiVersion": "networking.istio.io/v1beta1", "kind": "WorkloadEntry",
         "metadata": {"name": "details-vm", "namespace": "default"},
         "spec": {"address": "10.9.0.5", "ports": {"http": 19080},
                  "labels": {"app": "details", "version": "vm"}, "serviceAccount": "details-vm"}},
        {"apiVersion": "networking.istio.io/v1beta1", "kind": "WorkloadEntry",
         "metadata": {"name": "elsewhere", "namespace": "prod"},
         "spec": {"address": "10.9.0.6", "labels": {"app": "details"}}},
        {"apiVersion": "networking.istio.io/v1beta1", "kind": "WorkloadEntry",
         "metadata": {"name": "legacy-1", "namespace": "default"},
         "spec": {"address": "10.9.1.1", "labels": {"app": "legacy"}, "serviceAccount": "legacy"}},
        service_entry("default", "legacy", serde_json::json!({
            "hosts": ["legacy.default.svc.cluster.local"], "location": "MESH_INTERNAL", "resolution": "STATIC",
            "ports": [{"number": 7000, "name": "http"}], "workloadSelector": {"labels": {"app": "legacy"}}})),
        {"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
         "metadata": {"name": "details", "namespace": "default"},
         "spec": {"host": "details", "subsets": [{"name": "vm", "labels": {"version": "vm"}}]}}
    ]));
    assert!(reg.problems.is_empty(), "{:?}", reg.problems);
    let w = wire(&reg, &sidecar("default", "client"));
    let d = "details.default.svc.cluster.local";
    assert_eq!(
        addrs(w.cla(&format!("outbound|9080||{d}")).unwrap()),
        vec!["10.0.0.1:9080", "10.9.0.5:19080"],
        "the pod and the VM of the same namespace"
    );
    assert_eq!(
        addrs(w.cla(&format!("outbound|9080|vm|{d}")).unwrap()),
        vec!["10.9.0.5:19080"]
    );
    assert_eq!(
        sans(w.cluster(&format!("outbound|9080||{d}"))).unwrap(),
        vec![
            "spiffe://cluster.local/ns/default/sa/bookinfo-details",
            "spiffe://cluster.local/ns/default/sa/details-vm"
        ],
        "secure naming covers the VM's service account"
    );
    let legacy = "legacy.default.svc.cluster.local";
    assert_eq!(
        addrs(w.cla(&format!("outbound|7000||{legacy}")).unwrap()),
        vec!["10.9.1.1:7000"]
    );
    assert_eq!(
        sans(w.cluster(&format!("outbound|7000||{legacy}"))).unwrap(),
        vec!["spiffe://cluster.local/ns/default/sa/legacy"]
    );
    // A short name written in its namespace reaches the ServiceEntry's Kubernetes-style host.
    assert!(reg.services.contains_key(&reg.resolve("legacy", "default")));
    assert_eq!(
        w.vhost(&format!("{legacy}:7000")).domains,
        vec![legacy.to_string(), format!("{legacy}:7000")]
    );
}

/// `n` Kubernetes Services `svc-<i>` in `default`, each with two ports, endpoints and a
/// DestinationRule with two subsets.
fn many_services(n: usize) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for i in 0..n {
        let name = format!("svc-{i}");
        out.push(serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 8080}, {"name": "tcp-data", "port": 10000 + i}]}}));
        out.push(serde_json::json!({"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": name, "namespace": "default"},
            "subsets": [{"addresses": [
                {"ip": format!("10.2.{}.1", i), "targetRef": {"kind": "Pod", "name": format!("{name}-a")}},
                {"ip": format!("10.2.{}.2", i), "targetRef": {"kind": "Pod", "name": format!("{name}-b")}}],
              "ports": [{"name": "http", "port": 8080}, {"name": "tcp-data", "port": 10000 + i}]}]}));
        for (pod, v) in [("a", "v1"), ("b", "v2")] {
            out.push(serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{name}-{pod}"), "namespace": "default",
                             "labels": {"app": name, "version": v}},
                "spec": {"serviceAccountName": name}}));
        }
        out.push(serde_json::json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"host": name, "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                               {"name": "v2", "labels": {"version": "v2"}}]}}));
    }
    out
}

fn sidecar_resource(ns: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "Sidecar",
                       "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

#[test]
fn sidecar_egress_hosts_scope_every_resource_type() {
    let mut objs = many_services(100);
    objs.push(sidecar_resource(
        "default",
        "client",
        serde_json::json!({"workloadSelector": {"labels": {"app": "client"}},
                           "egress": [{"hosts": ["./svc-1", "./svc-2.default.svc.cluster.local",
                                                 "default/svc-3", "*/svc-4", "./svc-5"]}]}),
    ));
    let reg = registry(serde_json::Value::Array(objs));
    assert!(reg.problems.is_empty(), "{:?}", reg.problems);
    let scoped = wire(&reg, &sidecar("default", "client"));
    let full = wire(&reg, &sidecar("default", "other"));

    let visible: std::collections::BTreeSet<String> = scoped
        .clusters
        .iter()
        .map(|c| c.name.rsplit('|').next().unwrap().to_string())
        .collect();
    let expected: std::collections::BTreeSet<String> = (1..=5)
        .map(|i| format!("svc-{i}.default.svc.cluster.local"))
        .collect();
    assert_eq!(visible, expected);
    assert_eq!(
        scoped.clusters.len(),
        5 * 2 * 3,
        "2 ports × (1 + 2 subsets)"
    );
    assert_eq!(scoped.endpoints.len(), scoped.clusters.len());
    assert_eq!(full.clusters.len(), 100 * 2 * 3, "other sidecars see all");
    assert_eq!(scoped.vhosts().len(), 5 * 2);
    assert!(
        scoped
            .vhosts()
            .iter()
            .all(|v| v.name.starts_with("svc-") && expected.iter().any(|e| v.name.starts_with(e)))
    );
    let tcp: Vec<&str> = scoped
        .listener_names()
        .into_iter()
        .filter(|n| n.starts_with("0.0.0.0_"))
        .collect();
    assert_eq!(
        tcp,
        vec![
            "0.0.0.0_10001",
            "0.0.0.0_10002",
            "0.0.0.0_10003",
            "0.0.0.0_10004",
            "0.0.0.0_10005"
        ]
    );
    assert!(scoped.listener_names().contains(&VIRTUAL_OUTBOUND));
    assert!(scoped.listener_names().contains(&VIRTUAL_INBOUND));
    // No catch-all without an outboundTrafficPolicy.
    assert!(!scoped.vhosts().iter().any(|v| v.domains == ["*"]));

    let ratio = scoped.bytes as f64 / full.bytes as f64;
    assert!(
        ratio <= 0.10,
        "scoped config is {} bytes, full {} bytes: ratio {ratio:.3}",
        scoped.bytes,
        full.bytes
    );
    assert!(
        ratio >= 0.03,
        "ratio {ratio:.3}: the scoped config is not empty"
    );
}

#[test]
fn push_path_scopes_shared_cds_and_eds_like_translate() {
    let mut objs = many_services(10);
    objs.push(sidecar_resource(
        "default",
        "ns-default",
        serde_json::json!({"egress": [{"hosts": ["./svc-7"]}],
                           "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}),
    ));
    let reg = registry(serde_json::Value::Array(objs));
    let (c, e) = translate_shared(&reg, &opts());
    let shared_c = TypeResources::encode(
        type_url::CLUSTER,
        c.into_iter().map(|c| (c.name.clone(), c)),
    );
    let shared_e = TypeResources::encode(
        type_url::ENDPOINT,
        e.into_iter().map(|c| (c.cluster_name.clone(), c)),
    );
    let proxy = sidecar("default", "x");
    let scope = ScopedClusters::for_proxy(&reg, &proxy, &opts()).expect("scoped");
    let (pc, pe) = scope.apply(&shared_c, &shared_e);
    let direct = translate(&reg, &proxy, &opts()).encode();
    assert_eq!(pc, direct.clusters, "same CDS, same version");
    assert_eq!(pe, direct.endpoints);
    assert!(pc.get(BLACKHOLE_CLUSTER).is_some());
    // A router is never scoped by a Sidecar.
    let mut router =
        ProxyInfo::from_id("router~10.0.0.1~gw-1.default~default.svc.cluster.local").unwrap();
    router
        .labels
        .insert("istio".into(), "ingressgateway".into());
    assert!(ScopedClusters::for_proxy(&reg, &router, &opts()).is_none());
    assert!(
        ScopedClusters::for_proxy(
            &registry(serde_json::Value::Array(many_services(2))),
            &proxy,
            &opts()
        )
        .is_none(),
        "no Sidecar, no exportTo: shared CDS/EDS whole"
    );
}

#[test]
fn outbound_traffic_policy_catch_all() {
    let base = || {
        let mut o = many_services(2);
        o.push(service_entry("default", "ext", serde_json::json!({
            "hosts": ["api.example.com"], "ports": [{"number": 80, "name": "http"}], "resolution": "DNS"})));
        o
    };
    // Root namespace default: REGISTRY_ONLY for every namespace without its own Sidecar.
    let mut objs = base();
    objs.push(sidecar_resource(
        "istio-system",
        "default",
        serde_json::json!({"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}),
    ));
    objs.push(sidecar_resource(
        "open",
        "default",
        serde_json::json!({"egress": [{"hosts": ["*/*"]}], "outboundTrafficPolicy": {"mode": "ALLOW_ANY"}}),
    ));
    let reg = registry(serde_json::Value::Array(objs));
    assert!(reg.problems.is_empty(), "{:?}", reg.problems);

    let blocked = wire(&reg, &sidecar("default", "a"));
    let last = blocked.vhosts().last().unwrap();
    assert_eq!(last.name, "block_all");
    assert_eq!(last.domains, vec!["*"]);
    // Istio 1.4's answer for an unknown host under REGISTRY_ONLY: a direct 502.
    match &last.routes[0].action {
        Some(route::Action::DirectResponse(d)) => assert_eq!(d.status, 502),
        other => panic!("block_all is not a direct response: {other:?}"),
    }
    let bh = blocked.cluster(BLACKHOLE_CLUSTER);
    assert_eq!(discovery(bh), cluster::DiscoveryType::Static);
    assert!(bh.load_assignment.is_none());
    // Registered hosts still route (egress defaults to */*).
    assert_eq!(
        route_targets(blocked.vhost("api.example.com:80")),
        vec!["outbound|80||api.example.com"]
    );
    assert_eq!(blocked.vhosts().len(), 2 * 2 + 1 + 1);

    let open = wire(&reg, &sidecar("open", "a"));
    let last = open.vhosts().last().unwrap();
    assert_eq!(last.name, "allow_any");
    assert_eq!(route_targets(last), vec![PASSTHROUGH_CLUSTER]);
    let pt = open.cluster(PASSTHROUGH_CLUSTER);
    assert_eq!(discovery(pt), cluster::DiscoveryType::OriginalDst);
    assert_eq!(pt.lb_policy, cluster::LbPolicy::ClusterProvided as i32);

    // No Sidecar anywhere: no catch-all, no special clusters (unknown hosts: no route, 404).
    let plain = wire(
        &registry(serde_json::Value::Array(base())),
        &sidecar("default", "a"),
    );
    assert!(!plain.vhosts().iter().any(|v| v.domains == ["*"]));
    assert!(!plain.cluster_names().contains(&PASSTHROUGH_CLUSTER));
}

#[test]
fn export_to_hides_service_entries_and_config_from_other_namespaces() {
    let reg = registry(serde_json::json!([
        service_entry("team-a", "private", serde_json::json!({
            "hosts": ["private.example.com"], "ports": [{"number": 80, "name": "http"}],
            "resolution": "DNS", "exportTo": ["."]})),
        service_entry("team-a", "shared", serde_json::json!({
            "hosts": ["shared.example.com"], "ports": [{"number": 80, "name": "http"}],
            "resolution": "DNS", "exportTo": ["team-b"]})),
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "internal", "namespace": "team-a",
                      "annotations": {"networking.istio.io/exportTo": "., team-c"}},
         "spec": {"ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
         "metadata": {"name": "shared-a-only", "namespace": "team-a"},
         "spec": {"hosts": ["shared.example.com"], "exportTo": ["."],
                  "http": [{"timeout": "1s", "route": [{"destination": {"host": "shared.example.com"}}]}]}}
    ]));
    assert!(reg.problems.is_empty(), "{:?}", reg.problems);
    let a = wire(&reg, &sidecar("team-a", "x"));
    let b = wire(&reg, &sidecar("team-b", "x"));
    let c = wire(&reg, &sidecar("team-c", "x"));
    assert_eq!(
        a.cluster_names(),
        vec![
            "outbound|80||internal.team-a.svc.cluster.local",
            "outbound|80||private.example.com"
        ],
        "shared.example.com is exported to team-b only"
    );
    assert_eq!(b.cluster_names(), vec!["outbound|80||shared.example.com"]);
    assert_eq!(
        c.cluster_names(),
        vec!["outbound|80||internal.team-a.svc.cluster.local"],
        "the Service's exportTo annotation"
    );
    let Some(route::Action::Route(ra)) = &b.vhost("shared.example.com:80").routes[0].action else {
        panic!()
    };
    assert!(
        ra.timeout.is_none(),
        "team-a's VirtualService is not exported to team-b"
    );
}

#[test]
fn dangling_references_never_break_other_config() {
    let good = serde_json::json!([
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews", "namespace": "default"},
         "spec": {"ports": [{"name": "http", "port": 9080}]}},
        service_entry("default", "ext", serde_json::json!({
            "hosts": ["api.example.com"], "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}], "resolution": "DNS"}))
    ]);
    let mut with_dangling = good.as_array().unwrap().clone();
    with_dangling.extend(objects_json(serde_json::json!([
        // A VirtualService for a ServiceEntry host that does not exist.
        {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
         "metadata": {"name": "ghost", "namespace": "default"},
         "spec": {"hosts": ["ghost.example.com"], "http": [{"route": [{"destination": {"host": "ghost.example.com"}}]}]}},
        // A DestinationRule for it, and a Sidecar naming it.
        {"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
         "metadata": {"name": "ghost", "namespace": "default"},
         "spec": {"host": "ghost.example.com", "subsets": [{"name": "v1", "labels": {"v": "1"}}]}},
        // A ServiceEntry that cannot be read is left out alone.
        service_entry("default", "broken", serde_json::json!({"hosts": ["*.bad.example"], "ports": [{"number": 80}], "resolution": "DNS"})),
        // A VirtualService on an existing host routing to a missing ServiceEntry host.
        {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
         "metadata": {"name": "to-ghost", "namespace": "default"},
         "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "ghost.example.com", "port": {"number": 80}}}]}]}}
    ])));
    let before = wire(&registry(good), &sidecar("default", "x"));
    let reg = registry(serde_json::Value::Array(with_dangling));
    assert_eq!(reg.problems.len(), 1, "{:?}", reg.problems);
    assert!(reg.problems[0].contains("default/broken"));
    let after = wire(&reg, &sidecar("default", "x"));
    assert_eq!(before.clusters, after.clusters, "no ghost clusters");
    assert_eq!(before.endpoints, after.endpoints);
    assert_eq!(before.listeners, after.listeners);
    assert_eq!(
        route_targets(after.vhost("reviews.default.svc.cluster.local:9080")),
        vec!["outbound|80||ghost.example.com"],
        "the route points where the VS says; the proxy answers 503 for the missing cluster"
    );
    assert_eq!(
        before.vhost("api.example.com:443"),
        after.vhost("api.example.com:443")
    );
    assert!(
        !after
            .vhosts()
            .iter()
            .any(|v| v.name.starts_with("ghost.example.com"))
    );
}

fn objects_json(v: serde_json::Value) -> Vec<serde_json::Value> {
    v.as_array().unwrap().clone()
}
