//! Requests that are routed by xDS: the sidecar's outbound listener and the router's gateway
//! listeners. Virtual host → route → cluster → endpoint → upstream (mTLS when the cluster says).

use std::time::Instant;

use http::header::{HOST, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use rand::Rng;

use crate::admin::RequestLabels;
use crate::mixer::{CheckOutcome, RequestAttributes, add_response};
use crate::routing;

use super::context::{ProxyContext, service_of_cluster};
use super::headers::{authority, ensure_request_id, strip_hop_by_hop};
use super::response::{Body, content_length, streamed, text};
use super::upstream::{PeerPrincipal, UpstreamError};

/// Which kind of routed listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutedKind {
    /// The sidecar's outbound listener (no Check).
    SidecarOutbound,
    /// A router gateway listener (Check on each request).
    Gateway,
}

/// Handles one request arriving on the listener Pilot named `listener`.
pub async fn handle(
    ctx: &ProxyContext,
    listener: &str,
    kind: RoutedKind,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let config = ctx.config.load();
    let Some(authority) = authority(&req) else {
        return text(
            StatusCode::BAD_REQUEST,
            "request has no authority (Host header)",
        );
    };
    let Some(table) = config.route_table_for(listener) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no route configuration for listener {listener}"),
        );
    };
    let random: u32 = rand::rng().random();
    let Some(selected) =
        routing::select(table, &authority, req.uri().path(), req.headers(), random)
    else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no route for {authority}{}", req.uri().path()),
        );
    };
    let cluster_name = selected.cluster;
    let service = service_of_cluster(cluster_name);
    let Some(cluster) = config.clusters.get(cluster_name) else {
        ctx.metrics.upstream_error("unknown_cluster");
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no healthy upstream: unknown cluster {cluster_name}"),
        );
    };
    let Some(endpoint) = config.endpoints_of(cluster).and_then(|e| e.pick()) else {
        ctx.metrics.upstream_error("no_endpoint");
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no healthy upstream: cluster {cluster_name} has no endpoints"),
        );
    };

    let own = ctx.own_principal();
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
        let bag = attrs.to_bag();
        if let CheckOutcome::Deny { message, .. } = mixer.check(&bag).await {
            count(ctx, &own, "", service, 403, cluster.tls.is_some());
            return text(StatusCode::FORBIDDEN, message);
        }
        report_bag = Some(bag);
    }

    let tls = match &cluster.tls {
        None => None,
        Some(t) => match ctx.identity.get() {
            Some(id) => Some(id.client_config(&t.expected_sans)),
            None => {
                ctx.metrics.upstream_error("no_identity");
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "cluster {cluster_name} needs mTLS but the workload certificate is not held yet"
                    ),
                );
            }
        },
    };
    let request_size = content_length(req.headers());
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    ensure_request_id(headers);
    if let Ok(v) = HeaderValue::from_str(&authority) {
        headers.insert(HOST, v);
    }
    let mtls = tls.is_some();
    let resp = ctx.upstream.send(endpoint, tls, req).await;
    let mut resp = match resp {
        Ok(r) => r,
        Err(e) => {
            let reason = match e {
                UpstreamError::Connect(_) => "connect",
                UpstreamError::Request(_) => "request",
            };
            ctx.metrics.upstream_error(reason);
            tracing::debug!(cluster = cluster_name, %endpoint, error = %e, "upstream failed");
            count(ctx, &own, "", service, 503, mtls);
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("upstream {endpoint} of cluster {cluster_name}: {e}"),
            );
        }
    };
    strip_hop_by_hop(resp.headers_mut());
    let code = resp.status().as_u16();
    let peer = resp
        .extensions()
        .get::<PeerPrincipal>()
        .map(|p| p.0.as_str())
        .unwrap_or("");
    count(ctx, &own, peer, service, code, mtls);
    if let (Some(mixer), Some(mut bag)) = (&ctx.mixer, report_bag) {
        add_response(
            &mut bag,
            code,
            started.elapsed(),
            request_size,
            content_length(resp.headers()),
        );
        mixer.report(bag);
    }
    streamed(resp)
}

fn count(
    ctx: &ProxyContext,
    source: &str,
    destination: &str,
    service: &str,
    code: u16,
    mtls: bool,
) {
    let or_unknown = |s: &str| {
        if s.is_empty() {
            "unknown".to_string()
        } else {
            s.to_string()
        }
    };
    ctx.metrics
        .requests
        .get_or_create(&RequestLabels {
            reporter: "source",
            source_principal: or_unknown(source),
            destination_principal: or_unknown(destination),
            destination_service: service.to_string(),
            destination_workload: "unknown".to_string(),
            response_code: code,
            connection_security_policy: if mtls { "mutual_tls" } else { "none" },
        })
        .inc();
}
