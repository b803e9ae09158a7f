use mesh_proto::config::ConfigObject;
use mesh_proto::envoy::envoy::config::core::v3::data_source::Specifier;
use mesh_proto::envoy::envoy::config::listener::v3::filter;
use mesh_proto::envoy::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use mesh_proto::envoy::envoy::extensions::transport_sockets::tls::v3::{
    DownstreamTlsContext, common_tls_context::ValidationContextType,
};
use prost::Message;
use serde_json::json;

use super::*;
use crate::galley_client::Snapshot;
use crate::translate::{Options, ProxyConfig, ProxyInfo, translate};

fn router_config(objs: serde_json::Value) -> ProxyConfig {
    let objs: Vec<ConfigObject> = serde_json::from_value(objs).unwrap();
    let reg = Registry::from_snapshot(&Snapshot::from_objects(objs), "cluster.local");
    let mut router =
        ProxyInfo::from_id("router~127.0.0.1~gw-1.istio-system~istio-system.svc.cluster.local")
            .unwrap();
    router
        .labels
        .insert("istio".into(), "ingressgateway".into());
    translate(
        &reg,
        &router,
        &Options {
            trust_domain: "cluster.local".into(),
        },
    )
}

/// Services `db` (tcp 5432), `db-v2` (tcp 5433), `web` (http 80); gateway `gw` with `servers`;
/// then `extra` objects.
fn objects(servers: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    let mut v = json!([
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": "default"},
         "spec": {"ports": [{"name": "tcp", "port": 5432}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db-v2", "namespace": "default"},
         "spec": {"ports": [{"name": "tcp", "port": 5433}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
         "spec": {"ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": "networking.istio.io/v1alpha3", "kind": "Gateway",
         "metadata": {"name": "gw", "namespace": "default"},
         "spec": {"selector": {"istio": "ingressgateway"}, "servers": servers}}
    ]);
    v.as_array_mut()
        .unwrap()
        .extend(extra.as_array().unwrap().iter().cloned());
    v
}

fn tls_of(chain: &FilterChain) -> DownstreamTlsContext {
    let ts = chain.transport_socket.as_ref().expect("transport socket");
    assert_eq!(ts.name, TLS_TRANSPORT_SOCKET);
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
        panic!("no typed config");
    };
    assert_eq!(any.type_url, type_url::DOWNSTREAM_TLS_CONTEXT);
    DownstreamTlsContext::decode(any.value.as_slice()).unwrap()
}

fn tcp_of(chain: &FilterChain) -> TcpProxy {
    assert_eq!(chain.filters.len(), 1);
    assert_eq!(chain.filters[0].name, super::super::TCP_PROXY_FILTER);
    let Some(filter::ConfigType::TypedConfig(any)) = &chain.filters[0].config_type else {
        panic!("no typed config");
    };
    TcpProxy::decode(any.value.as_slice()).unwrap()
}

fn names(chain: &FilterChain) -> Vec<String> {
    chain
        .filter_chain_match
        .as_ref()
        .map(|m| m.server_names.clone())
        .unwrap_or_default()
}

#[test]
fn tls_simple_and_mutual_servers_terminate_and_tcp_proxy_to_the_vs_tcp_route() {
    let cfg = router_config(objects(
        json!([
            {"port": {"number": 9443, "name": "tls-db", "protocol": "TLS"},
             "hosts": ["db.example.com"],
             "tls": {"mode": "SIMPLE", "serverCertificate": "/certs/db.crt",
                     "privateKey": "/certs/db.key"}},
            {"port": {"number": 9443, "name": "tls-db-m", "protocol": "TLS"},
             "hosts": ["default/secure-db.example.com"],
             "tls": {"mode": "MUTUAL", "credentialName": "db-cred"}}
        ]),
        json!([
            {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
             "metadata": {"name": "db", "namespace": "default"},
             "spec": {"hosts": ["db.example.com"], "gateways": ["gw"], "tcp": [
                 {"match": [{"port": 1234}], "route": [{"destination": {"host": "web"}}]},
                 {"match": [{"port": 9443, "gateways": ["default/gw"]}], "route": [
                     {"destination": {"host": "db"}, "weight": 80},
                     {"destination": {"host": "db-v2"}, "weight": 20}]}]}},
            {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
             "metadata": {"name": "secure-db", "namespace": "default"},
             "spec": {"hosts": ["secure-db.example.com"], "gateways": ["gw"], "tcp": [
                 {"route": [{"destination": {"host": "db", "port": {"number": 5432}}}]}]}}
        ]),
    ));
    let names_l: Vec<&str> = cfg.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names_l,
        ["0.0.0.0_9443"],
        "a TLS-only port has no HTTP listener"
    );
    assert!(
        cfg.routes.is_empty(),
        "no http.9443 routes: {:?}",
        cfg.routes
    );
    let l = &cfg.listeners[0];
    assert!(l.listener_filters.iter().any(|f| f.name == TLS_INSPECTOR));
    assert_eq!(l.filter_chains.len(), 2);

    // SIMPLE: files, no ALPN, no client certificate; weighted clusters from the second rule
    // (the first names another port).
    let simple = &l.filter_chains[0];
    assert_eq!(names(simple), ["db.example.com"]);
    let ctx = tls_of(simple);
    assert_eq!(ctx.require_client_certificate, None);
    let common = ctx.common_tls_context.unwrap();
    assert!(common.alpn_protocols.is_empty());
    let cert = common.tls_certificates[0]
        .certificate_chain
        .as_ref()
        .unwrap();
    assert_eq!(
        cert.specifier,
        Some(Specifier::Filename("/certs/db.crt".into()))
    );
    let tp = tcp_of(simple);
    let Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) = tp.cluster_specifier else {
        panic!("not weighted: {:?}", tp.cluster_specifier);
    };
    let got: Vec<(&str, u32)> = w
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight))
        .collect();
    assert_eq!(
        got,
        [
            ("outbound|5432||db.default.svc.cluster.local", 80),
            ("outbound|5433||db-v2.default.svc.cluster.local", 20)
        ]
    );

    // MUTUAL via credentialName: SDS certificate and CA, client certificate required.
    let mutual = &l.filter_chains[1];
    assert_eq!(names(mutual), ["secure-db.example.com"]);
    let ctx = tls_of(mutual);
    assert_eq!(ctx.require_client_certificate.map(|b| b.value), Some(true));
    let common = ctx.common_tls_context.unwrap();
    assert_eq!(common.tls_certificate_sds_secret_configs[0].name, "db-cred");
    let Some(ValidationContextType::ValidationContextSdsSecretConfig(ca)) =
        common.validation_context_type
    else {
        panic!("no SDS CA");
    };
    assert_eq!(ca.name, "db-cred-cacert");
    assert_eq!(
        tcp_of(mutual).cluster_specifier,
        Some(tcp_proxy::ClusterSpecifier::Cluster(
            "outbound|5432||db.default.svc.cluster.local".into()
        ))
    );
    assert!(cfg.skipped.is_empty(), "{:?}", cfg.skipped);
}

#[test]
fn a_tls_server_without_a_matching_tcp_route_gets_no_chain_and_is_reported() {
    let cfg = router_config(objects(
        json!([
            {"port": {"number": 9443, "name": "tls", "protocol": "TLS"}, "hosts": ["*"],
             "tls": {"mode": "SIMPLE", "credentialName": "cred"}},
            {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}
        ]),
        json!([
            // Bound to another gateway; and a rule for another gateway only.
            {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
             "metadata": {"name": "other", "namespace": "default"},
             "spec": {"hosts": ["*"], "gateways": ["other-gw"], "tcp": [
                 {"route": [{"destination": {"host": "db"}}]}]}},
            {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
             "metadata": {"name": "web", "namespace": "default"},
             "spec": {"hosts": ["*"], "gateways": ["gw"],
                      "http": [{"route": [{"destination": {"host": "web"}}]}],
                      "tcp": [{"match": [{"gateways": ["mesh"]}],
                               "route": [{"destination": {"host": "db"}}]}]}}
        ]),
    ));
    let names_l: Vec<&str> = cfg.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names_l, ["0.0.0.0_80"]);
    assert_eq!(cfg.skipped.len(), 1, "{:?}", cfg.skipped);
    assert_eq!(cfg.skipped[0].virtual_service, "default/gw");
    assert!(cfg.skipped[0].reason.contains("port 9443"));
}

#[test]
fn a_tls_server_beside_https_and_passthrough_shares_the_port_listener() {
    let cfg = router_config(objects(
        json!([
            {"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
             "hosts": ["web.example.com"],
             "tls": {"mode": "SIMPLE", "credentialName": "web"}},
            {"port": {"number": 443, "name": "tls", "protocol": "TLS"},
             "hosts": ["web.example.com", "db.example.com"],
             "tls": {"mode": "SIMPLE", "credentialName": "db"}}
        ]),
        json!([
            {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
             "metadata": {"name": "web", "namespace": "default"},
             "spec": {"hosts": ["web.example.com"], "gateways": ["gw"],
                      "http": [{"route": [{"destination": {"host": "web"}}]}]}},
            {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
             "metadata": {"name": "db", "namespace": "default"},
             "spec": {"hosts": ["db.example.com"], "gateways": ["gw"],
                      "tcp": [{"route": [{"destination": {"host": "db"}}]}]}}
        ]),
    ));
    assert_eq!(cfg.listeners.len(), 1);
    let l = &cfg.listeners[0];
    assert_eq!(l.name, "0.0.0.0_443");
    assert_eq!(l.filter_chains.len(), 2);
    assert_eq!(names(&l.filter_chains[0]), ["web.example.com"]);
    // The TCP chain keeps only the name the HTTPS chain does not claim.
    assert_eq!(names(&l.filter_chains[1]), ["db.example.com"]);
    assert_eq!(
        tcp_of(&l.filter_chains[1]).cluster_specifier,
        Some(tcp_proxy::ClusterSpecifier::Cluster(
            "outbound|5432||db.default.svc.cluster.local".into()
        ))
    );
    let inspectors = l
        .listener_filters
        .iter()
        .filter(|f| f.name == TLS_INSPECTOR)
        .count();
    assert_eq!(inspectors, 1);
}
