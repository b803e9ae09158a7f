//! Requests that are routed by xDS: the sidecar's outbound listener and the router's gateway
//! listeners. Virtual host → route → cluster → endpoint → upstream (mTLS when the cluster says).

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use rand::Rng;

use crate::cluster::{Discovery, OriginalDestination, authority_target};
use crate::mixer::{RequestAttributes, add_response, default_policy};
use crate::routing;
use crate::trace::{HopKind, HopRequest, HopSpan, client_span_name};

use super::access_log::{AccessLogEntry, non_empty};
use super::context::{ProxyContext, service_of_cluster};
use super::cors;
use super::fault::{self, Injected};
use super::headers::{Authority, ensure_request_id, strip_hop_by_hop};
use super::metered::record_on_end;
use super::mirror;
use super::response::{Body, content_length, text};
use super::retry::{self, ForwardError, RequestBody, RequestHead, Target};
use super::telemetry::{
    DESTINATION_SERVICE, Outcome, Party, Reporter, Service, Workload, flags, request_labels,
    strip_peer_headers,
};
use super::upstream::{PeerPrincipal, UpstreamError};

/// Which kind of routed listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutedKind {
    /// The sidecar's outbound listener (no Check).
    SidecarOutbound,
    /// A router gateway listener (Check on each request).
    Gateway,
}

/// What the source side knows when it records a request.
struct Record<'a> {
    ctx: &'a ProxyContext,
    started: Instant,
    service: Service,
    request_bytes: u64,
    /// The access log entry so far, when access logging is on.
    log: Option<AccessLogEntry>,
    /// This hop's CLIENT span, when tracing is on and a route chose a cluster.
    span: Option<HopSpan>,
}

impl Record<'_> {
    /// Records the request when `resp`'s body ends; `peer` is the destination workload and
    /// principal (from the mTLS handshake and the metadata exchange), when known.
    fn finish(
        self,
        peer: Option<(&Workload, &str)>,
        mtls: bool,
        flags: &'static str,
        resp: Response<Body>,
    ) -> Response<Body> {
        let own_principal = if mtls {
            self.ctx.own_principal()
        } else {
            String::new()
        };
        let unknown = Workload::unknown();
        let (dst_workload, dst_principal) = peer.unwrap_or((&unknown, ""));
        let labels = request_labels(
            Reporter::Source,
            &Party {
                workload: &self.ctx.workload,
                principal: &own_principal,
            },
            &Party {
                workload: dst_workload,
                principal: dst_principal,
            },
            &self.service,
            Outcome {
                response_code: resp.status().as_u16(),
                response_flags: flags,
                mtls,
            },
        );
        let log = self.log.map(|mut e| {
            e.response_code = resp.status().as_u16();
            e.response_flags = flags;
            e.upstream_peer_principal = non_empty(dst_principal);
            e
        });
        let resp = record_on_end(
            self.ctx,
            resp,
            labels,
            self.started,
            self.request_bytes,
            log,
        );
        match self.span {
            Some(span) => span.finish(resp, flags, self.request_bytes),
            None => resp,
        }
    }
}

/// Handles one request arriving on the listener Pilot named `listener`.
pub async fn handle(
    ctx: &ProxyContext,
    listener: &str,
    kind: RoutedKind,
    remote: SocketAddr,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let config = ctx.config.load();
    let Some(authority) = Authority::of(&req) else {
        return text(
            StatusCode::BAD_REQUEST,
            "request has no authority (Host header)",
        );
    };
    let request_size = content_length(req.headers());
    let request_bytes = request_size.max(0) as u64;
    // Early, so every access log line and the upstream carry the same id.
    ensure_request_id(req.headers_mut());
    let entry = ctx
        .access_log
        .as_ref()
        .filter(|l| l.logs(Reporter::Source))
        .map(|_| AccessLogEntry::start(&req, Some(remote), Reporter::Source, request_bytes));
    let no_route = |msg: String| {
        Record {
            ctx,
            started,
            service: Service::from_host(&authority, &ctx.workload.namespace),
            request_bytes,
            log: entry.clone(),
            span: None,
        }
        .finish(
            None,
            false,
            flags::NO_ROUTE,
            text(StatusCode::NOT_FOUND, msg),
        )
    };
    let Some(table) = config.route_table_for(listener) else {
        return no_route(format!("no route configuration for listener {listener}"));
    };
    let random: u32 = rand::rng().random();
    let Some(selected) =
        routing::select(table, &authority, req.uri().path(), req.headers(), random)
    else {
        return no_route(format!("no route for {authority}{}", req.uri().path()));
    };
    let Some(cluster_name) = selected.cluster else {
        // A redirect or a direct response: answered here, with the route's header operations.
        let mut resp = match &selected.route.action {
            routing::RouteAction::Redirect(r) => redirect_response(
                r.code,
                &r.location(
                    &authority,
                    req.uri().path_and_query().map_or("/", |pq| pq.as_str()),
                ),
            ),
            routing::RouteAction::DirectResponse(d) => direct_response(d),
            _ => return no_route(format!("route {:?} has no target", selected.route.name)),
        };
        selected
            .route
            .forwarding
            .headers
            .response
            .apply(resp.headers_mut());
        return Record {
            ctx,
            started,
            service: Service::from_host(&authority, &ctx.workload.namespace),
            request_bytes,
            log: entry.map(|mut e| {
                e.route_name = non_empty(&selected.route.name);
                e
            }),
            span: None,
        }
        .finish(None, false, flags::NONE, resp);
    };
    let service = service_of_cluster(cluster_name);
    // This hop's CLIENT span (Istio names it after the route's destination).
    let span = ctx.tracer.as_ref().map(|t| {
        t.start(HopRequest {
            kind: HopKind::Client,
            name: client_span_name(cluster_name),
            method: req.method(),
            authority: &authority,
            path: req.uri().path_and_query().map_or("/", |pq| pq.as_str()),
            headers: req.headers(),
            peer: Some(remote),
            upstream_cluster: cluster_name.into(),
            started,
        })
    });
    let found_cluster = config.clusters.get(cluster_name);
    let mut record = Record {
        ctx,
        started,
        // Pilot's `istio` cluster metadata (resolved at CDS time), else from the FQDN.
        service: found_cluster
            .and_then(|c| c.service.clone())
            .unwrap_or_else(|| Service::from_fqdn(service)),
        request_bytes,
        log: entry.map(|mut e| {
            e.route_name = non_empty(&selected.route.name);
            e.upstream_cluster = Some(cluster_name.to_string());
            e
        }),
        span,
    };
    let Some(cluster) = found_cluster else {
        ctx.metrics.upstream_error("unknown_cluster");
        return record.finish(
            None,
            false,
            flags::NO_HEALTHY_UPSTREAM,
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no healthy upstream: unknown cluster {cluster_name}"),
            ),
        );
    };
    let discovery = config.discovery_of(cluster_name);
    let original: [SocketAddr; 1];
    let endpoints: &[SocketAddr] = match discovery {
        // PassthroughCluster: the one host is where the downstream was going.
        // Rare paths are boxed so the request's future (moved whole into hyper's connection
        // state per request) stays the size of the common path.
        Discovery::OriginalDst => match Box::pin(original_destination(&req, &authority)).await {
            Some(a) => {
                original = [a];
                &original
            }
            None => &[],
        },
        _ => config
            .endpoints_of(cluster)
            .map_or(&[], |e| e.addrs.as_slice()),
    };
    if endpoints.is_empty() {
        let (reason, why) = match discovery {
            // BlackHoleCluster: a STATIC cluster without endpoints.
            Discovery::Static => ("blackhole", "has no endpoints (STATIC)"),
            Discovery::OriginalDst => (
                "no_original_dst",
                "has no original destination for this request",
            ),
            _ => ("no_endpoint", "has no endpoints"),
        };
        ctx.metrics.upstream_error(reason);
        return record.finish(
            None,
            false,
            flags::NO_HEALTHY_UPSTREAM,
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no healthy upstream: cluster {cluster_name} {why}"),
            ),
        );
    }

    let mut report_bag = None;
    if kind == RoutedKind::Gateway
        && let Some(mixer) = &ctx.mixer
    {
        let uid = ctx.node.uid();
        let attrs = RequestAttributes {
            reporter_kind: "outbound",
            source_principal: None,
            destination_principal: None,
            source_uid: Some(&uid),
            destination_uid: None,
            destination_service_host: service,
            host: &authority,
            path: req.uri().path(),
            method: req.method().as_str(),
            headers: req.headers(),
            mtls: false,
        };
        let mut bag = attrs.to_bag();
        // The routed cluster's Istio service metadata names the destination service.
        if let Some(svc) = found_cluster.and_then(|c| c.service.as_ref()) {
            crate::mixer::set_destination_service(&mut bag, svc);
        }
        // Pilot's `mixer` filter on this listener: quotas and the network fail policy.
        let policy = default_policy(config.mixer_filter(listener), service, &mut bag);
        if !policy.skip_check
            && let Some((status, body)) = Box::pin(mixer.check_request(&bag, &policy))
                .await
                .rejection()
        {
            return record.finish(
                None,
                false,
                flags::UNAUTHORIZED_EXTERNAL,
                text(status, body),
            );
        }
        report_bag = (!policy.skip_report).then_some(bag);
    }

    let tls = match &cluster.tls {
        None => None,
        Some(t) => match crate::tls::upstream_client_config(t, &ctx.identity) {
            Some(cfg) => Some(cfg),
            None => {
                ctx.metrics.upstream_error("no_identity");
                return record.finish(
                    None,
                    false,
                    flags::UPSTREAM_CONNECT_FAILURE,
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "cluster {cluster_name} needs mTLS but the workload certificate is not held yet"
                        ),
                    ),
                );
            }
        },
    };
    // Mesh mTLS only: TLS origination to an outside server is not a sidecar hop.
    let mtls = tls.is_some()
        && cluster
            .tls
            .as_ref()
            .is_some_and(|t| t.origination.is_none());
    let forwarding = &selected.route.forwarding;
    // CORS (before fault injection, in Istio's filter order): allowed preflights end here.
    let cors_origin = forwarding
        .cors
        .as_ref()
        .and_then(|c| cors::allowed_origin(c, req.headers()));
    if let Some(c) = &forwarding.cors
        && let Some(resp) = cors::preflight(c, req.method(), req.headers())
    {
        return record.finish(None, false, flags::NONE, resp);
    }
    // Fault injection (Envoy's fault filter runs before the router, outside the route timeout).
    let mut injected = Injected::default();
    if let Some(fault) = &forwarding.fault {
        let (delay_roll, abort_roll): (u32, u32) = {
            let mut rng = rand::rng();
            (rng.random(), rng.random())
        };
        injected = Box::pin(fault::inject(fault, delay_roll, abort_roll)).await;
        if let Some(status) = injected.abort {
            ctx.metrics.upstream_error("fault_abort");
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = text(status, "fault filter abort");
            forwarding.headers.response.apply(resp.headers_mut());
            return record.finish(
                None,
                false,
                injected.flags().unwrap_or(fault::flags::FAULT_INJECTED),
                resp,
            );
        }
    }
    let cluster_headers = forwarding.cluster_headers.get(cluster_name);
    forwarding.headers.request.apply(req.headers_mut());
    if let Some(h) = cluster_headers {
        h.request.apply(req.headers_mut());
    }
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    // The trace continues upstream from this hop's span (W3C and B3).
    if let Some(span) = &record.span {
        span.inject(headers);
    }
    let host = forwarding.host_rewrite.as_deref().unwrap_or(&authority);
    // Most requests already carry exactly this `Host`: kept as it is (no copy).
    let mut hosts = headers.get_all(HOST).iter();
    let same = hosts
        .next()
        .is_some_and(|v| v.as_bytes() == host.as_bytes())
        && hosts.next().is_none();
    if !same && let Ok(v) = HeaderValue::from_str(host) {
        headers.insert(HOST, v);
    }
    // Metadata exchange: only to another sidecar over mTLS; never pass the app's own copy on.
    if mtls {
        ctx.workload.write_peer_headers(headers);
        if let Ok(v) = HeaderValue::from_str(service) {
            headers.insert(DESTINATION_SERVICE.clone(), v);
        }
    } else {
        strip_peer_headers(headers);
    }
    if let Some(path) = req
        .uri()
        .path_and_query()
        .and_then(|pq| selected.route.rewritten_path(pq.as_str()))
    {
        match rewrite_path(req.uri(), &path) {
            Some(uri) => *req.uri_mut() = uri,
            None => {
                return record.finish(
                    None,
                    mtls,
                    flags::NO_ROUTE,
                    text(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "route {:?} rewrote the path to an invalid one: {path:?}",
                            selected.route.name
                        ),
                    ),
                );
            }
        }
    }
    let (parts, body) = req.into_parts();
    let body = if forwarding.retry.is_some() && body.is_end_stream() {
        // Nothing to read for a replay (GET and the like).
        RequestBody::Buffered(Bytes::new())
    } else if forwarding.retry.is_some() || !forwarding.mirrors.is_empty() {
        match Box::pin(retry::prepare_body(body, &parts.headers)).await {
            Ok(b) => b,
            Err(e) => {
                return record.finish(
                    None,
                    mtls,
                    flags::UPSTREAM_CONNECTION_TERMINATION,
                    text(StatusCode::BAD_REQUEST, e),
                );
            }
        }
    } else {
        RequestBody::Streaming(body)
    };
    let head = RequestHead {
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
    };
    if let RequestBody::Buffered(bytes) = &body
        && !forwarding.mirrors.is_empty()
    {
        mirror::send(ctx, &forwarding.mirrors, &head, bytes);
    }
    let hash = if forwarding.hash_policy.is_empty() {
        None
    } else {
        routing::HashPolicy::key(
            &forwarding.hash_policy,
            &head.headers,
            head.uri.query(),
            remote.ip(),
        )
    };
    let state = ctx.upstream.clusters.get(cluster);
    if *discovery != Discovery::OriginalDst
        && let Some(e) = config.endpoints_arc(cluster)
    {
        // Endpoint weights for the load balancer.
        state.observe(e);
    }
    let target = Target {
        hash,
        cluster,
        endpoints,
        state,
        tls,
        retry: forwarding.retry.as_ref(),
    };
    let sent = retry::forward(ctx, target, head, body);
    let resp = match forwarding.timeout {
        None => sent.await,
        Some(limit) => match tokio::time::timeout(limit, sent).await {
            Ok(r) => r,
            Err(_) => {
                ctx.metrics.upstream_error("timeout");
                return record.finish(
                    None,
                    mtls,
                    flags::UPSTREAM_REQUEST_TIMEOUT,
                    text(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("upstream request timeout ({limit:?}) to cluster {cluster_name}"),
                    ),
                );
            }
        },
    };
    let (mut resp, endpoint, exhausted) = match resp {
        Ok(f) => {
            if f.retries > 0 {
                tracing::debug!(
                    cluster = cluster_name,
                    retries = f.retries,
                    status = f.response.status().as_u16(),
                    "answered after retries"
                );
            }
            (f.response, f.endpoint, f.exhausted)
        }
        Err(e) => {
            let (status, reason, flag, msg) = match e {
                ForwardError::Overflow(o) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overflow",
                    retry::flags::UPSTREAM_OVERFLOW,
                    format!(
                        "upstream connect error or disconnect/reset before headers. reset reason: overflow ({o})"
                    ),
                ),
                ForwardError::NoEndpoint => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_endpoint",
                    flags::NO_HEALTHY_UPSTREAM,
                    format!("no healthy upstream: cluster {cluster_name}"),
                ),
                ForwardError::Upstream {
                    endpoint,
                    error,
                    exhausted,
                } => {
                    let (reason, flag, flag_exhausted) = match error {
                        UpstreamError::Connect(_) => (
                            "connect",
                            flags::UPSTREAM_CONNECT_FAILURE,
                            retry::flags::CONNECT_FAILURE_RETRIES_EXHAUSTED,
                        ),
                        UpstreamError::Request(_) => (
                            "request",
                            flags::UPSTREAM_CONNECTION_TERMINATION,
                            retry::flags::RESET_RETRIES_EXHAUSTED,
                        ),
                    };
                    tracing::debug!(cluster = cluster_name, %endpoint, error = %error, "upstream failed");
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        reason,
                        if exhausted { flag_exhausted } else { flag },
                        format!("upstream {endpoint} of cluster {cluster_name}: {error}"),
                    )
                }
                ForwardError::PerTryTimeout {
                    endpoint,
                    exhausted,
                } => (
                    StatusCode::GATEWAY_TIMEOUT,
                    "per_try_timeout",
                    if exhausted {
                        retry::flags::TIMEOUT_RETRIES_EXHAUSTED
                    } else {
                        flags::UPSTREAM_REQUEST_TIMEOUT
                    },
                    format!(
                        "upstream request timeout (per try) to {endpoint} of cluster {cluster_name}"
                    ),
                ),
            };
            ctx.metrics.upstream_error(reason);
            let mut resp = text(status, msg);
            forwarding.headers.response.apply(resp.headers_mut());
            return record.finish(None, mtls, flag, resp);
        }
    };
    if let Some(e) = record.log.as_mut() {
        e.upstream_host = Some(endpoint.to_string());
    }
    strip_hop_by_hop(resp.headers_mut());
    let code = resp.status().as_u16();
    let peer_principal = resp
        .extensions()
        .get::<PeerPrincipal>()
        .map(|p| p.0.clone());
    // The peer's metadata counts only when the response came over mTLS from a sidecar.
    let peer_workload = peer_principal
        .as_deref()
        .map(|p| Workload::from_peer_headers(resp.headers(), p));
    strip_peer_headers(resp.headers_mut());
    forwarding.headers.response.apply(resp.headers_mut());
    if let Some(h) = cluster_headers {
        h.response.apply(resp.headers_mut());
    }
    if let (Some(c), Some(origin)) = (&forwarding.cors, cors_origin) {
        cors::decorate(c, origin, resp.headers_mut());
    }
    let response_size = content_length(resp.headers());
    if let (Some(mixer), Some(mut bag)) = (&ctx.mixer, report_bag) {
        add_response(
            &mut bag,
            code,
            started.elapsed(),
            request_size,
            response_size,
        );
        mixer.report(bag);
    }
    let unknown = Workload::unknown();
    record.finish(
        Some((
            peer_workload.as_ref().unwrap_or(&unknown),
            peer_principal.as_deref().unwrap_or(""),
        )),
        mtls,
        if exhausted {
            retry::flags::RETRIES_EXHAUSTED
        } else if injected.delayed {
            fault::flags::DELAY_INJECTED
        } else {
            flags::NONE
        },
        resp,
    )
}

/// `uri` with its path and query replaced by `path_and_query` (scheme and authority kept).
fn rewrite_path(uri: &http::Uri, path_and_query: &str) -> Option<http::Uri> {
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    http::Uri::from_parts(parts).ok()
}

/// Where an ORIGINAL_DST cluster sends the request: the capture listener's original
/// destination when there is one, else the request's authority (port 80 when it names none;
/// a host name is looked up with the system resolver, first address).
async fn original_destination(req: &Request<Incoming>, authority: &str) -> Option<SocketAddr> {
    if let Some(OriginalDestination(a)) = req.extensions().get::<OriginalDestination>() {
        return Some(*a);
    }
    match authority_target(authority, 80)? {
        Ok(a) => Some(a),
        Err((host, port)) => match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(mut addrs) => addrs.next(),
            Err(e) => {
                tracing::debug!(%host, error = %e, "original destination lookup failed");
                None
            }
        },
    }
}

/// A route's `direct_response`: its status and body (`text/plain` when there is a body, as
/// Envoy sends it).
fn direct_response(d: &routing::DirectResponse) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(d.body.clone()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = StatusCode::from_u16(d.status).unwrap_or(StatusCode::OK);
    if !d.body.is_empty() {
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
    }
    resp
}

/// A redirect answer with `Location`.
fn redirect_response(code: u16, location: &str) -> Response<Body> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    let mut resp = text(status, String::new());
    match HeaderValue::from_str(location) {
        Ok(v) => {
            resp.headers_mut().insert(http::header::LOCATION, v);
            resp
        }
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("redirect location {location:?} is not a valid header value"),
        ),
    }
}

#[cfg(test)]
#[path = "routed_tests.rs"]
mod tests;
