//! Envoy RBAC (`envoy.filters.http.rbac`) compiled into matchers. A policy matches when one of
//! its permissions and one of its principals match; policies are tried in name order.

use mesh_proto::envoy::envoy::config::rbac::v3::{
    Permission, Principal, permission, principal, rbac,
};
use mesh_proto::envoy::envoy::extensions::filters::http::rbac::v3::Rbac;
use mesh_proto::envoy::envoy::r#type::matcher::v3::{
    MetadataMatcher, ValueMatcher, list_matcher, metadata_matcher, path_matcher, value_matcher,
};
use serde_json::Value;

use super::matcher::{Cidr, HeaderMatch, StrMatch};
use super::{DecodeError, RequestView};

/// What an RBAC filter does with a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum RbacAction {
    Allow,
    Deny,
    /// Envoy's LOG (Istio's AUDIT): never blocks.
    Log,
}

/// One compiled RBAC filter.
#[derive(Debug, Clone)]
pub struct RbacFilter {
    pub action: RbacAction,
    /// Sorted by name.
    policies: Vec<(String, CompiledPolicy)>,
}

#[derive(Debug, Clone)]
struct CompiledPolicy {
    permissions: Vec<Perm>,
    principals: Vec<Pid>,
}

#[derive(Debug, Clone)]
enum Perm {
    Any,
    And(Vec<Perm>),
    Or(Vec<Perm>),
    Not(Box<Perm>),
    Header(HeaderMatch),
    UrlPath(StrMatch),
    DestinationIp(Cidr),
    DestinationPort(u32),
    DestinationPortRange(i64, i64),
    Metadata(Meta),
    ServerName(StrMatch),
}

#[derive(Debug, Clone)]
enum Pid {
    Any,
    And(Vec<Pid>),
    Or(Vec<Pid>),
    Not(Box<Pid>),
    /// `None`: any authenticated peer.
    Authenticated(Option<StrMatch>),
    RemoteIp(Cidr),
    Header(HeaderMatch),
    UrlPath(StrMatch),
    Metadata(Meta),
}

#[derive(Debug, Clone)]
struct Meta {
    filter: String,
    path: Vec<String>,
    value: Val,
    invert: bool,
}

#[derive(Debug, Clone)]
enum Val {
    Null,
    Str(StrMatch),
    Bool(bool),
    Present(bool),
    OneOf(Box<Val>),
    Or(Vec<Val>),
}

impl RbacFilter {
    /// Compiles the filter config.
    pub fn compile(cfg: &Rbac, field: &str) -> Result<RbacFilter, DecodeError> {
        let Some(rules) = &cfg.rules else {
            // No rules: the filter does nothing (Envoy treats it as pass-through).
            return Ok(RbacFilter {
                action: RbacAction::Log,
                policies: Vec::new(),
            });
        };
        let action = match rbac::Action::try_from(rules.action) {
            Ok(rbac::Action::Allow) => RbacAction::Allow,
            Ok(rbac::Action::Deny) => RbacAction::Deny,
            Ok(rbac::Action::Log) => RbacAction::Log,
            Err(_) => return Err(DecodeError::new(field, "unknown RBAC action")),
        };
        let mut policies = Vec::new();
        for (name, p) in &rules.policies {
            let f = format!("{field}.policies[{name}]");
            if p.condition.is_some() || p.checked_condition.is_some() {
                return Err(DecodeError::new(&f, "CEL conditions are not supported"));
            }
            let permissions = p
                .permissions
                .iter()
                .enumerate()
                .map(|(i, x)| perm(x, &format!("{f}.permissions[{i}]")))
                .collect::<Result<_, _>>()?;
            let principals = p
                .principals
                .iter()
                .enumerate()
                .map(|(i, x)| pid(x, &format!("{f}.principals[{i}]")))
                .collect::<Result<_, _>>()?;
            policies.push((
                name.clone(),
                CompiledPolicy {
                    permissions,
                    principals,
                },
            ));
        }
        policies.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(RbacFilter { action, policies })
    }

    /// The name of the first policy matching `req`.
    pub fn matched(&self, req: &RequestView<'_>) -> Option<&str> {
        self.policies
            .iter()
            .find(|(_, p)| {
                p.permissions.iter().any(|x| x.matches(req))
                    && p.principals.iter().any(|x| x.matches(req))
            })
            .map(|(n, _)| n.as_str())
    }

    /// Whether this filter lets `req` through (LOG always does).
    pub fn allows(&self, req: &RequestView<'_>) -> Result<(), String> {
        match (self.action, self.matched(req)) {
            (RbacAction::Allow, Some(_)) => Ok(()),
            (RbacAction::Allow, None) => Err("no ALLOW policy matched".to_string()),
            (RbacAction::Deny, Some(p)) => Err(format!("DENY policy {p} matched")),
            (RbacAction::Deny, None) => Ok(()),
            (RbacAction::Log, m) => {
                if let Some(p) = m {
                    tracing::info!(policy = p, path = req.path, "AUDIT policy matched");
                }
                Ok(())
            }
        }
    }

    pub fn policy_names(&self) -> Vec<String> {
        self.policies.iter().map(|(n, _)| n.clone()).collect()
    }
}

#[allow(deprecated)]
fn perm(p: &Permission, field: &str) -> Result<Perm, DecodeError> {
    use permission::Rule as R;
    let list = |s: &permission::Set| {
        s.rules
            .iter()
            .enumerate()
            .map(|(i, x)| perm(x, &format!("{field}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(match &p.rule {
        Some(R::Any(true)) => Perm::Any,
        Some(R::AndRules(s)) => Perm::And(list(s)?),
        Some(R::OrRules(s)) => Perm::Or(list(s)?),
        Some(R::NotRule(x)) => Perm::Not(Box::new(perm(x, field)?)),
        Some(R::Header(h)) => Perm::Header(HeaderMatch::compile(h, field)?),
        Some(R::UrlPath(pm)) => match &pm.rule {
            Some(path_matcher::Rule::Path(m)) => Perm::UrlPath(StrMatch::compile(m, field)?),
            None => return Err(DecodeError::new(field, "url_path without a matcher")),
        },
        Some(R::DestinationIp(c)) => Perm::DestinationIp(Cidr::compile(c, field)?),
        Some(R::DestinationPort(n)) => Perm::DestinationPort(*n),
        Some(R::DestinationPortRange(r)) => {
            Perm::DestinationPortRange(i64::from(r.start), i64::from(r.end))
        }
        Some(R::Metadata(m)) => Perm::Metadata(meta(m, field)?),
        Some(R::RequestedServerName(m)) => Perm::ServerName(StrMatch::compile(m, field)?),
        _ => return Err(DecodeError::new(field, "unsupported permission")),
    })
}

#[allow(deprecated)]
fn pid(p: &Principal, field: &str) -> Result<Pid, DecodeError> {
    use principal::Identifier as I;
    let list = |s: &principal::Set| {
        s.ids
            .iter()
            .enumerate()
            .map(|(i, x)| pid(x, &format!("{field}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(match &p.identifier {
        Some(I::Any(true)) => Pid::Any,
        Some(I::AndIds(s)) => Pid::And(list(s)?),
        Some(I::OrIds(s)) => Pid::Or(list(s)?),
        Some(I::NotId(x)) => Pid::Not(Box::new(pid(x, field)?)),
        Some(I::Authenticated(a)) => Pid::Authenticated(
            a.principal_name
                .as_ref()
                .map(|m| StrMatch::compile(m, field))
                .transpose()?,
        ),
        Some(I::SourceIp(c) | I::DirectRemoteIp(c) | I::RemoteIp(c)) => {
            Pid::RemoteIp(Cidr::compile(c, field)?)
        }
        Some(I::Header(h)) => Pid::Header(HeaderMatch::compile(h, field)?),
        Some(I::UrlPath(pm)) => match &pm.rule {
            Some(path_matcher::Rule::Path(m)) => Pid::UrlPath(StrMatch::compile(m, field)?),
            None => return Err(DecodeError::new(field, "url_path without a matcher")),
        },
        Some(I::Metadata(m)) => Pid::Metadata(meta(m, field)?),
        _ => return Err(DecodeError::new(field, "unsupported principal")),
    })
}

fn meta(m: &MetadataMatcher, field: &str) -> Result<Meta, DecodeError> {
    let path = m
        .path
        .iter()
        .map(|s| match &s.segment {
            Some(metadata_matcher::path_segment::Segment::Key(k)) => Ok(k.clone()),
            None => Err(DecodeError::new(field, "empty metadata path segment")),
        })
        .collect::<Result<_, _>>()?;
    let value = m
        .value
        .as_ref()
        .ok_or_else(|| DecodeError::new(field, "metadata matcher without value"))?;
    Ok(Meta {
        filter: m.filter.clone(),
        path,
        value: val(value, field)?,
        invert: m.invert,
    })
}

fn val(v: &ValueMatcher, field: &str) -> Result<Val, DecodeError> {
    use value_matcher::MatchPattern as M;
    Ok(match &v.match_pattern {
        Some(M::NullMatch(_)) => Val::Null,
        Some(M::StringMatch(s)) => Val::Str(StrMatch::compile(s, field)?),
        Some(M::BoolMatch(b)) => Val::Bool(*b),
        Some(M::PresentMatch(b)) => Val::Present(*b),
        Some(M::ListMatch(l)) => match &l.match_pattern {
            Some(list_matcher::MatchPattern::OneOf(inner)) => {
                Val::OneOf(Box::new(val(inner, field)?))
            }
            None => return Err(DecodeError::new(field, "list matcher without one_of")),
        },
        Some(M::OrMatch(o)) => Val::Or(
            o.value_matchers
                .iter()
                .map(|x| val(x, field))
                .collect::<Result<_, _>>()?,
        ),
        _ => return Err(DecodeError::new(field, "unsupported value matcher")),
    })
}

impl Perm {
    fn matches(&self, r: &RequestView<'_>) -> bool {
        match self {
            Perm::Any => true,
            Perm::And(v) => v.iter().all(|x| x.matches(r)),
            Perm::Or(v) => v.iter().any(|x| x.matches(r)),
            Perm::Not(x) => !x.matches(r),
            Perm::Header(h) => h.matches(r),
            Perm::UrlPath(m) => m.matches(r.path),
            Perm::DestinationIp(c) => c.contains(r.destination.ip()),
            Perm::DestinationPort(p) => u32::from(r.destination.port()) == *p,
            Perm::DestinationPortRange(lo, hi) => {
                let p = i64::from(r.destination.port());
                *lo <= p && p < *hi
            }
            Perm::Metadata(m) => m.matches(r),
            Perm::ServerName(m) => r.server_name.is_some_and(|s| m.matches(s)),
        }
    }
}

impl Pid {
    fn matches(&self, r: &RequestView<'_>) -> bool {
        match self {
            Pid::Any => true,
            Pid::And(v) => v.iter().all(|x| x.matches(r)),
            Pid::Or(v) => v.iter().any(|x| x.matches(r)),
            Pid::Not(x) => !x.matches(r),
            Pid::Authenticated(m) => match (r.peer, m) {
                (Some(p), Some(m)) => m.matches(p),
                (Some(_), None) => true,
                (None, _) => false,
            },
            Pid::RemoteIp(c) => c.contains(r.source.ip()),
            Pid::Header(h) => h.matches(r),
            Pid::UrlPath(m) => m.matches(r.path),
            Pid::Metadata(m) => m.matches(r),
        }
    }
}

impl Meta {
    fn matches(&self, r: &RequestView<'_>) -> bool {
        let found = r.auth.and_then(|a| a.metadata(&self.filter, &self.path));
        self.value.matches(found.as_ref()) != self.invert
    }
}

impl Val {
    fn matches(&self, v: Option<&Value>) -> bool {
        match (self, v) {
            (Val::Present(want), v) => v.is_some() == *want,
            (Val::Null, v) => v.is_none_or(Value::is_null),
            (Val::Str(m), Some(Value::String(s))) => m.matches(s),
            (Val::Bool(b), Some(Value::Bool(x))) => b == x,
            (Val::OneOf(inner), Some(Value::Array(items))) => {
                items.iter().any(|i| inner.matches(Some(i)))
            }
            (Val::Or(list), v) => list.iter().any(|m| m.matches(v)),
            _ => false,
        }
    }
}
