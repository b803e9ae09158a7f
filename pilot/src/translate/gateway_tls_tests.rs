use mesh_proto::config::ConfigObject;
use mesh_proto::envoy::envoy::config::core::v3::data_source::Specifier;
use mesh_proto::envoy::envoy::config::listener::v3::filter;
use mesh_proto::envoy::envoy::config::route::v3::RouteConfiguration;
use mesh_proto::envoy::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use prost::Message;
use serde_json::json;

use super::*;
use crate::galley_client::Snapshot;
use crate::model::Registry;
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

fn objects(servers: serde_json::Value) -> serde_json::Value {
    json!([
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "productpage", "namespace": "default"},
         "spec": {"ports": [{"name": "http", "port": 9080}]}},
        {"apiVersion": "networking.istio.io/v1alpha3", "kind": "Gateway",
         "metadata": {"name": "gw", "namespace": "default"},
         "spec": {"selector": {"istio": "ingressgateway"}, "servers": servers}},
        {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
         "metadata": {"name": "pp", "namespace": "default"},
         "spec": {"hosts": ["bookinfo.example.com"], "gateways": ["gw"], "http": [
             {"route": [{"destination": {"host": "productpage"}}]}]}}
    ])
}

/// Decodes the chain's transport socket back into a `DownstreamTlsContext`.
fn tls_of(chain: &FilterChain) -> DownstreamTlsContext {
    let ts = chain.transport_socket.as_ref().expect("transport socket");
    assert_eq!(ts.name, TLS_TRANSPORT_SOCKET);
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
        panic!("no typed config");
    };
    assert_eq!(any.type_url, type_url::DOWNSTREAM_TLS_CONTEXT);
    DownstreamTlsContext::decode(any.value.as_slice()).unwrap()
}

fn rds_of(chain: &FilterChain) -> String {
    let Some(filter::ConfigType::TypedConfig(any)) = &chain.filters.last().unwrap().config_type
    else {
        panic!("no typed config");
    };
    let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
    match hcm.route_specifier {
        Some(RouteSpecifier::Rds(r)) => r.route_config_name,
        other => panic!("not rds: {other:?}"),
    }
}

fn filename(d: &Option<DataSource>) -> &str {
    match d.as_ref().and_then(|d| d.specifier.as_ref()) {
        Some(Specifier::Filename(f)) => f,
        other => panic!("not a file: {other:?}"),
    }
}

#[test]
fn https_simple_server_gets_a_tls_chain_by_sni_with_its_files() {
    let cfg = router_config(objects(json!([
        {"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
         "hosts": ["default/bookinfo.example.com"],
         "tls": {"mode": "SIMPLE", "serverCertificate": "/certs/tls.crt", "privateKey": "/certs/tls.key"}},
        {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}
    ])));
    let names: Vec<&str> = cfg.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["0.0.0.0_443", "0.0.0.0_80"]);
    let https = &cfg.listeners[0];
    assert_eq!(https.listener_filters[0].name, TLS_INSPECTOR);
    assert_eq!(https.filter_chains.len(), 1);
    let chain = &https.filter_chains[0];
    assert_eq!(
        chain.filter_chain_match.as_ref().unwrap().server_names,
        ["bookinfo.example.com"]
    );
    assert_eq!(rds_of(chain), "http.443");
    let tls = tls_of(chain);
    assert_eq!(tls.require_client_certificate, None);
    let common = tls.common_tls_context.unwrap();
    assert_eq!(common.alpn_protocols, ["h2", "http/1.1"]);
    assert_eq!(
        filename(&common.tls_certificates[0].certificate_chain),
        "/certs/tls.crt"
    );
    assert_eq!(
        filename(&common.tls_certificates[0].private_key),
        "/certs/tls.key"
    );
    assert!(common.validation_context_type.is_none());
    // The routes of 443 are the VirtualService's.
    let rc: &RouteConfiguration = cfg.routes.iter().find(|r| r.name == "http.443").unwrap();
    assert_eq!(rc.virtual_hosts[0].domains[0], "bookinfo.example.com");
    // Port 80 stays plaintext.
    let plain = &cfg.listeners[1];
    assert!(plain.listener_filters.is_empty());
    assert!(plain.filter_chains[0].transport_socket.is_none());
    assert!(plain.filter_chains[0].filter_chain_match.is_none());
}

#[test]
fn mutual_verifies_client_certificates_with_files_or_credential_name() {
    let cfg = router_config(objects(json!([
        {"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
         "hosts": ["bookinfo.example.com"],
         "tls": {"mode": "MUTUAL", "serverCertificate": "/c/tls.crt", "privateKey": "/c/tls.key",
                 "caCertificates": "/c/ca.crt", "subjectAltNames": ["client.example.com"]}},
        {"port": {"number": 443, "name": "https-2", "protocol": "HTTPS"},
         "hosts": ["other.example.com", "bookinfo.example.com"],
         "tls": {"mode": "MUTUAL", "credentialName": "other-cred"}}
    ])));
    let l = &cfg.listeners[0];
    assert_eq!(l.filter_chains.len(), 2);
    let first = tls_of(&l.filter_chains[0]);
    assert_eq!(
        first.require_client_certificate,
        Some(BoolValue { value: true })
    );
    let Some(common_tls_context::ValidationContextType::ValidationContext(v)) =
        first.common_tls_context.unwrap().validation_context_type
    else {
        panic!("no validation context");
    };
    assert_eq!(filename(&v.trusted_ca), "/c/ca.crt");
    assert_eq!(v.match_typed_subject_alt_names.len(), 1);
    // The second server keeps only the name the first did not claim; SDS by credential.
    let chain = &l.filter_chains[1];
    assert_eq!(
        chain.filter_chain_match.as_ref().unwrap().server_names,
        ["other.example.com"]
    );
    let common = tls_of(chain).common_tls_context.unwrap();
    assert_eq!(
        common.tls_certificate_sds_secret_configs[0].name,
        "other-cred"
    );
    assert!(common.tls_certificates.is_empty());
    let Some(common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(sds)) =
        common.validation_context_type
    else {
        panic!("no SDS validation context");
    };
    assert_eq!(sds.name, "other-cred-cacert");
}

#[test]
fn a_server_without_certificates_is_left_out() {
    let servers = json!([
        {"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
         "hosts": ["bookinfo.example.com"], "tls": {"mode": "SIMPLE"}}
    ]);
    let cfg = router_config(objects(servers));
    // No usable HTTPS server: the port is served as before, without TLS.
    let l = &cfg.listeners[0];
    assert_eq!(l.filter_chains.len(), 1);
    assert!(l.filter_chains[0].transport_socket.is_none());
    let err = downstream_tls_context(&ServerTls {
        mode: Some("MUTUAL".into()),
        server_certificate: Some("/a".into()),
        private_key: Some("/b".into()),
        ..ServerTls::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("caCertificates"), "{err}");
}

#[test]
fn https_redirect_answers_plain_http_with_a_301_to_https() {
    let cfg = router_config(objects(json!([
        {"port": {"number": 80, "name": "http", "protocol": "HTTP"},
         "hosts": ["*.example.com"], "tls": {"httpsRedirect": true}},
        {"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
         "hosts": ["bookinfo.example.com"],
         "tls": {"mode": "SIMPLE", "credentialName": "bookinfo-cred"}}
    ])));
    let r80 = cfg.routes.iter().find(|r| r.name == "http.80").unwrap();
    let routes = &r80.virtual_hosts[0].routes;
    assert_eq!(routes.len(), 1);
    let Some(route::Action::Redirect(ra)) = &routes[0].action else {
        panic!("not a redirect: {:?}", routes[0]);
    };
    assert_eq!(
        ra.scheme_rewrite_specifier,
        Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true))
    );
    assert_eq!(
        ra.response_code,
        redirect_action::RedirectResponseCode::MovedPermanently as i32
    );
    // 443 routes to the service.
    let r443 = cfg.routes.iter().find(|r| r.name == "http.443").unwrap();
    assert!(matches!(
        r443.virtual_hosts[0].routes[0].action,
        Some(route::Action::Route(_))
    ));
    assert!(covers("*", "a.b"));
    assert!(covers("ns/*.example.com", "x.example.com"));
    assert!(!covers("*.example.com", "example.com"));
    assert!(!covers("a.example.com", "b.example.com"));
}
