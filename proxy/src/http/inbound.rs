//! Inbound requests (after mTLS termination): Check, `x-forwarded-client-cert`, forward to the
//! application, count, Report.

use std::time::Instant;

use http::header::{HOST, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::admin::RequestLabels;
use crate::mixer::{CheckOutcome, RequestAttributes, add_response};

use super::context::ProxyContext;
use super::headers::{XFCC, authority, ensure_request_id, strip_hop_by_hop};
use super::response::{Body, content_length, streamed, text};

/// Handles one request from the authenticated peer `peer` (its SPIFFE id, empty if none).
pub async fn handle(ctx: &ProxyContext, peer: &str, mut req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let own = ctx.own_principal();
    let authority = authority(&req).unwrap_or_default();
    let service = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(h, _)| h)
        .to_string();
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
            count(ctx, peer, &own, &service, 403);
            return text(StatusCode::FORBIDDEN, message);
        }
        report_bag = Some(bag);
    }
    let request_size = content_length(req.headers());
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    ensure_request_id(headers);
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
            count(ctx, peer, &own, &service, 503);
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("application at {}: {e}", ctx.app_addr),
            );
        }
    };
    strip_hop_by_hop(resp.headers_mut());
    let code = resp.status().as_u16();
    count(ctx, peer, &own, &service, code);
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

fn count(ctx: &ProxyContext, source: &str, destination: &str, service: &str, code: u16) {
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
            reporter: "destination",
            source_principal: or_unknown(source),
            destination_principal: or_unknown(destination),
            destination_service: or_unknown(service),
            destination_workload: ctx.workload.clone(),
            response_code: code,
            connection_security_policy: "mutual_tls",
        })
        .inc();
}
