//! RequestAuthentication → `envoy.filters.http.jwt_authn` (`JwtAuthentication`), as Istio
//! generates it: one provider per `jwtRules` entry of every policy selecting the workload, and one
//! requirement for every path: any provider, or no token at all (`allow_missing`). A token that
//! no provider accepts is refused (401); a request without a token goes on to authorization.

use std::collections::HashMap;

use mesh_proto::config::JwtRule;
use mesh_proto::envoy::envoy::config::core::v3::{DataSource, HttpUri, data_source, http_uri};
use mesh_proto::envoy::envoy::config::route::v3::{RouteMatch, route_match};
use mesh_proto::envoy::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtHeader, JwtProvider, JwtRequirement, JwtRequirementOrList, RemoteJwks,
    RequirementRule, jwt_provider, jwt_requirement, requirement_rule,
};
use mesh_proto::envoy::google::protobuf::Empty;

use super::proxy_info::ProxyInfo;
use super::resources::duration;
use crate::model::{Registry, scope_for};

/// The HTTP filter name.
pub const JWT_FILTER: &str = "envoy.filters.http.jwt_authn";

/// The jwt_authn config for `proxy`, or `None` when no RequestAuthentication selects it.
pub fn jwt_config(reg: &Registry, proxy: &ProxyInfo) -> Option<JwtAuthentication> {
    let rules: Vec<&JwtRule> = reg
        .security
        .request_authentications
        .iter()
        .filter(|p| {
            scope_for(
                &p.namespace,
                p.spec.selector.as_ref(),
                &proxy.namespace,
                &proxy.labels,
            )
            .is_some()
        })
        .flat_map(|p| p.spec.jwt_rules.iter())
        .collect();
    if rules.is_empty() {
        return None;
    }
    let mut providers = HashMap::new();
    let mut names = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let name = format!("origins-{i}");
        providers.insert(name.clone(), provider(rule));
        names.push(name);
    }
    let mut any: Vec<JwtRequirement> = names
        .into_iter()
        .map(|n| requirement(jwt_requirement::RequiresType::ProviderName(n)))
        .collect();
    any.push(requirement(jwt_requirement::RequiresType::AllowMissing(
        Empty {},
    )));
    Some(JwtAuthentication {
        providers,
        rules: vec![RequirementRule {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                ..RouteMatch::default()
            }),
            requirement_type: Some(requirement_rule::RequirementType::Requires(requirement(
                jwt_requirement::RequiresType::RequiresAny(JwtRequirementOrList {
                    requirements: any,
                }),
            ))),
        }],
        ..JwtAuthentication::default()
    })
}

fn requirement(t: jwt_requirement::RequiresType) -> JwtRequirement {
    JwtRequirement {
        requires_type: Some(t),
    }
}

fn provider(rule: &JwtRule) -> JwtProvider {
    let jwks = match (&rule.jwks, &rule.jwks_uri) {
        (Some(inline), _) => Some(jwt_provider::JwksSourceSpecifier::LocalJwks(DataSource {
            specifier: Some(data_source::Specifier::InlineString(inline.clone())),
            ..DataSource::default()
        })),
        (None, Some(uri)) => Some(jwt_provider::JwksSourceSpecifier::RemoteJwks(RemoteJwks {
            http_uri: Some(HttpUri {
                uri: uri.clone(),
                timeout: Some(duration(std::time::Duration::from_secs(5))),
                http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(jwks_cluster(uri))),
            }),
            cache_duration: Some(duration(std::time::Duration::from_secs(300))),
            ..RemoteJwks::default()
        })),
        (None, None) => None,
    };
    JwtProvider {
        issuer: rule.issuer.clone(),
        audiences: rule.audiences.clone(),
        forward: rule.forward_original_token,
        from_headers: rule
            .from_headers
            .iter()
            .map(|h| JwtHeader {
                name: h.name.clone(),
                value_prefix: h.prefix.clone().unwrap_or_default(),
            })
            .collect(),
        from_params: rule.from_params.clone(),
        forward_payload_header: rule.output_payload_to_header.clone().unwrap_or_default(),
        payload_in_metadata: rule.issuer.clone(),
        jwks_source_specifier: jwks,
        ..JwtProvider::default()
    }
}

/// Istio's cluster for a JWKS server: `outbound|<port>||<host>`.
fn jwks_cluster(uri: &str) -> String {
    let (scheme, rest) = uri.split_once("://").unwrap_or(("http", uri));
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.to_string()),
        _ => (
            authority,
            if scheme == "https" { "443" } else { "80" }.to_string(),
        ),
    };
    format!("outbound|{port}||{host}")
}
