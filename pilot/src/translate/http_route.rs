//! VirtualService `http` rules → Envoy routes, shared by sidecar and gateway route tables.

use std::collections::BTreeMap;

use mesh_proto::config::{
    HeaderOperations, HttpMatchRequest, HttpRoute, HttpRouteDestination, StringMatch,
};
use mesh_proto::envoy::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, header_value_option,
};
use mesh_proto::envoy::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, RedirectAction, Route, RouteAction, RouteMatch,
    WeightedCluster, header_matcher, query_parameter_matcher, redirect_action, route, route_action,
    route_match, weighted_cluster,
};
use mesh_proto::envoy::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use mesh_proto::envoy::google::protobuf::{BoolValue, UInt32Value};

use super::duration::parse_duration;
use super::names::cluster_name;
use super::resources::duration;
use super::traffic;
use crate::model::{Registry, VirtualServiceEntry};

/// Where the routes are being built.
#[derive(Debug, Clone)]
pub struct RouteContext<'a> {
    pub registry: &'a Registry,
    pub vs: &'a VirtualServiceEntry,
    /// The port of the virtual host (service port for sidecars, gateway port for routers).
    pub port: u16,
    /// The service the virtual host stands for (sidecars), used when a destination names no port.
    pub service_host: Option<&'a str>,
    /// Gateway names that apply (`ns/name`, or `mesh` for sidecars), for `match.gateways`.
    pub gateways: &'a [String],
    /// The proxy's labels, for `match.sourceLabels`.
    pub proxy_labels: &'a BTreeMap<String, String>,
}

/// Why a VirtualService cannot be translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("http[{rule}]: {reason}")]
    Rule { rule: usize, reason: String },
}

/// Translates every `http` rule of the context's VirtualService.
pub fn http_routes(ctx: &RouteContext<'_>) -> Result<Vec<Route>, RouteError> {
    let mut out = Vec::new();
    for (i, rule) in ctx.vs.spec.http.iter().enumerate() {
        let err = |reason: String| RouteError::Rule { rule: i, reason };
        let action = action(ctx, rule).map_err(err)?;
        let matches: Vec<RouteMatch> = if rule.matches.is_empty() {
            vec![prefix_match("/")]
        } else {
            let mut ms = Vec::new();
            for m in &rule.matches {
                if applies(ctx, m) {
                    ms.push(route_match(m).map_err(err)?);
                }
            }
            ms
        };
        let name = rule
            .name
            .clone()
            .unwrap_or_else(|| format!("{}.{}.{i}", ctx.vs.namespace, ctx.vs.name));
        let (mut add, mut remove) =
            header_ops(rule.headers.as_ref().and_then(|h| h.request.as_ref()));
        let (mut resp_add, mut resp_remove) =
            header_ops(rule.headers.as_ref().and_then(|h| h.response.as_ref()));
        // One destination: its own header operations go on the route (as Istio does); with
        // several they stay on each weighted cluster.
        if let [only] = rule.route.as_slice()
            && let Some(h) = &only.headers
        {
            let (a, r) = header_ops(h.request.as_ref());
            add.extend(a);
            remove.extend(r);
            let (a, r) = header_ops(h.response.as_ref());
            resp_add.extend(a);
            resp_remove.extend(r);
        }
        let mut per_filter = std::collections::HashMap::new();
        if let Some(f) = &rule.fault
            && let Some(any) = traffic::fault(f).map_err(err)?
        {
            per_filter.insert(traffic::FAULT_FILTER.to_string(), any);
        }
        if let Some(c) = &rule.cors_policy {
            per_filter.insert(
                traffic::CORS_FILTER.to_string(),
                traffic::cors(c).map_err(err)?,
            );
        }
        for m in matches {
            out.push(Route {
                name: name.clone(),
                r#match: Some(m),
                action: Some(action.clone()),
                request_headers_to_add: add.clone(),
                request_headers_to_remove: remove.clone(),
                response_headers_to_add: resp_add.clone(),
                response_headers_to_remove: resp_remove.clone(),
                typed_per_filter_config: per_filter.clone(),
                ..Route::default()
            });
        }
    }
    Ok(out)
}

/// The catch-all route to one cluster (Istio's default retry policy; the cluster's
/// consistentHash, if any).
pub fn default_route(registry: &Registry, cluster: String) -> Route {
    let hash_policy = super::cluster::load_balancer(registry, &cluster)
        .and_then(traffic::hash_policy)
        .into_iter()
        .collect();
    Route {
        name: "default".to_string(),
        r#match: Some(prefix_match("/")),
        action: Some(route::Action::Route(RouteAction {
            hash_policy,
            retry_policy: traffic::retry_policy(None).ok().flatten(),
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster)),
            ..RouteAction::default()
        })),
        ..Route::default()
    }
}

fn prefix_match(p: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix(p.to_string())),
        ..RouteMatch::default()
    }
}

/// Whether match `m` applies to this proxy and listener (`sourceLabels`, `gateways`, `port`).
fn applies(ctx: &RouteContext<'_>, m: &HttpMatchRequest) -> bool {
    let labels_ok = m
        .source_labels
        .iter()
        .all(|(k, v)| ctx.proxy_labels.get(k) == Some(v));
    let gateways_ok = m.gateways.is_empty()
        || m.gateways.iter().any(|g| {
            let full = if g == "mesh" || g.contains('/') {
                g.clone()
            } else {
                format!("{}/{g}", ctx.vs.namespace)
            };
            ctx.gateways.contains(&full)
        });
    let port_ok = m.port.is_none_or(|p| p == u32::from(ctx.port));
    labels_ok && gateways_ok && port_ok
}

fn route_match(m: &HttpMatchRequest) -> Result<RouteMatch, String> {
    let path_specifier = match &m.uri {
        None => route_match::PathSpecifier::Prefix("/".to_string()),
        Some(StringMatch { exact: Some(e), .. }) => route_match::PathSpecifier::Path(e.clone()),
        Some(StringMatch {
            prefix: Some(p), ..
        }) => route_match::PathSpecifier::Prefix(p.clone()),
        Some(StringMatch { regex: Some(r), .. }) => route_match::PathSpecifier::SafeRegex(regex(r)),
        Some(_) => route_match::PathSpecifier::Prefix("/".to_string()),
    };
    let mut headers = Vec::new();
    for (name, sm) in [
        (":method", &m.method),
        (":authority", &m.authority),
        (":scheme", &m.scheme),
    ] {
        if let Some(sm) = sm {
            headers.push(header_matcher(name, sm));
        }
    }
    for (name, sm) in &m.headers {
        headers.push(header_matcher(&name.to_ascii_lowercase(), sm));
    }
    let query_parameters = m
        .query_params
        .iter()
        .map(|(name, sm)| QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: Some(match string_matcher_of(sm) {
                Some(s) => query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(s),
                None => query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(true),
            }),
        })
        .collect();
    Ok(RouteMatch {
        path_specifier: Some(path_specifier),
        case_sensitive: m.ignore_uri_case.then_some(BoolValue { value: false }),
        headers,
        query_parameters,
        ..RouteMatch::default()
    })
}

fn regex(r: &str) -> RegexMatcher {
    RegexMatcher {
        regex: r.to_string(),
        engine_type: None,
    }
}

fn string_matcher_of(sm: &StringMatch) -> Option<StringMatcher> {
    let pattern = if let Some(e) = &sm.exact {
        string_matcher::MatchPattern::Exact(e.clone())
    } else if let Some(p) = &sm.prefix {
        string_matcher::MatchPattern::Prefix(p.clone())
    } else if let Some(r) = &sm.regex {
        string_matcher::MatchPattern::SafeRegex(regex(r))
    } else {
        return None;
    };
    Some(StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: false,
    })
}

fn header_matcher(name: &str, sm: &StringMatch) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(match string_matcher_of(sm) {
            Some(s) => header_matcher::HeaderMatchSpecifier::StringMatch(s),
            None => header_matcher::HeaderMatchSpecifier::PresentMatch(true),
        }),
        ..HeaderMatcher::default()
    }
}

fn header_ops(ops: Option<&HeaderOperations>) -> (Vec<HeaderValueOption>, Vec<String>) {
    let Some(ops) = ops else {
        return (Vec::new(), Vec::new());
    };
    let opt = |k: &String, v: &String, action: header_value_option::HeaderAppendAction| {
        HeaderValueOption {
            header: Some(HeaderValue {
                key: k.to_ascii_lowercase(),
                value: v.clone(),
                ..HeaderValue::default()
            }),
            append_action: action as i32,
            ..HeaderValueOption::default()
        }
    };
    let mut add: Vec<HeaderValueOption> = ops
        .set
        .iter()
        .map(|(k, v)| {
            opt(
                k,
                v,
                header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd,
            )
        })
        .collect();
    add.extend(ops.add.iter().map(|(k, v)| {
        opt(
            k,
            v,
            header_value_option::HeaderAppendAction::AppendIfExistsOrAdd,
        )
    }));
    (add, ops.remove.clone())
}

fn action(ctx: &RouteContext<'_>, rule: &HttpRoute) -> Result<route::Action, String> {
    if let Some(redirect) = &rule.redirect {
        let uri = redirect.get("uri").and_then(|v| v.as_str());
        let authority = redirect.get("authority").and_then(|v| v.as_str());
        let code = redirect.get("redirectCode").and_then(|v| v.as_u64());
        return Ok(route::Action::Redirect(RedirectAction {
            host_redirect: authority.unwrap_or_default().to_string(),
            path_rewrite_specifier: uri
                .map(|u| redirect_action::PathRewriteSpecifier::PathRedirect(u.to_string())),
            response_code: match code {
                None | Some(301) => redirect_action::RedirectResponseCode::MovedPermanently,
                Some(302) => redirect_action::RedirectResponseCode::Found,
                Some(303) => redirect_action::RedirectResponseCode::SeeOther,
                Some(307) => redirect_action::RedirectResponseCode::TemporaryRedirect,
                Some(308) => redirect_action::RedirectResponseCode::PermanentRedirect,
                Some(c) => return Err(format!("redirect code {c} is not supported")),
            } as i32,
            ..RedirectAction::default()
        }));
    }
    if rule.route.is_empty() {
        return Err("rule has neither route nor redirect".to_string());
    }
    let mut clusters = Vec::new();
    let all_unweighted = rule.route.iter().all(|d| d.weight.is_none());
    let n = rule.route.len() as u32;
    for (i, d) in rule.route.iter().enumerate() {
        let weight = match d.weight {
            Some(w) if w < 0 => return Err(format!("route[{i}].weight {w} is negative")),
            Some(w) => w as u32,
            None if all_unweighted => 100 / n + u32::from(i == 0) * (100 % n),
            None => 0,
        };
        if weight > 0 || n == 1 {
            clusters.push((
                destination_cluster(ctx, d).map_err(|e| format!("route[{i}]: {e}"))?,
                weight,
                d.headers.as_ref(),
            ));
        }
    }
    let cluster_specifier = match clusters.as_slice() {
        [] => return Err("every destination has weight 0".to_string()),
        [(name, _, _)] => route_action::ClusterSpecifier::Cluster(name.clone()),
        many => route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: many
                .iter()
                .map(|(name, w, headers)| {
                    let (request_headers_to_add, request_headers_to_remove) =
                        header_ops(headers.and_then(|h| h.request.as_ref()));
                    let (response_headers_to_add, response_headers_to_remove) =
                        header_ops(headers.and_then(|h| h.response.as_ref()));
                    weighted_cluster::ClusterWeight {
                        name: name.clone(),
                        weight: Some(UInt32Value { value: *w }),
                        request_headers_to_add,
                        request_headers_to_remove,
                        response_headers_to_add,
                        response_headers_to_remove,
                        ..weighted_cluster::ClusterWeight::default()
                    }
                })
                .collect(),
            ..WeightedCluster::default()
        }),
    };
    let timeout = match &rule.timeout {
        Some(t) => Some(duration(
            parse_duration(t).map_err(|e| format!("timeout: {e}"))?,
        )),
        None => None,
    };
    let rewrite = rule.rewrite.as_ref();
    let retry_policy = traffic::retry_policy(rule.retries.as_ref())?;
    let request_mirror_policies = match &rule.mirror {
        None => Vec::new(),
        Some(m) => {
            let d = HttpRouteDestination {
                destination: m.clone(),
                ..HttpRouteDestination::default()
            };
            let cluster = destination_cluster(ctx, &d).map_err(|e| format!("mirror: {e}"))?;
            vec![traffic::mirror_policy(
                cluster,
                rule.mirror_percentage.as_ref(),
            )]
        }
    };
    // consistentHash of the (first) destination's DestinationRule → the route's hash policy.
    let hash_policy = clusters
        .iter()
        .find_map(|(name, _, _)| {
            super::cluster::load_balancer(ctx.registry, name).and_then(traffic::hash_policy)
        })
        .into_iter()
        .collect();
    Ok(route::Action::Route(RouteAction {
        hash_policy,
        retry_policy,
        request_mirror_policies,
        cluster_specifier: Some(cluster_specifier),
        prefix_rewrite: rewrite.and_then(|r| r.uri.clone()).unwrap_or_default(),
        host_rewrite_specifier: rewrite
            .and_then(|r| r.authority.clone())
            .map(route_action::HostRewriteSpecifier::HostRewriteLiteral),
        timeout,
        ..RouteAction::default()
    }))
}

/// `outbound|P|SUBSET|FQDN` for a destination: the port is the one named, else the service's
/// only port, else the virtual host's port when the destination is the virtual host's service.
fn destination_cluster(ctx: &RouteContext<'_>, d: &HttpRouteDestination) -> Result<String, String> {
    let dest = &d.destination;
    let host = ctx.registry.resolve(&dest.host, &ctx.vs.namespace);
    let svc = ctx.registry.services.get(&host);
    let port = match dest.port.as_ref().and_then(|p| p.number) {
        Some(p) => u16::try_from(p).map_err(|_| format!("destination port {p} is out of range"))?,
        None => match svc {
            Some(s) if s.ports.len() == 1 => s.ports[0].port,
            Some(s) if ctx.service_host == Some(host.as_str()) && s.port(ctx.port).is_some() => {
                ctx.port
            }
            Some(s) if s.ports.is_empty() => return Err(format!("service {host} has no ports")),
            Some(_) => {
                return Err(format!(
                    "service {host} has several ports; set destination.port.number"
                ));
            }
            None if ctx.service_host.is_some() => ctx.port,
            None => {
                return Err(format!(
                    "unknown host {host} and no destination.port.number"
                ));
            }
        },
    };
    Ok(cluster_name(
        port,
        dest.subset.as_deref().unwrap_or_default(),
        &host,
    ))
}
