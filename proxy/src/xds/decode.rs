//! Envoy xDS resources → the proxy's model. Every error names the resource and the field.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_proto::envoy::envoy::config::cluster::v3::Cluster as EnvoyCluster;
use mesh_proto::envoy::envoy::config::core::v3::{address, socket_address, transport_socket};
use mesh_proto::envoy::envoy::config::endpoint::v3::ClusterLoadAssignment;
use mesh_proto::envoy::envoy::config::listener::v3::{Listener as EnvoyListener, filter};
use mesh_proto::envoy::envoy::config::route::v3::{
    HeaderMatcher, RouteConfiguration, header_matcher::HeaderMatchSpecifier, route::Action,
    route_action, route_match::PathSpecifier,
};
use mesh_proto::envoy::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use mesh_proto::envoy::envoy::extensions::transport_sockets::tls::v3::{
    UpstreamTlsContext, common_tls_context::ValidationContextType,
};
use mesh_proto::envoy::envoy::r#type::matcher::v3::{RegexMatcher, string_matcher::MatchPattern};
use mesh_proto::envoy::google::protobuf::Any;
use mesh_proto::type_url;
use prost::Message;

use crate::authz::{INBOUND_LISTENER, InboundPolicy};
use crate::cluster::{Cluster, UpstreamTls};
use crate::routing::{
    Forwarding, HeaderMatch, HeaderMatchKind, PathMatch, Redirect, Route, RouteAction, RouteTable,
    VirtualHost,
};

use super::snapshot::Listener;

/// Why a resource cannot be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("resource has type {found}, expected {expected}")]
    WrongType { expected: String, found: String },
    #[error("{resource}: cannot decode: {reason}")]
    Protobuf { resource: String, reason: String },
    #[error("{resource}: {field}: {reason}")]
    Invalid {
        resource: String,
        field: String,
        reason: String,
    },
}

fn invalid(resource: &str, field: impl Into<String>, reason: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        resource: resource.to_string(),
        field: field.into(),
        reason: reason.into(),
    }
}

fn unpack<M: Message + Default>(any: &Any, expected: &str, what: &str) -> Result<M, DecodeError> {
    if any.type_url != expected {
        return Err(DecodeError::WrongType {
            expected: expected.to_string(),
            found: any.type_url.clone(),
        });
    }
    M::decode(any.value.as_slice()).map_err(|e| DecodeError::Protobuf {
        resource: what.to_string(),
        reason: e.to_string(),
    })
}

/// Whether a filter chain's transport socket is a `DownstreamTlsContext`.
fn terminates_tls(chain: &mesh_proto::envoy::envoy::config::listener::v3::FilterChain) -> bool {
    matches!(
        chain.transport_socket.as_ref().and_then(|t| t.config_type.as_ref()),
        Some(transport_socket::ConfigType::TypedConfig(any))
            if any.type_url == type_url::DOWNSTREAM_TLS_CONTEXT
    )
}

/// A `Listener`: its name, address and the RDS route name of its HTTP connection manager.
pub fn listener(any: &Any) -> Result<Listener, DecodeError> {
    let l: EnvoyListener = unpack(any, type_url::LISTENER, "listener")?;
    let res = format!("listener {}", l.name);
    if l.name.is_empty() {
        return Err(invalid(&res, "name", "empty"));
    }
    let address = match l.address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(sa)) => Some(socket_addr(&res, "address", sa)?),
        _ => None,
    };
    let mut route_config_name = None;
    let mut tcp = None;
    let mut mixer = None;
    let chains = l.filter_chains.iter().chain(l.default_filter_chain.iter());
    for (ci, chain) in chains.enumerate() {
        for (fi, f) in chain.filters.iter().enumerate() {
            let Some(filter::ConfigType::TypedConfig(tc)) = &f.config_type else {
                continue;
            };
            // A TCP port's listener (`crate::tcp`): one chain per filter chain, by SNI.
            if let Some(t) = crate::tcp::decode_tcp_proxy(tc).map_err(|(field, reason)| {
                invalid(
                    &res,
                    format!("filter_chains[{ci}].filters[{fi}].{field}"),
                    reason,
                )
            })? {
                // A gateway chain terminating TLS (`protocol: TLS` SIMPLE/MUTUAL) is served by
                // `crate::gateway` (its `ChainSpec::tcp`), not as passthrough.
                if l.name != INBOUND_LISTENER && terminates_tls(chain) {
                    continue;
                }
                let server_names = chain
                    .filter_chain_match
                    .as_ref()
                    .map(|m| m.server_names.clone())
                    .unwrap_or_default();
                tcp.get_or_insert_with(crate::tcp::TcpProxy::default)
                    .chains
                    .extend(t.chains.into_iter().map(|mut c| {
                        c.server_names = server_names.clone();
                        c
                    }));
                continue;
            }
            if tc.type_url != type_url::HTTP_CONNECTION_MANAGER {
                continue;
            }
            let field = format!("filter_chains[{ci}].filters[{fi}]");
            let hcm: HttpConnectionManager = unpack(
                tc,
                type_url::HTTP_CONNECTION_MANAGER,
                &format!("{res} {field}"),
            )?;
            // The `mixer` HTTP filter (the first chain's; Pilot gives every chain the same).
            if mixer.is_none() {
                mixer = crate::mixer::MixerFilter::from_hcm(&hcm)
                    .map_err(|(f, reason)| invalid(&res, format!("{field}.{f}"), reason))?
                    .map(std::sync::Arc::new);
            }
            match hcm.route_specifier {
                Some(RouteSpecifier::Rds(rds)) if !rds.route_config_name.is_empty() => {
                    route_config_name.get_or_insert(rds.route_config_name);
                }
                // The inbound listener routes inline to the local application.
                Some(RouteSpecifier::RouteConfig(_)) if l.name == INBOUND_LISTENER => {}
                _ => {
                    return Err(invalid(
                        &res,
                        field,
                        "http connection manager without rds.route_config_name",
                    ));
                }
            }
        }
    }
    // The inbound listener's security config, compiled once per LDS version.
    let inbound = if l.name == INBOUND_LISTENER {
        let policy = InboundPolicy::decode(&l).map_err(|e| invalid(&res, e.field, e.reason))?;
        Some(std::sync::Arc::new(policy))
    } else {
        None
    };
    Ok(Listener {
        name: l.name,
        address,
        route_config_name,
        inbound,
        tcp: tcp.map(std::sync::Arc::new),
        mixer,
    })
}

fn socket_addr(
    res: &str,
    field: &str,
    sa: &mesh_proto::envoy::envoy::config::core::v3::SocketAddress,
) -> Result<SocketAddr, DecodeError> {
    let port = match sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => {
            u16::try_from(p).map_err(|_| invalid(res, field, format!("port {p} out of range")))?
        }
        _ => return Err(invalid(res, field, "no port_value")),
    };
    let ip = sa
        .address
        .parse::<std::net::IpAddr>()
        .map_err(|_| invalid(res, field, format!("address {:?} is not an IP", sa.address)))?;
    Ok(SocketAddr::new(ip, port))
}

/// A `RouteConfiguration` as a route table.
pub fn route_table(any: &Any) -> Result<RouteTable, DecodeError> {
    let rc: RouteConfiguration = unpack(any, type_url::ROUTE, "route configuration")?;
    let res = format!("route configuration {}", rc.name);
    if rc.name.is_empty() {
        return Err(invalid(&res, "name", "empty"));
    }
    let mut hosts = Vec::with_capacity(rc.virtual_hosts.len());
    for (vi, vh) in rc.virtual_hosts.into_iter().enumerate() {
        let mut routes = Vec::with_capacity(vh.routes.len());
        for (ri, r) in vh.routes.into_iter().enumerate() {
            let field = format!("virtual_hosts[{vi}].routes[{ri}]");
            routes.push(decode_route(&res, &field, r)?);
        }
        hosts.push(VirtualHost {
            name: vh.name,
            domains: vh.domains,
            routes,
        });
    }
    Ok(RouteTable::new(rc.name, hosts))
}

fn decode_route(
    res: &str,
    field: &str,
    r: mesh_proto::envoy::envoy::config::route::v3::Route,
) -> Result<Route, DecodeError> {
    let mut forwarding = Forwarding::default();
    policies(res, field, &r, &mut forwarding)?;
    let m = r
        .r#match
        .ok_or_else(|| invalid(res, format!("{field}.match"), "missing"))?;
    let path = match m.path_specifier {
        Some(PathSpecifier::Prefix(p)) => PathMatch::Prefix(p),
        Some(PathSpecifier::Path(p)) => PathMatch::Exact(p),
        Some(PathSpecifier::SafeRegex(re)) => {
            PathMatch::Regex(regex(res, &format!("{field}.match.safe_regex"), &re)?)
        }
        None => PathMatch::Prefix("/".into()),
        Some(_) => {
            return Err(invalid(
                res,
                format!("{field}.match"),
                "unsupported path specifier",
            ));
        }
    };
    let mut headers = Vec::with_capacity(m.headers.len());
    for (hi, h) in m.headers.into_iter().enumerate() {
        headers.push(header(res, &format!("{field}.match.headers[{hi}]"), h)?);
    }
    let action = match r.action {
        Some(Action::Route(ra)) => {
            route_policies(res, field, &ra, &mut forwarding)?;
            forwarding.prefix_rewrite =
                (!ra.prefix_rewrite.is_empty()).then(|| ra.prefix_rewrite.clone());
            if let Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(h)) =
                &ra.host_rewrite_specifier
            {
                forwarding.host_rewrite = Some(h.clone());
            }
            forwarding.timeout = match &ra.timeout {
                Some(d) => {
                    let t = duration(res, &format!("{field}.route.timeout"), d)?;
                    // Envoy: a zero timeout disables it.
                    (!t.is_zero()).then_some(t)
                }
                None => None,
            };
            route_action_target(res, field, ra)?
        }
        Some(Action::Redirect(ra)) => RouteAction::Redirect(redirect(res, field, ra)?),
        Some(Action::DirectResponse(dr)) => {
            RouteAction::DirectResponse(direct_response(res, field, dr)?)
        }
        _ => {
            return Err(invalid(
                res,
                field,
                "only route, redirect and direct_response actions are supported",
            ));
        }
    };
    Ok(Route {
        name: r.name,
        path,
        headers,
        action,
        forwarding,
    })
}

/// Route-level header operations, fault injection and CORS (`crate::routing::envoy`).
fn policies(
    res: &str,
    field: &str,
    r: &mesh_proto::envoy::envoy::config::route::v3::Route,
    fw: &mut Forwarding,
) -> Result<(), DecodeError> {
    use crate::routing::envoy as pol;
    let at = |(f, reason): pol::FieldError| invalid(res, format!("{field}.{f}"), reason);
    fw.headers.request = pol::header_ops(
        &r.request_headers_to_add,
        &r.request_headers_to_remove,
        "request_headers",
    )
    .map_err(at)?;
    fw.headers.response = pol::header_ops(
        &r.response_headers_to_add,
        &r.response_headers_to_remove,
        "response_headers",
    )
    .map_err(at)?;
    fw.fault = pol::fault(&r.typed_per_filter_config).map_err(at)?;
    fw.cors = pol::cors(&r.typed_per_filter_config).map_err(at)?;
    Ok(())
}

/// Retry policy, mirrors and weighted clusters' header operations of a route action.
fn route_policies(
    res: &str,
    field: &str,
    ra: &mesh_proto::envoy::envoy::config::route::v3::RouteAction,
    fw: &mut Forwarding,
) -> Result<(), DecodeError> {
    use crate::routing::envoy as pol;
    let at = |(f, reason): pol::FieldError| invalid(res, format!("{field}.route.{f}"), reason);
    fw.retry = ra
        .retry_policy
        .as_ref()
        .map(pol::retry)
        .transpose()
        .map_err(at)?;
    fw.mirrors = pol::mirrors(&ra.request_mirror_policies).map_err(at)?;
    fw.hash_policy = pol::hash_policies(&ra.hash_policy).map_err(at)?;
    if let Some(route_action::ClusterSpecifier::WeightedClusters(wc)) = &ra.cluster_specifier {
        for (i, c) in wc.clusters.iter().enumerate() {
            let f = format!("weighted_clusters.clusters[{i}].");
            let request = pol::header_ops(
                &c.request_headers_to_add,
                &c.request_headers_to_remove,
                &format!("{f}request_headers"),
            )
            .map_err(at)?;
            let response = pol::header_ops(
                &c.response_headers_to_add,
                &c.response_headers_to_remove,
                &format!("{f}response_headers"),
            )
            .map_err(at)?;
            if !request.is_empty() || !response.is_empty() {
                fw.cluster_headers.insert(
                    c.name.clone(),
                    crate::routing::HeaderPolicy { request, response },
                );
            }
        }
    }
    Ok(())
}

/// A redirect action; the parts the mesh does not emit (regex rewrites) are refused.
fn redirect(
    res: &str,
    field: &str,
    ra: mesh_proto::envoy::envoy::config::route::v3::RedirectAction,
) -> Result<Redirect, DecodeError> {
    use mesh_proto::envoy::envoy::config::route::v3::redirect_action::{
        PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier,
    };
    let field = format!("{field}.redirect");
    let code = match RedirectResponseCode::try_from(ra.response_code) {
        Ok(RedirectResponseCode::MovedPermanently) => 301,
        Ok(RedirectResponseCode::Found) => 302,
        Ok(RedirectResponseCode::SeeOther) => 303,
        Ok(RedirectResponseCode::TemporaryRedirect) => 307,
        Ok(RedirectResponseCode::PermanentRedirect) => 308,
        Err(_) => return Err(invalid(res, &field, "unknown response_code")),
    };
    let path = match ra.path_rewrite_specifier {
        None => None,
        Some(PathRewriteSpecifier::PathRedirect(p)) => Some(p),
        Some(_) => {
            return Err(invalid(res, &field, "only path_redirect is supported"));
        }
    };
    let scheme = match ra.scheme_rewrite_specifier {
        None => None,
        Some(SchemeRewriteSpecifier::HttpsRedirect(true)) => Some("https".to_string()),
        Some(SchemeRewriteSpecifier::HttpsRedirect(false)) => None,
        Some(SchemeRewriteSpecifier::SchemeRedirect(s)) => Some(s),
    };
    let port = match ra.port_redirect {
        0 => None,
        p => {
            Some(u16::try_from(p).map_err(|_| invalid(res, &field, "port_redirect out of range"))?)
        }
    };
    Ok(Redirect {
        scheme,
        host: (!ra.host_redirect.is_empty()).then_some(ra.host_redirect),
        port,
        path,
        strip_query: ra.strip_query,
        code,
    })
}

/// A direct response: status 200..=599 and an inline body (`filename` and environment variable
/// sources are refused: a route update must not read the proxy's files).
fn direct_response(
    res: &str,
    field: &str,
    dr: mesh_proto::envoy::envoy::config::route::v3::DirectResponseAction,
) -> Result<crate::routing::DirectResponse, DecodeError> {
    use mesh_proto::envoy::envoy::config::core::v3::data_source::Specifier;
    let field = format!("{field}.direct_response");
    let status = u16::try_from(dr.status)
        .ok()
        .filter(|s| (200..=599).contains(s))
        .ok_or_else(|| {
            invalid(
                res,
                format!("{field}.status"),
                format!("{} is not 200..=599", dr.status),
            )
        })?;
    if dr.body_format.is_some() {
        return Err(invalid(
            res,
            format!("{field}.body_format"),
            "is not supported",
        ));
    }
    let body = match dr.body.and_then(|b| b.specifier) {
        None => Vec::new(),
        Some(Specifier::InlineString(s)) => s.into_bytes(),
        Some(Specifier::InlineBytes(b)) => b,
        Some(_) => {
            return Err(invalid(
                res,
                format!("{field}.body"),
                "only inline_string and inline_bytes are supported",
            ));
        }
    };
    Ok(crate::routing::DirectResponse { status, body })
}

/// A protobuf duration as a `Duration`, refusing negative or out-of-range values.
fn duration(
    res: &str,
    field: &str,
    d: &mesh_proto::envoy::google::protobuf::Duration,
) -> Result<Duration, DecodeError> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(invalid(res, field, "negative or malformed duration"));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// The cluster or weighted clusters of a route action.
fn route_action_target(
    res: &str,
    field: &str,
    ra: mesh_proto::envoy::envoy::config::route::v3::RouteAction,
) -> Result<RouteAction, DecodeError> {
    Ok(match ra.cluster_specifier {
        Some(route_action::ClusterSpecifier::Cluster(c)) => RouteAction::Cluster(c),
        Some(route_action::ClusterSpecifier::WeightedClusters(wc)) => {
            let clusters: Vec<(String, u32)> = wc
                .clusters
                .into_iter()
                .map(|c| (c.name, c.weight.map_or(0, |w| w.value)))
                .collect();
            let total = clusters
                .iter()
                .try_fold(0u32, |acc, (_, w)| acc.checked_add(*w))
                .ok_or_else(|| {
                    invalid(
                        res,
                        format!("{field}.route.weighted_clusters"),
                        "weights overflow",
                    )
                })?;
            if total == 0 {
                return Err(invalid(
                    res,
                    format!("{field}.route.weighted_clusters"),
                    "total weight is 0",
                ));
            }
            RouteAction::Weighted { clusters, total }
        }
        _ => {
            return Err(invalid(
                res,
                format!("{field}.route"),
                "no cluster or weighted_clusters",
            ));
        }
    })
}

fn regex(res: &str, field: &str, re: &RegexMatcher) -> Result<regex::Regex, DecodeError> {
    // Envoy's safe_regex is an RE2 full match.
    regex::Regex::new(&format!("^(?:{})$", re.regex))
        .map_err(|e| invalid(res, field, format!("bad regex {:?}: {e}", re.regex)))
}

#[allow(deprecated)]
fn header(res: &str, field: &str, h: HeaderMatcher) -> Result<HeaderMatch, DecodeError> {
    let kind = match h.header_match_specifier {
        Some(HeaderMatchSpecifier::ExactMatch(v)) => HeaderMatchKind::Exact(v),
        Some(HeaderMatchSpecifier::PrefixMatch(v)) => HeaderMatchKind::Prefix(v),
        Some(HeaderMatchSpecifier::SuffixMatch(v)) => HeaderMatchKind::Suffix(v),
        Some(HeaderMatchSpecifier::ContainsMatch(v)) => HeaderMatchKind::Contains(v),
        Some(HeaderMatchSpecifier::SafeRegexMatch(re)) => {
            HeaderMatchKind::Regex(regex(res, field, &re)?)
        }
        Some(HeaderMatchSpecifier::PresentMatch(p)) => HeaderMatchKind::Present(p),
        Some(HeaderMatchSpecifier::StringMatch(sm)) => match sm.match_pattern {
            Some(MatchPattern::Exact(v)) => HeaderMatchKind::Exact(v),
            Some(MatchPattern::Prefix(v)) => HeaderMatchKind::Prefix(v),
            Some(MatchPattern::Suffix(v)) => HeaderMatchKind::Suffix(v),
            Some(MatchPattern::Contains(v)) => HeaderMatchKind::Contains(v),
            Some(MatchPattern::SafeRegex(re)) => HeaderMatchKind::Regex(regex(res, field, &re)?),
            _ => return Err(invalid(res, field, "unsupported string_match")),
        },
        None => HeaderMatchKind::Present(true),
        Some(HeaderMatchSpecifier::RangeMatch(_)) => {
            return Err(invalid(res, field, "range_match is not supported"));
        }
    };
    if h.name.is_empty() || http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
        return Err(invalid(
            res,
            format!("{field}.name"),
            format!("bad header name {:?}", h.name),
        ));
    }
    Ok(HeaderMatch {
        name: h.name.to_ascii_lowercase(),
        kind,
        invert: h.invert_match,
    })
}

/// A decoded `Cluster` with its discovery type and, for STATIC clusters, the inline endpoints.
#[derive(Debug)]
pub struct DecodedCluster {
    pub cluster: Cluster,
    pub discovery: crate::cluster::Discovery,
    pub static_endpoints: Option<Vec<crate::cluster::Endpoint>>,
}

/// A `Cluster`: EDS name, connect timeout, upstream TLS and discovery type.
pub fn cluster(any: &Any) -> Result<DecodedCluster, DecodeError> {
    let c: EnvoyCluster = unpack(any, type_url::CLUSTER, "cluster")?;
    let res = format!("cluster {}", c.name);
    if c.name.is_empty() {
        return Err(invalid(&res, "name", "empty"));
    }
    let eds_name = c
        .eds_cluster_config
        .as_ref()
        .map(|e| e.service_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| c.name.clone());
    let connect_timeout = c
        .connect_timeout
        .as_ref()
        .map_or(Duration::from_secs(10), |d| {
            Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)
        });
    let tls = match &c.transport_socket {
        None => None,
        Some(ts) => match &ts.config_type {
            Some(transport_socket::ConfigType::TypedConfig(tc))
                if tc.type_url == type_url::UPSTREAM_TLS_CONTEXT =>
            {
                let ctx: UpstreamTlsContext = unpack(
                    tc,
                    type_url::UPSTREAM_TLS_CONTEXT,
                    &format!("{res} transport_socket"),
                )?;
                Some(
                    upstream_tls(ctx)
                        .map_err(|(f, r)| invalid(&res, format!("transport_socket.{f}"), r))?,
                )
            }
            _ => {
                return Err(invalid(
                    &res,
                    "transport_socket",
                    format!("unsupported transport socket {:?}", ts.name),
                ));
            }
        },
    };
    let at = |(f, reason): crate::cluster::envoy::FieldError| invalid(&res, f, reason);
    let lb = crate::cluster::envoy::lb_policy(&c).map_err(at)?;
    let outlier = crate::cluster::envoy::outlier_detection(&c).map_err(at)?;
    let (discovery, static_endpoints) = crate::cluster::envoy::discovery(&c).map_err(at)?;
    // Only EDS clusters name another resource; the others hold their endpoints under their name.
    let eds_name = if discovery == crate::cluster::Discovery::Eds {
        eds_name
    } else {
        c.name.clone()
    };
    let cluster = Cluster {
        lb,
        limits: crate::cluster::envoy::limits(&c),
        max_requests_per_connection: crate::cluster::envoy::max_requests_per_connection(&c),
        outlier,
        service: super::cluster_metadata::istio_service(&c),
        name: c.name,
        eds_name,
        connect_timeout,
        tls,
    };
    Ok(DecodedCluster {
        cluster,
        discovery,
        static_endpoints,
    })
}

fn upstream_tls(ctx: UpstreamTlsContext) -> Result<UpstreamTls, crate::cluster::envoy::FieldError> {
    // DestinationRule SIMPLE/MUTUAL: the cluster's own certificates (files read here).
    let origination = crate::cluster::envoy::origination(&ctx)?;
    let validation = ctx
        .common_tls_context
        .and_then(|c| c.validation_context_type);
    let sans = match validation {
        Some(ValidationContextType::CombinedValidationContext(c)) => c
            .default_validation_context
            .map(|v| v.match_typed_subject_alt_names)
            .unwrap_or_default(),
        Some(ValidationContextType::ValidationContext(v)) => v.match_typed_subject_alt_names,
        _ => Vec::new(),
    };
    let expected_sans: Vec<String> = sans
        .into_iter()
        .filter_map(|m| match m.matcher?.match_pattern? {
            MatchPattern::Exact(s) => Some(s),
            _ => None,
        })
        .collect();
    // No SANs (Pilot knows no service account behind the service yet): like Envoy, verify the
    // chain to the mesh root and accept any identity of the trust domain. Refusing the cluster
    // here would NACK every cluster of the push.
    Ok(UpstreamTls {
        expected_sans,
        sni: ctx.sni,
        origination,
    })
}

/// A `ClusterLoadAssignment`: its name and its healthy endpoints (weights, priorities and
/// localities kept).
pub fn load_assignment(any: &Any) -> Result<(String, Vec<crate::cluster::Endpoint>), DecodeError> {
    let cla: ClusterLoadAssignment = unpack(any, type_url::ENDPOINT, "cluster load assignment")?;
    let res = format!("cluster load assignment {}", cla.cluster_name);
    if cla.cluster_name.is_empty() {
        return Err(invalid(&res, "cluster_name", "empty"));
    }
    let hosts = crate::cluster::envoy::lb_hosts(&cla)
        .map_err(|(field, reason)| invalid(&res, field, reason))?;
    let mut endpoints = Vec::with_capacity(hosts.len());
    for (i, h) in hosts.into_iter().enumerate() {
        let e = h.resolved().ok_or_else(|| {
            invalid(
                &res,
                format!("endpoint[{i}]"),
                format!("address {:?} is not an IP", h.host),
            )
        })?;
        endpoints.push(e);
    }
    Ok((cla.cluster_name, endpoints))
}

#[cfg(test)]
#[path = "decode_fuzz.rs"]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtls_cluster_without_sans_accepts_any_mesh_identity() {
        let ctx = UpstreamTlsContext {
            common_tls_context: Some(Default::default()),
            sni: "outbound_.9080_._.a.default.svc.cluster.local".into(),
            ..Default::default()
        };
        let tls = upstream_tls(ctx).unwrap();
        assert!(tls.origination.is_none(), "mesh mTLS");
        assert!(tls.expected_sans.is_empty());
        assert_eq!(tls.sni, "outbound_.9080_._.a.default.svc.cluster.local");
    }

    #[test]
    fn direct_responses_are_decoded_and_bad_ones_refused() {
        use mesh_proto::envoy::envoy::config::core::v3::{DataSource, data_source::Specifier};
        use mesh_proto::envoy::envoy::config::route::v3::DirectResponseAction;
        let dr = |status: u32, body: Option<Specifier>| DirectResponseAction {
            status,
            body: body.map(|s| DataSource {
                specifier: Some(s),
                ..Default::default()
            }),
            ..Default::default()
        };
        let ok = direct_response(
            "r",
            "f",
            dr(502, Some(Specifier::InlineString("no".into()))),
        )
        .unwrap();
        assert_eq!((ok.status, ok.body.as_slice()), (502, b"no".as_slice()));
        let bytes = direct_response("r", "f", dr(200, Some(Specifier::InlineBytes(vec![0, 1]))));
        assert_eq!(bytes.unwrap().body, vec![0, 1]);
        assert!(
            direct_response("r", "f", dr(204, None))
                .unwrap()
                .body
                .is_empty()
        );
        let bad_status = direct_response("r", "f", dr(99, None)).unwrap_err();
        assert!(bad_status.to_string().contains("f.direct_response.status"));
        let file = direct_response(
            "r",
            "f",
            dr(200, Some(Specifier::Filename("/etc/passwd".into()))),
        );
        assert!(file.unwrap_err().to_string().contains("inline_string"));
    }
}
