//! Sidecar `ingress[]`: the xDS a selected sidecar gets, encoded and decoded as the proxy
//! receives it.

use mesh_proto::config::ConfigObject;
use mesh_proto::envoy::envoy::config::cluster::v3::{Cluster, cluster};
use mesh_proto::envoy::envoy::config::core::v3::{Address, address, socket_address};
use mesh_proto::envoy::envoy::config::endpoint::v3::lb_endpoint;
use mesh_proto::envoy::envoy::config::listener::v3::{FilterChain, Listener, filter};
use mesh_proto::envoy::envoy::config::route::v3::{route, route_action};
use mesh_proto::envoy::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use mesh_proto::envoy::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use mesh_proto::type_url;
use prost::{Message, Name};
use serde_json::{Value, json};

use super::inbound::INBOUND_PASSTHROUGH;
use super::*;
use crate::galley_client::Snapshot;
use crate::model::Registry;

fn obj(api: &str, kind: &str, name: &str, spec: Value) -> ConfigObject {
    serde_json::from_value(json!({
        "apiVersion": api, "kind": kind,
        "metadata": {"name": name, "namespace": "default"}, "spec": spec
    }))
    .unwrap()
}

fn sidecar(name: &str, spec: Value) -> ConfigObject {
    obj("networking.istio.io/v1beta1", "Sidecar", name, spec)
}

fn proxy(app: &str) -> ProxyInfo {
    let mut p = ProxyInfo::from_id(&format!(
        "sidecar~10.1.2.3~{app}-v1.default~default.svc.cluster.local"
    ))
    .unwrap();
    p.labels.insert("app".into(), app.into());
    p
}

fn registry(objs: Vec<ConfigObject>) -> Registry {
    Registry::from_snapshot(&Snapshot::from_objects(objs), "cluster.local")
}

fn opts() -> Options {
    Options {
        trust_domain: "cluster.local".into(),
    }
}

/// (clusters by name, virtualInbound), decoded from the encoded config.
fn translated(reg: &Registry, app: &str) -> (Vec<Cluster>, Listener, Vec<Skipped>) {
    let cfg = translate(reg, &proxy(app), &opts());
    let enc = cfg.encode();
    let clusters = enc
        .clusters
        .resources
        .iter()
        .map(|r| {
            assert_eq!(r.resource.type_url, type_url::CLUSTER);
            Cluster::decode(r.resource.value.as_slice()).unwrap()
        })
        .collect();
    let any = &enc.listeners.get(VIRTUAL_INBOUND).unwrap().resource;
    let l = Listener::decode(any.value.as_slice()).unwrap();
    (clusters, l, cfg.skipped)
}

fn sock(a: &Address) -> (String, u32) {
    let Some(address::Address::SocketAddress(sa)) = &a.address else {
        panic!("not a socket address: {a:?}")
    };
    let Some(socket_address::PortSpecifier::PortValue(p)) = sa.port_specifier else {
        panic!("no port")
    };
    (sa.address.clone(), p)
}

/// The single endpoint of a STATIC cluster.
fn static_endpoint(c: &Cluster) -> (String, u32) {
    assert_eq!(
        c.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32
        ))
    );
    let la = c.load_assignment.as_ref().unwrap();
    let lb = &la.endpoints[0].lb_endpoints;
    assert_eq!(lb.len(), 1);
    let Some(lb_endpoint::HostIdentifier::Endpoint(e)) = &lb[0].host_identifier else {
        panic!("no endpoint")
    };
    sock(e.address.as_ref().unwrap())
}

fn port_chains(l: &Listener, port: u32) -> Vec<&FilterChain> {
    l.filter_chains
        .iter()
        .filter(|c| {
            c.filter_chain_match
                .as_ref()
                .and_then(|m| m.destination_port)
                .map(|p| p.value)
                == Some(port)
        })
        .collect()
}

/// The cluster an HTTP chain's inline route sends to.
fn http_cluster(c: &FilterChain) -> String {
    let Some(filter::ConfigType::TypedConfig(tc)) = &c.filters[0].config_type else {
        panic!("no typed config")
    };
    assert_eq!(tc.type_url, type_url::HTTP_CONNECTION_MANAGER);
    let hcm = HttpConnectionManager::decode(tc.value.as_slice()).unwrap();
    let Some(RouteSpecifier::RouteConfig(rc)) = hcm.route_specifier else {
        panic!("no inline route")
    };
    let Some(route::Action::Route(ra)) = &rc.virtual_hosts[0].routes[0].action else {
        panic!("no route action")
    };
    let Some(route_action::ClusterSpecifier::Cluster(name)) = &ra.cluster_specifier else {
        panic!("no cluster")
    };
    // The inbound filters run on this port too (RBAC is there when a policy selects it).
    assert!(
        hcm.http_filters
            .iter()
            .any(|f| f.name == "envoy.filters.http.router")
    );
    name.clone()
}

fn filter_names(c: &FilterChain) -> Vec<String> {
    let Some(filter::ConfigType::TypedConfig(tc)) = &c.filters[0].config_type else {
        panic!("no typed config")
    };
    HttpConnectionManager::decode(tc.value.as_slice())
        .unwrap()
        .http_filters
        .into_iter()
        .map(|f| f.name)
        .collect()
}

#[test]
fn loopback_endpoint_gets_a_static_cluster_and_port_chains_with_policies() {
    let reg = registry(vec![
        sidecar(
            "details",
            json!({"workloadSelector": {"labels": {"app": "details"}},
                   "ingress": [{"port": {"number": 9080, "protocol": "HTTP", "name": "http"},
                                "defaultEndpoint": "127.0.0.1:18080"}]}),
        ),
        obj(
            "security.istio.io/v1beta1",
            "PeerAuthentication",
            "strict",
            json!({"mtls": {"mode": "STRICT"}}),
        ),
        obj(
            "security.istio.io/v1beta1",
            "AuthorizationPolicy",
            "deny-all",
            json!({"selector": {"matchLabels": {"app": "details"}}}),
        ),
    ]);
    assert!(reg.problems.is_empty(), "{:?}", reg.problems);
    let (clusters, l, skipped) = translated(&reg, "details");
    assert!(skipped.is_empty(), "{skipped:?}");
    let c = clusters
        .iter()
        .find(|c| c.name == "inbound|9080||")
        .unwrap();
    assert_eq!(static_endpoint(c), ("127.0.0.1".to_string(), 18080));
    // STRICT applies to the ingress port: one mTLS chain routed to the ingress cluster.
    let chains = port_chains(&l, 9080);
    assert_eq!(chains.len(), 1);
    assert_eq!(
        chains[0]
            .filter_chain_match
            .as_ref()
            .unwrap()
            .transport_protocol,
        "tls"
    );
    assert!(chains[0].transport_socket.is_some());
    assert_eq!(http_cluster(chains[0]), "inbound|9080||");
    assert!(
        filter_names(chains[0]).contains(&"envoy.filters.http.rbac".to_string()),
        "AuthorizationPolicy applies on the ingress port"
    );
    // Other ports still go to the application as before; nothing is bound explicitly.
    let rest: Vec<_> = l
        .filter_chains
        .iter()
        .filter(|c| {
            c.filter_chain_match
                .as_ref()
                .unwrap()
                .destination_port
                .is_none()
        })
        .collect();
    assert_eq!(http_cluster(rest[0]), INBOUND_PASSTHROUGH);
    assert!(l.additional_addresses.is_empty());
    // A proxy the Sidecar does not select: no ingress.
    let (clusters, l, _) = translated(&reg, "reviews");
    assert!(clusters.iter().all(|c| !c.name.starts_with("inbound|")));
    assert!(port_chains(&l, 9080).is_empty());
}

#[test]
fn instance_ip_endpoint_and_tcp_port_under_permissive() {
    // The namespace-wide Sidecar (no selector) applies to every sidecar of the namespace.
    let reg = registry(vec![sidecar(
        "all",
        json!({"ingress": [
            {"port": {"number": 9080, "protocol": "HTTP"}, "defaultEndpoint": "0.0.0.0:8080"},
            {"port": {"number": 3306, "protocol": "TCP"}, "defaultEndpoint": "127.0.0.1:3307"}]}),
    )]);
    let (clusters, l, _) = translated(&reg, "ratings");
    let c = clusters
        .iter()
        .find(|c| c.name == "inbound|9080||")
        .unwrap();
    // Unspecified: the instance IP, filled in by the proxy (the same cluster for every pod).
    assert_eq!(static_endpoint(c), ("0.0.0.0".to_string(), 8080));
    // No PeerAuthentication: PERMISSIVE, a TLS and a plaintext chain.
    let chains = port_chains(&l, 9080);
    let transports: Vec<_> = chains
        .iter()
        .map(|c| {
            c.filter_chain_match
                .as_ref()
                .unwrap()
                .transport_protocol
                .clone()
        })
        .collect();
    assert_eq!(transports, vec!["tls", "raw_buffer"]);
    assert!(chains.iter().all(|c| http_cluster(c) == "inbound|9080||"));
    // The TCP port: a tcp_proxy to its cluster.
    let tcp = port_chains(&l, 3306);
    assert_eq!(tcp.len(), 2);
    let Some(filter::ConfigType::TypedConfig(tc)) = &tcp[0].filters[0].config_type else {
        panic!()
    };
    assert_eq!(tc.type_url, TcpProxy::type_url());
    let tp = TcpProxy::decode(tc.value.as_slice()).unwrap();
    assert_eq!(
        tp.cluster_specifier,
        Some(tcp_proxy::ClusterSpecifier::Cluster(
            "inbound|3306||".into()
        ))
    );
    let c = clusters
        .iter()
        .find(|c| c.name == "inbound|3306||")
        .unwrap();
    assert_eq!(static_endpoint(c), ("127.0.0.1".to_string(), 3307));
}

#[test]
fn capture_mode_none_and_bind_are_explicit_addresses() {
    let reg = registry(vec![sidecar(
        "details",
        json!({"workloadSelector": {"labels": {"app": "details"}},
               "ingress": [
            {"port": {"number": 9080, "protocol": "HTTP"}, "captureMode": "NONE",
             "defaultEndpoint": "127.0.0.1:18080"},
            {"port": {"number": 9443, "protocol": "HTTP"}, "bind": "10.1.2.3",
             "defaultEndpoint": "127.0.0.1:18443"},
            {"port": {"number": 9090, "protocol": "HTTP"}, "defaultEndpoint": "127.0.0.1:19090"}]}),
    )]);
    let (_, l, _) = translated(&reg, "details");
    let mut addrs: Vec<_> = l
        .additional_addresses
        .iter()
        .map(|a| sock(a.address.as_ref().unwrap()))
        .collect();
    addrs.sort();
    assert_eq!(
        addrs,
        vec![
            ("0.0.0.0".to_string(), 9080),
            ("10.1.2.3".to_string(), 9443)
        ],
        "captureMode NONE binds 0.0.0.0, bind binds its IP; the captured port binds nothing"
    );
    assert_eq!(sock(l.address.as_ref().unwrap()), ("0.0.0.0".into(), 15006));
    assert_eq!(http_cluster(port_chains(&l, 9443)[0]), "inbound|9443||");
}

#[test]
fn invalid_ingress_leaves_the_sidecar_out_and_unix_endpoints_are_reported() {
    let reg = registry(vec![
        sidecar(
            "bad-endpoint",
            json!({"workloadSelector": {"labels": {"app": "details"}},
                   "ingress": [{"port": {"number": 9080}, "defaultEndpoint": "details:8080"}]}),
        ),
        sidecar(
            "dup",
            json!({"workloadSelector": {"labels": {"app": "reviews"}},
                   "ingress": [{"port": {"number": 9080}, "defaultEndpoint": "127.0.0.1:1"},
                               {"port": {"number": 9080}, "defaultEndpoint": "127.0.0.1:2"}]}),
        ),
        sidecar(
            "zero",
            json!({"workloadSelector": {"labels": {"app": "zero"}},
                   "ingress": [{"port": {"number": 0}, "defaultEndpoint": "127.0.0.1:1"}]}),
        ),
        sidecar(
            "unix",
            json!({"workloadSelector": {"labels": {"app": "ratings"}},
                   "ingress": [{"port": {"number": 9080}, "defaultEndpoint": "unix:///run/app.sock"},
                               {"port": {"number": 9081}, "defaultEndpoint": "127.0.0.1:8081"}]}),
        ),
    ]);
    assert_eq!(reg.problems.len(), 3, "{:?}", reg.problems);
    assert!(reg.problems.iter().any(
        |p| p.contains("default/bad-endpoint") && p.contains("spec.ingress[0].defaultEndpoint")
    ));
    assert!(reg.problems.iter().any(|p| p.contains("default/dup")));
    assert!(reg.problems.iter().any(|p| p.contains("default/zero")));
    // The bad Sidecars are left out: those proxies get the usual inbound side.
    for app in ["details", "reviews", "zero"] {
        let (clusters, l, skipped) = translated(&reg, app);
        assert!(
            clusters.iter().all(|c| !c.name.starts_with("inbound|")),
            "{app}"
        );
        assert!(port_chains(&l, 9080).is_empty(), "{app}");
        assert!(skipped.is_empty());
    }
    // A unix socket endpoint: that port is left out with a reason, the other is served.
    let (clusters, l, skipped) = translated(&reg, "ratings");
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].virtual_service, "Sidecar default/unix");
    assert!(skipped[0].reason.contains("unix:///run/app.sock"));
    assert!(port_chains(&l, 9080).is_empty());
    assert!(clusters.iter().all(|c| c.name != "inbound|9080||"));
    assert_eq!(http_cluster(port_chains(&l, 9081)[0]), "inbound|9081||");
}

#[test]
fn scoped_clusters_carry_the_ingress_clusters() {
    let reg = registry(vec![sidecar(
        "details",
        json!({"workloadSelector": {"labels": {"app": "details"}},
               "ingress": [{"port": {"number": 9080}, "defaultEndpoint": "127.0.0.1:18080"}]}),
    )]);
    let scope = ScopedClusters::for_proxy(&reg, &proxy("details"), &opts()).unwrap();
    assert_eq!(
        scope
            .extra
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        vec!["inbound|9080||"]
    );
    let (cds, _) = scope.apply(&Default::default(), &Default::default());
    assert!(cds.get("inbound|9080||").is_some());
}
