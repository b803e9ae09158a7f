//! The `mixer` filter config, decoded back from the listeners as a proxy receives them.

use mesh_proto::config::{ConfigObject, MeshConfig};
use mesh_proto::envoy::envoy::config::listener::v3::{Listener, filter};
use mesh_proto::envoy::envoy::config::route::v3::RouteConfiguration;
use mesh_proto::envoy::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager, http_filter,
};
use mesh_proto::istio::mixer::v1::config::client as pb;
use mesh_proto::type_url;
use prost::Message;

use super::super::{Options, ProxyInfo, VIRTUAL_INBOUND, VIRTUAL_OUTBOUND, translate};
use super::*;

const PRODUCTPAGE: &str = "productpage.default.svc.cluster.local";

fn objects(v: serde_json::Value) -> Vec<ConfigObject> {
    serde_json::from_value(v).unwrap()
}

/// Services productpage and details with one pod each, and the QuotaSpec/QuotaSpecBinding of
/// Istio 1.4's `mixer-rule-productpage-ratelimit.yaml` (as JSON).
fn objs() -> Vec<ConfigObject> {
    objects(serde_json::json!([
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "productpage", "namespace": "default"},
         "spec": {"ports": [{"name": "http", "port": 9080}]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "productpage", "namespace": "default"},
         "subsets": [{"addresses": [
             {"ip": "127.0.0.1", "targetRef": {"kind": "Pod", "name": "productpage-v1", "namespace": "default"}}],
           "ports": [{"name": "http", "port": 15006}]}]},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "details", "namespace": "default"},
         "spec": {"ports": [{"name": "http", "port": 9080}]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "details", "namespace": "default"},
         "subsets": [{"addresses": [
             {"ip": "127.0.0.1", "targetRef": {"kind": "Pod", "name": "details-v1", "namespace": "default"}}],
           "ports": [{"name": "http", "port": 15007}]}]},
        {"apiVersion": "config.istio.io/v1alpha2", "kind": "QuotaSpec",
         "metadata": {"name": "request-count", "namespace": "istio-system"},
         "spec": {"rules": [{"quotas": [{"charge": 1, "quota": "requestcountquota"}]}]}},
        {"apiVersion": "config.istio.io/v1alpha2", "kind": "QuotaSpecBinding",
         "metadata": {"name": "request-count", "namespace": "istio-system"},
         "spec": {"quotaSpecs": [{"name": "request-count", "namespace": "istio-system"}],
                  "services": [{"name": "productpage", "namespace": "default"}]}}
    ]))
}

fn sidecar(pod: &str) -> ProxyInfo {
    ProxyInfo::from_id(&format!(
        "sidecar~127.0.0.1~{pod}.default~default.svc.cluster.local"
    ))
    .unwrap()
}

fn listener(snapshot: &Snapshot, proxy: &ProxyInfo, name: &str) -> Listener {
    let reg = Registry::from_snapshot(snapshot, "cluster.local");
    assert!(reg.problems.is_empty(), "{:?}", reg.problems);
    let cfg = translate(
        &reg,
        proxy,
        &Options {
            trust_domain: "cluster.local".into(),
        },
    );
    let enc = cfg.encode();
    let any = &enc.listeners.get(name).unwrap().resource;
    Listener::decode(any.value.as_slice()).unwrap()
}

fn hcm(l: &Listener) -> HttpConnectionManager {
    let Some(filter::ConfigType::TypedConfig(tc)) = &l.filter_chains[0].filters[0].config_type
    else {
        panic!("no typed config")
    };
    HttpConnectionManager::decode(tc.value.as_slice()).unwrap()
}

fn mixer_config(hcm: &HttpConnectionManager) -> pb::HttpClientConfig {
    let f = hcm
        .http_filters
        .iter()
        .find(|f| f.name == MIXER_FILTER)
        .expect("mixer filter");
    let Some(http_filter::ConfigType::TypedConfig(tc)) = &f.config_type else {
        panic!("no typed config")
    };
    assert_eq!(tc.type_url, type_url::MIXER_HTTP_CLIENT_CONFIG);
    pb::HttpClientConfig::decode(tc.value.as_slice()).unwrap()
}

fn inline_routes(hcm: &HttpConnectionManager) -> RouteConfiguration {
    match &hcm.route_specifier {
        Some(http_connection_manager::RouteSpecifier::RouteConfig(rc)) => rc.clone(),
        other => panic!("not inline: {other:?}"),
    }
}

fn quota_names(sc: &pb::ServiceConfig) -> Vec<(String, i32)> {
    sc.quota_spec
        .iter()
        .flat_map(|s| &s.rules)
        .flat_map(|r| &r.quotas)
        .map(|q| (q.quota.clone(), q.charge))
        .collect()
}

fn policy(c: &pb::HttpClientConfig) -> i32 {
    c.transport
        .as_ref()
        .and_then(|t| t.network_fail_policy.as_ref())
        .map(|p| p.policy)
        .unwrap()
}

#[test]
fn bound_quota_spec_reaches_the_destination_inbound_config_and_route() {
    let snap = Snapshot::from_objects(objs());
    let l = listener(&snap, &sidecar("productpage-v1"), VIRTUAL_INBOUND);
    let hcm = hcm(&l);
    let names: Vec<_> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, vec![MIXER_FILTER, "envoy.filters.http.router"]);
    let cfg = mixer_config(&hcm);
    assert_eq!(cfg.default_destination_service, PRODUCTPAGE);
    let sc = &cfg.service_configs[PRODUCTPAGE];
    assert_eq!(quota_names(sc), vec![("requestcountquota".to_string(), 1)]);
    let attrs = &sc.mixer_attributes.as_ref().unwrap().attributes;
    assert!(attrs.contains_key("destination.service.host"));
    assert!(attrs.contains_key("destination.service.name"));
    // The inline route carries the same ServiceConfig (one service behind this workload).
    let rc = inline_routes(&hcm);
    let per_route = &rc.virtual_hosts[0].routes[0].typed_per_filter_config[MIXER_FILTER];
    assert_eq!(per_route.type_url, type_url::MIXER_SERVICE_CONFIG);
    let route_sc = pb::ServiceConfig::decode(per_route.value.as_slice()).unwrap();
    assert_eq!(&route_sc, sc);
    // No MeshConfig: Istio's default policyCheckFailOpen false → FAIL_CLOSE.
    assert_eq!(
        policy(&cfg),
        pb::network_fail_policy::FailPolicy::FailClose as i32
    );
}

#[test]
fn unbound_service_has_no_quota_and_fail_open_follows_mesh_config() {
    let mesh = MeshConfig {
        policy_check_fail_open: true,
        ..MeshConfig::default()
    };
    let snap = Snapshot::from_objects(objs()).with_mesh_config(&mesh);
    let l = listener(&snap, &sidecar("details-v1"), VIRTUAL_INBOUND);
    let cfg = mixer_config(&hcm(&l));
    let details = "details.default.svc.cluster.local";
    assert_eq!(cfg.default_destination_service, details);
    assert!(cfg.service_configs[details].quota_spec.is_empty());
    assert_eq!(
        policy(&cfg),
        pb::network_fail_policy::FailPolicy::FailOpen as i32
    );
}

/// A MeshConfig with policy checks on (Istio 1.4's default turns them off).
fn checks_on() -> MeshConfig {
    MeshConfig {
        disable_policy_checks: false,
        ..MeshConfig::default()
    }
}

fn decode_filter(filter: &HttpFilter) -> pb::HttpClientConfig {
    let Some(http_filter::ConfigType::TypedConfig(tc)) = &filter.config_type else {
        panic!("no typed config")
    };
    pb::HttpClientConfig::decode(tc.value.as_slice()).unwrap()
}

#[test]
fn outbound_filters_disable_checks_on_sidecars_only() {
    let snap = Snapshot::from_objects(objs()).with_mesh_config(&checks_on());
    let l = listener(&snap, &sidecar("details-v1"), VIRTUAL_OUTBOUND);
    let cfg = mixer_config(&hcm(&l));
    assert!(cfg.service_configs["default"].disable_check_calls);
    let filter = outbound_filter(
        &Registry::from_snapshot(&snap, "cluster.local"),
        ProxyType::Router,
    );
    let Some(http_filter::ConfigType::TypedConfig(tc)) = &filter.config_type else {
        panic!()
    };
    let cfg = pb::HttpClientConfig::decode(tc.value.as_slice()).unwrap();
    assert!(!cfg.service_configs["default"].disable_check_calls);
}

#[test]
fn wildcard_bindings_and_default_namespaces() {
    let mut o = objs();
    o.extend(objects(serde_json::json!([
        {"apiVersion": "config.istio.io/v1alpha2", "kind": "QuotaSpec",
         "metadata": {"name": "all", "namespace": "default"},
         "spec": {"rules": [{"match": [{"clause": {"request.path": {"prefix": "/api"}}}],
                             "quotas": [{"quota": "apiquota", "charge": 3}]}]}},
        {"apiVersion": "config.istio.io/v1alpha2", "kind": "QuotaSpecBinding",
         "metadata": {"name": "all", "namespace": "default"},
         "spec": {"quotaSpecs": [{"name": "all"}], "services": [{"service": "*"}]}}
    ])));
    let reg = Registry::from_snapshot(&Snapshot::from_objects(o), "cluster.local");
    let sc = service_config(&reg, PRODUCTPAGE);
    // `default/all` sorts before `istio-system/request-count`.
    assert_eq!(
        quota_names(&sc),
        vec![
            ("apiquota".to_string(), 3),
            ("requestcountquota".to_string(), 1)
        ]
    );
    let clause = &sc.quota_spec[0].rules[0].r#match[0].clause["request.path"];
    assert_eq!(
        clause.match_type,
        Some(pb::string_match::MatchType::Prefix("/api".into()))
    );
    let details = service_config(&reg, "details.default.svc.cluster.local");
    assert_eq!(quota_names(&details), vec![("apiquota".to_string(), 3)]);
}

#[test]
fn encoding_is_stable() {
    let snap = Snapshot::from_objects(objs());
    let a = listener(&snap, &sidecar("productpage-v1"), VIRTUAL_INBOUND).encode_to_vec();
    let b = listener(&snap, &sidecar("productpage-v1"), VIRTUAL_INBOUND).encode_to_vec();
    assert_eq!(a, b);
}

#[test]
fn disable_policy_checks_turns_check_calls_off_everywhere() {
    let details_pod = sidecar("details-v1");
    // Checks on: the inbound side checks, the gateway checks.
    let on = Snapshot::from_objects(objs()).with_mesh_config(&checks_on());
    let cfg = mixer_config(&hcm(&listener(&on, &details_pod, VIRTUAL_INBOUND)));
    let details = "details.default.svc.cluster.local";
    assert!(!cfg.service_configs[details].disable_check_calls);
    assert!(!cfg.service_configs[details].disable_report_calls);
    let reg = Registry::from_snapshot(&on, "cluster.local");
    assert!(
        !decode_filter(&outbound_filter(&reg, ProxyType::Router)).service_configs["default"]
            .disable_check_calls
    );

    // disablePolicyChecks: true (also Istio 1.4's default, no MeshConfig at all).
    for snap in [
        Snapshot::from_objects(objs()),
        Snapshot::from_objects(objs()).with_mesh_config(&MeshConfig {
            disable_policy_checks: true,
            ..MeshConfig::default()
        }),
    ] {
        let l = listener(&snap, &sidecar("productpage-v1"), VIRTUAL_INBOUND);
        let hcm = hcm(&l);
        let cfg = mixer_config(&hcm);
        let sc = &cfg.service_configs[PRODUCTPAGE];
        assert!(sc.disable_check_calls);
        assert!(!sc.disable_report_calls, "reports go on");
        let rc = inline_routes(&hcm);
        let per_route = &rc.virtual_hosts[0].routes[0].typed_per_filter_config[MIXER_FILTER];
        let route_sc = pb::ServiceConfig::decode(per_route.value.as_slice()).unwrap();
        assert!(route_sc.disable_check_calls);
        let reg = Registry::from_snapshot(&snap, "cluster.local");
        let gw = decode_filter(&outbound_filter(&reg, ProxyType::Router));
        assert!(gw.service_configs["default"].disable_check_calls);
    }
}

#[test]
fn disable_mixer_http_reports_turns_report_calls_off() {
    let mut mesh = checks_on();
    mesh.other
        .insert("disableMixerHttpReports".into(), serde_json::json!(true));
    let snap = Snapshot::from_objects(objs()).with_mesh_config(&mesh);
    let hcm = hcm(&listener(
        &snap,
        &sidecar("productpage-v1"),
        VIRTUAL_INBOUND,
    ));
    let sc = &mixer_config(&hcm).service_configs[PRODUCTPAGE];
    assert!(sc.disable_report_calls);
    assert!(!sc.disable_check_calls, "checks go on");
    let reg = Registry::from_snapshot(&snap, "cluster.local");
    for t in [ProxyType::Router, ProxyType::Sidecar] {
        assert!(
            decode_filter(&outbound_filter(&reg, t)).service_configs["default"]
                .disable_report_calls
        );
    }
    // Read from the YAML form as galley sends it.
    let v: serde_json::Value =
        serde_json::json!({"disablePolicyChecks": false, "disableMixerHttpReports": true});
    let mesh = MeshConfig::from_json(v).unwrap();
    let reg = Registry::from_snapshot(
        &Snapshot::from_objects(objs()).with_mesh_config(&mesh),
        "cluster.local",
    );
    assert!(http_reports_disabled(&reg));
    assert!(!policy_checks_disabled(&reg));
}
