//! Inbound requests (after mTLS termination): Check, `x-forwarded-client-cert`, forward to the
//! application, count, Report.

use std::net::SocketAddr;
use std::time::Instant;

use http::header::{HOST, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::mixer::{CheckOutcome, RequestAttributes, add_response};

use super::access_log::{AccessLogEntry, non_empty};
use super::context::ProxyContext;
use super::headers::{XFCC, authority, ensure_request_id, strip_hop_by_hop};
use super::metered::record_on_end;
use super::response::{Body, content_length, streamed, text};
use super::telemetry::{
    Outcome, Party, Reporter, Service, Workload, flags, request_labels, strip_peer_headers,
};
use super::upstream::UpstreamError;

/// Handles one request from the authenticated peer `peer` (its SPIFFE id, empty if none).
///
/// The inbound listener only serves mutual TLS, so the peer's `x-mesh-peer-*` metadata is
/// trusted; it is read, then stripped before the application sees the request. The response
/// carries this workload's metadata back to the calling sidecar.
pub async fn handle(
    ctx: &ProxyContext,
    peer: &str,
    remote: SocketAddr,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let own = ctx.own_principal();
    let authority = authority(&req).unwrap_or_default();
    let service = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(h, _)| h)
        .to_string();
    // Trusted: this listener only serves mutual TLS with sidecar certificates.
    let source = Workload::from_peer_headers(req.headers(), peer);
    strip_peer_headers(req.headers_mut());
    let request_size = content_length(req.headers());
    let service_labels = Service::from_host(&authority, &ctx.workload.namespace);
    // Early, so the access log line and the application see the same id.
    ensure_request_id(req.headers_mut());
    let request_bytes = request_size.max(0) as u64;
    let entry = ctx.access_log.as_ref().map(|_| {
        let mut e = AccessLogEntry::start(&req, Some(remote), Reporter::Destination, request_bytes);
        e.downstream_peer_principal = non_empty(peer);
        // Istio's inbound cluster for the application's port.
        e.upstream_cluster = Some(format!("inbound|{}||", ctx.app_addr.port()));
        e.upstream_host = Some(ctx.app_addr.to_string());
        e
    });
    // Records the request when the response body ends; the response carries this workload's
    // metadata back to the calling sidecar.
    let finish = |flags: &'static str, mut resp: Response<Body>| {
        ctx.workload.write_peer_headers(resp.headers_mut());
        let labels = request_labels(
            Reporter::Destination,
            &Party {
                workload: &source,
                principal: peer,
            },
            &Party {
                workload: &ctx.workload,
                principal: &own,
            },
            &service_labels,
            Outcome {
                response_code: resp.status().as_u16(),
                response_flags: flags,
                mtls: true,
            },
        );
        let log = entry.map(|mut e| {
            e.response_code = resp.status().as_u16();
            e.response_flags = flags;
            e
        });
        record_on_end(ctx, resp, labels, started, request_bytes, log)
    };
    let mut report_bag = None;
    if let Some(mixer) = &ctx.mixer {
        let uid = ctx.node.uid();
        let attrs = RequestAttributes {
            reporter_kind: "inbound",
            source_principal: Some(peer),
            destination_principal: Some(&own),
            source_uid: None,
            destination_uid: Some(&uid),
            destination_service_host: &service,
            host: &authority,
            path: req.uri().path(),
            method: req.method().as_str(),
            headers: req.headers(),
            mtls: true,
        };
        let bag = attrs.to_bag();
        if let CheckOutcome::Deny { message, .. } = mixer.check(&bag).await {
            return finish(
                flags::UNAUTHORIZED_EXTERNAL,
                text(StatusCode::FORBIDDEN, message),
            );
        }
        report_bag = Some(bag);
    }
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    headers.remove(&XFCC);
    if let Ok(v) = HeaderValue::from_str(&format!("By={own};URI={peer}")) {
        headers.insert(XFCC.clone(), v);
    }
    if !headers.contains_key(HOST)
        && let Ok(v) = HeaderValue::from_str(&authority)
    {
        headers.insert(HOST, v);
    }
    let mut resp = match ctx.upstream.send(ctx.app_addr, None, req).await {
        Ok(r) => r,
        Err(e) => {
            ctx.metrics.upstream_error("app");
            let flag = match e {
                UpstreamError::Connect(_) => flags::UPSTREAM_CONNECT_FAILURE,
                UpstreamError::Request(_) => flags::UPSTREAM_CONNECTION_TERMINATION,
            };
            return finish(
                flag,
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("application at {}: {e}", ctx.app_addr),
                ),
            );
        }
    };
    strip_hop_by_hop(resp.headers_mut());
    let code = resp.status().as_u16();
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
    finish(flags::NONE, streamed(resp))
}
