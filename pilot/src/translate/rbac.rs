//! AuthorizationPolicy → `envoy.filters.http.rbac` filters, as Istio generates them: one DENY
//! filter, then one ALLOW filter (present whenever some ALLOW policy selects the workload, so an
//! ALLOW policy without rules denies everything), then AUDIT as a LOG filter.
//!
//! Each rule becomes one Envoy `Policy` named `ns[NS]-policy[NAME]-rule[I]`: `from` sources are
//! OR-ed principals (each the AND of its fields), `to` operations OR-ed permissions, and `when`
//! conditions are AND-ed into the principal or permission side they belong to.

use std::collections::HashMap;

use mesh_proto::config::{AuthzRule, Condition, Operation, Source};
use mesh_proto::envoy::envoy::config::core::v3::CidrRange;
use mesh_proto::envoy::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac as RbacRules, permission, principal, rbac,
};
use mesh_proto::envoy::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use mesh_proto::envoy::envoy::extensions::filters::http::rbac::v3::Rbac;
use mesh_proto::envoy::envoy::r#type::matcher::v3::{
    ListMatcher, MetadataMatcher, PathMatcher, RegexMatcher, StringMatcher, ValueMatcher,
    list_matcher, metadata_matcher, path_matcher, string_matcher, value_matcher,
};
use mesh_proto::envoy::google::protobuf::UInt32Value;

use super::proxy_info::ProxyInfo;
use crate::model::{Registry, scope_for};

/// The HTTP filter name.
pub const RBAC_FILTER: &str = "envoy.filters.http.rbac";
/// The dynamic-metadata namespace holding the request's JWT facts (Istio's `istio_authn`).
pub const AUTHN_METADATA: &str = "istio_authn";

/// The RBAC filter configs for `proxy`, in filter order (DENY, ALLOW, LOG).
pub fn rbac_configs(reg: &Registry, proxy: &ProxyInfo) -> Vec<Rbac> {
    let mut deny = HashMap::new();
    let mut allow = HashMap::new();
    let mut audit = HashMap::new();
    let mut any_allow = false;
    for p in &reg.security.authorization_policies {
        if scope_for(
            &p.namespace,
            p.spec.selector.as_ref(),
            &proxy.namespace,
            &proxy.labels,
        )
        .is_none()
        {
            continue;
        }
        let target = match p.spec.action.as_deref().unwrap_or("ALLOW") {
            "ALLOW" => {
                any_allow = true;
                &mut allow
            }
            "DENY" => &mut deny,
            "AUDIT" => &mut audit,
            other => {
                tracing::warn!(policy = %format!("{}/{}", p.namespace, p.name), action = other, "authorization action not supported; policy ignored");
                continue;
            }
        };
        for (i, rule) in p.spec.rules.iter().enumerate() {
            let name = format!("ns[{}]-policy[{}]-rule[{i}]", p.namespace, p.name);
            match policy(rule) {
                Ok(pol) => {
                    target.insert(name, pol);
                }
                Err(reason) => {
                    tracing::warn!(rule = %name, %reason, "authorization rule left out");
                }
            }
        }
    }
    let mut out = Vec::new();
    let filter = |action: rbac::Action, policies| Rbac {
        rules: Some(RbacRules {
            action: action as i32,
            policies,
            ..RbacRules::default()
        }),
        ..Rbac::default()
    };
    if !deny.is_empty() {
        out.push(filter(rbac::Action::Deny, deny));
    }
    if any_allow {
        out.push(filter(rbac::Action::Allow, allow));
    }
    if !audit.is_empty() {
        out.push(filter(rbac::Action::Log, audit));
    }
    out
}

/// One rule as an Envoy policy.
fn policy(rule: &AuthzRule) -> Result<Policy, String> {
    let mut principal_conds = Vec::new();
    let mut permission_conds = Vec::new();
    for c in &rule.when {
        match condition(c)? {
            Side::Principal(p) => principal_conds.push(p),
            Side::Permission(p) => permission_conds.push(p),
        }
    }
    let mut principals: Vec<Principal> = rule.from.iter().map(|f| source(&f.source)).collect();
    if principals.is_empty() {
        principals.push(pid(principal::Identifier::Any(true)));
    }
    if !principal_conds.is_empty() {
        principals = principals
            .into_iter()
            .map(|p| and_ids(std::iter::once(p).chain(principal_conds.clone()).collect()))
            .collect();
    }
    let mut permissions = Vec::new();
    for t in &rule.to {
        permissions.push(operation(&t.operation)?);
    }
    if permissions.is_empty() {
        permissions.push(perm(permission::Rule::Any(true)));
    }
    if !permission_conds.is_empty() {
        permissions = permissions
            .into_iter()
            .map(|p| and_rules(std::iter::once(p).chain(permission_conds.clone()).collect()))
            .collect();
    }
    Ok(Policy {
        permissions,
        principals,
        ..Policy::default()
    })
}

enum Side {
    Principal(Principal),
    Permission(Permission),
}

fn source(s: &Source) -> Principal {
    let mut ids = Vec::new();
    let mut field = |values: &[String], not: bool, f: &dyn Fn(&str) -> Principal| {
        if values.is_empty() {
            return;
        }
        let or = or_ids(values.iter().map(|v| f(v)).collect());
        ids.push(if not { not_id(or) } else { or });
    };
    field(&s.principals, false, &peer_principal);
    field(&s.not_principals, true, &peer_principal);
    field(&s.request_principals, false, &request_principal);
    field(&s.not_request_principals, true, &request_principal);
    field(&s.namespaces, false, &namespace);
    field(&s.not_namespaces, true, &namespace);
    field(&s.ip_blocks, false, &ip_block);
    field(&s.not_ip_blocks, true, &ip_block);
    if ids.is_empty() {
        return pid(principal::Identifier::Any(true));
    }
    and_ids(ids)
}

fn operation(o: &Operation) -> Result<Permission, String> {
    let mut rules = Vec::new();
    let mut field =
        |values: &[String], not: bool, f: &dyn Fn(&str) -> Result<Permission, String>| {
            if values.is_empty() {
                return Ok::<(), String>(());
            }
            let or = or_rules(values.iter().map(|v| f(v)).collect::<Result<_, _>>()?);
            rules.push(if not { not_rule(or) } else { or });
            Ok(())
        };
    field(&o.hosts, false, &|h| Ok(host(h)))?;
    field(&o.not_hosts, true, &|h| Ok(host(h)))?;
    field(&o.ports, false, &port)?;
    field(&o.not_ports, true, &port)?;
    field(&o.methods, false, &|m| Ok(header_perm(":method", exact(m))))?;
    field(&o.not_methods, true, &|m| {
        Ok(header_perm(":method", exact(m)))
    })?;
    field(&o.paths, false, &|p| Ok(path(p)))?;
    field(&o.not_paths, true, &|p| Ok(path(p)))?;
    if rules.is_empty() {
        return Ok(perm(permission::Rule::Any(true)));
    }
    Ok(and_rules(rules))
}

fn condition(c: &Condition) -> Result<Side, String> {
    let key = c.key.as_str();
    let principal_side = |f: &dyn Fn(&str) -> Principal| {
        let mut ids = Vec::new();
        if !c.values.is_empty() {
            ids.push(or_ids(c.values.iter().map(|v| f(v)).collect()));
        }
        if !c.not_values.is_empty() {
            ids.push(not_id(or_ids(c.not_values.iter().map(|v| f(v)).collect())));
        }
        Side::Principal(and_ids(ids))
    };
    let permission_side = |f: &dyn Fn(&str) -> Result<Permission, String>| {
        let mut rules = Vec::new();
        if !c.values.is_empty() {
            rules.push(or_rules(
                c.values.iter().map(|v| f(v)).collect::<Result<_, _>>()?,
            ));
        }
        if !c.not_values.is_empty() {
            let or = or_rules(
                c.not_values
                    .iter()
                    .map(|v| f(v))
                    .collect::<Result<_, _>>()?,
            );
            rules.push(not_rule(or));
        }
        Ok::<_, String>(Side::Permission(and_rules(rules)))
    };
    if let Some(name) = bracketed(key, "request.headers") {
        return Ok(principal_side(&|v| {
            pid(principal::Identifier::Header(header(name, wildcard(v))))
        }));
    }
    if let Some(claim) = bracketed(key, "request.auth.claims") {
        let claim = claim.to_string();
        return Ok(principal_side(&|v| {
            metadata_list(&["request.auth.claims", &claim], wildcard(v))
        }));
    }
    match key {
        "source.ip" => Ok(principal_side(&ip_block)),
        "source.namespace" => Ok(principal_side(&namespace)),
        "source.principal" => Ok(principal_side(&peer_principal)),
        "request.auth.principal" => Ok(principal_side(&request_principal)),
        "request.auth.audiences" => Ok(principal_side(&|v| {
            metadata_list(&["request.auth.audiences"], wildcard(v))
        })),
        "request.auth.presenter" => Ok(principal_side(&|v| {
            metadata_value(&["request.auth.presenter"], wildcard(v))
        })),
        "destination.port" => permission_side(&port),
        "destination.ip" => {
            permission_side(&|v| Ok(perm(permission::Rule::DestinationIp(cidr(v)))))
        }
        "connection.sni" => {
            permission_side(&|v| Ok(perm(permission::Rule::RequestedServerName(wildcard(v)))))
        }
        other => Err(format!("when key {other:?} is not supported")),
    }
}

/// `prefix[inner]` → `inner`.
fn bracketed<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    key.strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')
}

fn peer_principal(v: &str) -> Principal {
    let m = if v == "*" {
        regex(".+")
    } else if let Some(p) = v.strip_suffix('*') {
        prefix(&format!("spiffe://{p}"))
    } else if let Some(s) = v.strip_prefix('*') {
        suffix(s)
    } else {
        exact(&format!("spiffe://{v}"))
    };
    authenticated(m)
}

fn namespace(ns: &str) -> Principal {
    authenticated(regex(&format!(".*/ns/{}/.*", regex_escape(ns))))
}

fn request_principal(v: &str) -> Principal {
    metadata_value(&["request.auth.principal"], wildcard(v))
}

fn ip_block(v: &str) -> Principal {
    pid(principal::Identifier::DirectRemoteIp(cidr(v)))
}

fn host(h: &str) -> Permission {
    let mut m = wildcard(h);
    m.ignore_case = true;
    header_perm(":authority", m)
}

fn port(p: &str) -> Result<Permission, String> {
    let n: u32 = p
        .parse()
        .map_err(|_| format!("port {p:?} is not a number"))?;
    Ok(perm(permission::Rule::DestinationPort(n)))
}

fn path(p: &str) -> Permission {
    perm(permission::Rule::UrlPath(PathMatcher {
        rule: Some(path_matcher::Rule::Path(wildcard(p))),
    }))
}

fn cidr(v: &str) -> CidrRange {
    let (addr, len) = match v.split_once('/') {
        Some((a, l)) => (a, l.parse().ok()),
        None => (v, None),
    };
    let len = len.unwrap_or(if addr.contains(':') { 128 } else { 32 });
    CidrRange {
        address_prefix: addr.to_string(),
        prefix_len: Some(UInt32Value { value: len }),
    }
}

/// Istio's value wildcards: `*` any non-empty, `abc*` prefix, `*abc` suffix, else exact.
fn wildcard(v: &str) -> StringMatcher {
    if v == "*" {
        regex(".+")
    } else if let Some(p) = v.strip_suffix('*') {
        prefix(p)
    } else if let Some(s) = v.strip_prefix('*') {
        suffix(s)
    } else {
        exact(v)
    }
}

fn sm(p: string_matcher::MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(p),
        ignore_case: false,
    }
}
fn exact(v: &str) -> StringMatcher {
    sm(string_matcher::MatchPattern::Exact(v.to_string()))
}
fn prefix(v: &str) -> StringMatcher {
    sm(string_matcher::MatchPattern::Prefix(v.to_string()))
}
fn suffix(v: &str) -> StringMatcher {
    sm(string_matcher::MatchPattern::Suffix(v.to_string()))
}
fn regex(v: &str) -> StringMatcher {
    sm(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
        regex: v.to_string(),
        ..RegexMatcher::default()
    }))
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn header(name: &str, m: StringMatcher) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(m)),
        ..HeaderMatcher::default()
    }
}

fn header_perm(name: &str, m: StringMatcher) -> Permission {
    perm(permission::Rule::Header(header(name, m)))
}

fn authenticated(m: StringMatcher) -> Principal {
    pid(principal::Identifier::Authenticated(
        principal::Authenticated {
            principal_name: Some(m),
        },
    ))
}

fn metadata(path: &[&str], value: ValueMatcher) -> Principal {
    #[allow(deprecated)]
    pid(principal::Identifier::Metadata(MetadataMatcher {
        filter: AUTHN_METADATA.to_string(),
        path: path
            .iter()
            .map(|k| metadata_matcher::PathSegment {
                segment: Some(metadata_matcher::path_segment::Segment::Key(k.to_string())),
            })
            .collect(),
        value: Some(value),
        invert: false,
    }))
}

fn metadata_value(path: &[&str], m: StringMatcher) -> Principal {
    metadata(
        path,
        ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::StringMatch(m)),
        },
    )
}

/// A list-valued fact (claims, audiences): matches when one element matches.
fn metadata_list(path: &[&str], m: StringMatcher) -> Principal {
    let one = ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::StringMatch(m)),
    };
    metadata(
        path,
        ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(
                ListMatcher {
                    match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(one))),
                },
            ))),
        },
    )
}

fn pid(id: principal::Identifier) -> Principal {
    Principal {
        identifier: Some(id),
    }
}
fn and_ids(ids: Vec<Principal>) -> Principal {
    pid(principal::Identifier::AndIds(principal::Set { ids }))
}
fn or_ids(ids: Vec<Principal>) -> Principal {
    pid(principal::Identifier::OrIds(principal::Set { ids }))
}
fn not_id(p: Principal) -> Principal {
    pid(principal::Identifier::NotId(Box::new(p)))
}
fn perm(r: permission::Rule) -> Permission {
    Permission { rule: Some(r) }
}
fn and_rules(rules: Vec<Permission>) -> Permission {
    perm(permission::Rule::AndRules(permission::Set { rules }))
}
fn or_rules(rules: Vec<Permission>) -> Permission {
    perm(permission::Rule::OrRules(permission::Set { rules }))
}
fn not_rule(p: Permission) -> Permission {
    perm(permission::Rule::NotRule(Box::new(p)))
}
