//! The inbound listener from security policies, decoded back from its protobuf.

use mesh_proto::config::ConfigObject;
use mesh_proto::envoy::envoy::config::core::v3::transport_socket;
use mesh_proto::envoy::envoy::config::listener::v3::{Listener, filter, listener_filter};
use mesh_proto::envoy::envoy::config::rbac::v3::{permission, principal, rbac};
use mesh_proto::envoy::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, jwt_provider, jwt_requirement, requirement_rule,
};
use mesh_proto::envoy::envoy::extensions::filters::http::rbac::v3::Rbac;
use mesh_proto::envoy::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_filter,
};
use mesh_proto::envoy::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext;
use mesh_proto::envoy::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use mesh_proto::type_url;
use prost::Message;

use super::*;
use crate::galley_client::Snapshot;
use crate::model::Registry;

fn obj(kind: &str, ns: &str, name: &str, spec: serde_json::Value) -> ConfigObject {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "security.istio.io/v1beta1", "kind": kind,
        "metadata": {"name": name, "namespace": ns}, "spec": spec
    }))
    .unwrap()
}

fn proxy(app: &str) -> ProxyInfo {
    let mut p = ProxyInfo::from_id(&format!(
        "sidecar~127.0.0.1~{app}-v1.default~default.svc.cluster.local"
    ))
    .unwrap();
    p.labels.insert("app".into(), app.into());
    p
}

fn inbound(objs: Vec<ConfigObject>, app: &str) -> Listener {
    let reg = Registry::from_snapshot(&Snapshot::from_objects(objs), "cluster.local");
    assert!(reg.problems.is_empty(), "{:?}", reg.problems);
    let cfg = translate(
        &reg,
        &proxy(app),
        &Options {
            trust_domain: "cluster.local".into(),
        },
    );
    // Encoded and decoded as the proxy receives it.
    let enc = cfg.encode();
    let any = &enc.listeners.get(VIRTUAL_INBOUND).unwrap().resource;
    assert_eq!(any.type_url, type_url::LISTENER);
    Listener::decode(any.value.as_slice()).unwrap()
}

/// (transport_protocol, destination_port) of each chain.
fn chains(l: &Listener) -> Vec<(String, Option<u32>)> {
    l.filter_chains
        .iter()
        .map(|c| {
            let m = c.filter_chain_match.clone().unwrap();
            (m.transport_protocol, m.destination_port.map(|p| p.value))
        })
        .collect()
}

fn hcm(l: &Listener) -> HttpConnectionManager {
    let Some(filter::ConfigType::TypedConfig(tc)) = &l.filter_chains[0].filters[0].config_type
    else {
        panic!("no typed config")
    };
    assert_eq!(tc.type_url, type_url::HTTP_CONNECTION_MANAGER);
    HttpConnectionManager::decode(tc.value.as_slice()).unwrap()
}

fn filter_names(l: &Listener) -> Vec<String> {
    hcm(l).http_filters.into_iter().map(|f| f.name).collect()
}

fn typed<M: Message + Default>(l: &Listener, index: usize) -> M {
    let f = &hcm(l).http_filters[index];
    let Some(http_filter::ConfigType::TypedConfig(tc)) = &f.config_type else {
        panic!("no typed config")
    };
    M::decode(tc.value.as_slice()).unwrap()
}

#[test]
fn default_is_permissive_with_tls_inspector_and_no_policy() {
    let l = inbound(vec![], "ratings");
    assert_eq!(l.name, "virtualInbound");
    let Some(listener_filter::ConfigType::TypedConfig(tc)) = &l.listener_filters[0].config_type
    else {
        panic!()
    };
    assert_eq!(
        l.listener_filters[0].name,
        "envoy.filters.listener.tls_inspector"
    );
    assert!(tc.type_url.ends_with("tls_inspector.v3.TlsInspector"));
    assert_eq!(
        chains(&l),
        [("tls".to_string(), None), ("raw_buffer".to_string(), None)]
    );
    assert_eq!(filter_names(&l), ["mixer", "envoy.filters.http.router"]);
    // The TLS chain requires a client certificate.
    let Some(transport_socket::ConfigType::TypedConfig(tc)) = &l.filter_chains[0]
        .transport_socket
        .as_ref()
        .unwrap()
        .config_type
    else {
        panic!()
    };
    assert_eq!(tc.type_url, type_url::DOWNSTREAM_TLS_CONTEXT);
    let tls = DownstreamTlsContext::decode(tc.value.as_slice()).unwrap();
    assert_eq!(tls.require_client_certificate.map(|b| b.value), Some(true));
    assert!(l.filter_chains[1].transport_socket.is_none());
}

#[test]
fn most_specific_peer_authentication_wins() {
    let mesh = obj(
        "PeerAuthentication",
        "istio-system",
        "default",
        serde_json::json!({"mtls": {"mode": "STRICT"}}),
    );
    assert_eq!(
        chains(&inbound(vec![mesh.clone()], "ratings")),
        [("tls".to_string(), None)]
    );
    let ns = obj(
        "PeerAuthentication",
        "default",
        "default",
        serde_json::json!({"mtls": {"mode": "DISABLE"}}),
    );
    assert_eq!(
        chains(&inbound(vec![mesh.clone(), ns.clone()], "ratings")),
        [("raw_buffer".to_string(), None)]
    );
    // Workload UNSET inherits the namespace's DISABLE; its port 9080 is STRICT.
    let wl = obj(
        "PeerAuthentication",
        "default",
        "ratings",
        serde_json::json!({"selector": {"matchLabels": {"app": "ratings"}},
                           "mtls": {"mode": "UNSET"}, "portLevelMtls": {"9080": {"mode": "STRICT"}}}),
    );
    assert_eq!(
        chains(&inbound(
            vec![mesh.clone(), ns.clone(), wl.clone()],
            "ratings"
        )),
        [
            ("tls".to_string(), Some(9080)),
            ("raw_buffer".to_string(), None)
        ]
    );
    // Another workload is not selected.
    assert_eq!(
        chains(&inbound(vec![mesh, ns, wl], "reviews")),
        [("raw_buffer".to_string(), None)]
    );
}

#[test]
fn authorization_policies_become_deny_then_allow_rbac() {
    let deny = obj(
        "AuthorizationPolicy",
        "default",
        "deny-reviews",
        serde_json::json!({"selector": {"matchLabels": {"app": "ratings"}}, "action": "DENY",
            "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/bookinfo-reviews-v3"]}}],
                       "to": [{"operation": {"methods": ["GET"], "paths": ["/ratings*"]}}]}]}),
    );
    let allow_nothing = obj(
        "AuthorizationPolicy",
        "default",
        "allow-nothing",
        serde_json::json!({}),
    );
    let other = obj(
        "AuthorizationPolicy",
        "default",
        "details-only",
        serde_json::json!({"selector": {"matchLabels": {"app": "details"}}, "action": "DENY", "rules": [{}]}),
    );
    let l = inbound(vec![deny, allow_nothing, other], "ratings");
    assert_eq!(
        filter_names(&l),
        [
            "envoy.filters.http.rbac",
            "envoy.filters.http.rbac",
            "mixer",
            "envoy.filters.http.router"
        ]
    );
    let first: Rbac = typed(&l, 0);
    let rules = first.rules.unwrap();
    assert_eq!(rules.action, rbac::Action::Deny as i32);
    let pol = &rules.policies["ns[default]-policy[deny-reviews]-rule[0]"];
    assert_eq!(rules.policies.len(), 1);
    // principals: [and_ids[or_ids[authenticated(exact spiffe)]]]
    let Some(principal::Identifier::AndIds(and)) = &pol.principals[0].identifier else {
        panic!("{:?}", pol.principals)
    };
    let Some(principal::Identifier::OrIds(or)) = &and.ids[0].identifier else {
        panic!()
    };
    let Some(principal::Identifier::Authenticated(a)) = &or.ids[0].identifier else {
        panic!()
    };
    assert_eq!(
        a.principal_name.clone().unwrap().match_pattern,
        Some(MatchPattern::Exact(
            "spiffe://cluster.local/ns/default/sa/bookinfo-reviews-v3".into()
        ))
    );
    let Some(permission::Rule::AndRules(perms)) = &pol.permissions[0].rule else {
        panic!()
    };
    assert_eq!(perms.rules.len(), 2);
    let Some(permission::Rule::OrRules(paths)) = &perms.rules[1].rule else {
        panic!()
    };
    let Some(permission::Rule::UrlPath(p)) = &paths.rules[0].rule else {
        panic!()
    };
    assert_eq!(
        format!("{:?}", p.rule),
        format!(
            "{:?}",
            Some(
                mesh_proto::envoy::envoy::r#type::matcher::v3::path_matcher::Rule::Path(
                    mesh_proto::envoy::envoy::r#type::matcher::v3::StringMatcher {
                        match_pattern: Some(MatchPattern::Prefix("/ratings".into())),
                        ignore_case: false
                    }
                )
            )
        )
    );
    // The ALLOW policy without rules gives an ALLOW filter with no policies: deny all.
    let second: Rbac = typed(&l, 1);
    let rules = second.rules.unwrap();
    assert_eq!(rules.action, rbac::Action::Allow as i32);
    assert!(rules.policies.is_empty());
    // details: only its own DENY.
    let d = inbound(
        vec![obj(
            "AuthorizationPolicy",
            "default",
            "x",
            serde_json::json!({"selector": {"matchLabels": {"app": "details"}}, "action": "DENY", "rules": [{}]}),
        )],
        "ratings",
    );
    assert_eq!(filter_names(&d), ["mixer", "envoy.filters.http.router"]);
}

#[test]
fn request_authentication_becomes_jwt_authn_first() {
    let ra = obj(
        "RequestAuthentication",
        "default",
        "jwt",
        serde_json::json!({"selector": {"matchLabels": {"app": "productpage"}},
            "jwtRules": [{"issuer": "testing@secure.istio.io", "jwks": "{\"keys\":[]}", "audiences": ["a"],
                          "fromHeaders": [{"name": "x-jwt", "prefix": "Bearer "}], "outputPayloadToHeader": "x-payload"},
                         {"issuer": "remote", "jwksUri": "http://jwks.example:8000/keys"}]}),
    );
    let ap = obj(
        "AuthorizationPolicy",
        "default",
        "require-jwt",
        serde_json::json!({"selector": {"matchLabels": {"app": "productpage"}},
            "rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}],
                       "when": [{"key": "request.auth.claims[group]", "values": ["admin"]}]}]}),
    );
    let l = inbound(vec![ra, ap], "productpage");
    assert_eq!(
        filter_names(&l),
        [
            "envoy.filters.http.jwt_authn",
            "envoy.filters.http.rbac",
            "mixer",
            "envoy.filters.http.router"
        ]
    );
    let jwt: JwtAuthentication = typed(&l, 0);
    let p0 = &jwt.providers["origins-0"];
    assert_eq!(p0.issuer, "testing@secure.istio.io");
    assert_eq!(p0.audiences, ["a"]);
    assert_eq!(p0.from_headers[0].name, "x-jwt");
    assert_eq!(p0.from_headers[0].value_prefix, "Bearer ");
    assert_eq!(p0.forward_payload_header, "x-payload");
    assert!(matches!(
        p0.jwks_source_specifier,
        Some(jwt_provider::JwksSourceSpecifier::LocalJwks(_))
    ));
    let Some(jwt_provider::JwksSourceSpecifier::RemoteJwks(r)) =
        &jwt.providers["origins-1"].jwks_source_specifier
    else {
        panic!()
    };
    assert_eq!(
        r.http_uri.as_ref().unwrap().uri,
        "http://jwks.example:8000/keys"
    );
    let Some(requirement_rule::RequirementType::Requires(req)) = &jwt.rules[0].requirement_type
    else {
        panic!()
    };
    let Some(jwt_requirement::RequiresType::RequiresAny(any)) = &req.requires_type else {
        panic!()
    };
    assert_eq!(any.requirements.len(), 3);
    assert!(matches!(
        any.requirements[2].requires_type,
        Some(jwt_requirement::RequiresType::AllowMissing(_))
    ));
    let rb: Rbac = typed(&l, 1);
    let rules = rb.rules.unwrap();
    let pol = &rules.policies["ns[default]-policy[require-jwt]-rule[0]"];
    // from AND when: and_ids[source, claim].
    let Some(principal::Identifier::AndIds(and)) = &pol.principals[0].identifier else {
        panic!()
    };
    assert_eq!(and.ids.len(), 2);
    // Not selected: reviews has no jwt filter.
    assert_eq!(
        filter_names(&inbound(vec![], "reviews")),
        ["mixer", "envoy.filters.http.router"]
    );
}
