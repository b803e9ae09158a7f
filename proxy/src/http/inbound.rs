//! Inbound requests (after mTLS termination, or in plaintext when the peer authentication mode
//! allows it): JWT authentication and RBAC from Pilot's `virtualInbound`, Check,
//! `x-forwarded-client-cert`, forward to the application, count, Report.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{HOST, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::authz::{Decision, JwtError, RBAC_DENIED, RequestView};
use crate::mixer::{RequestAttributes, add_response, default_policy};
use crate::trace::{HopKind, HopRequest, server_span_name};
use crate::xds::Config;

use super::access_log::{AccessLogEntry, non_empty};
use super::context::ProxyContext;
use super::headers::{XFCC, authority, ensure_request_id, strip_hop_by_hop};
use super::metered::record_on_end;
use super::response::{Body, content_length, streamed, text};
use super::telemetry::{
    Outcome, Party, Reporter, Service, Workload, flags, forwarded_destination_service,
    request_labels, strip_peer_headers,
};
use super::upstream::UpstreamError;

/// One inbound connection.
#[derive(Debug, Clone)]
pub struct InboundConn {
    /// The peer's SPIFFE id (empty for plaintext or a certificate without one).
    pub peer: Arc<str>,
    pub remote: SocketAddr,
    /// The local address it arrived on (its port selects the peer authentication mode);
    /// on the inbound capture listener, the original destination.
    pub local: SocketAddr,
    /// Where its requests go: `--app-addr`, or on the inbound capture listener the
    /// application's port the connection was going to.
    pub app: SocketAddr,
    /// Mutual TLS (else plaintext).
    pub mtls: bool,
}

/// Handles one request on `conn`.
///
/// Over mutual TLS the peer's `x-mesh-peer-*` metadata is trusted; it is read, then stripped
/// before the application sees the request. Plaintext requests have no peer principal and their
/// peer metadata is ignored. The response carries this workload's metadata back.
pub async fn handle(
    ctx: &ProxyContext,
    conn: &InboundConn,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let peer: &str = &conn.peer;
    let remote = conn.remote;
    let mtls = conn.mtls;
    let started = Instant::now();
    let own = ctx.own_principal();
    let authority = authority(&req).unwrap_or_default();
    let service = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(h, _)| h)
        .to_string();
    // Trusted only over mutual TLS with sidecar certificates.
    let source = if mtls {
        Workload::from_peer_headers(req.headers(), peer)
    } else {
        Workload::from_peer_headers(&HeaderMap::new(), "")
    };
    // The service the caller routed to, when a sidecar says so over mTLS; else the Host header.
    let service_labels = mtls
        .then(|| forwarded_destination_service(req.headers()))
        .flatten()
        .unwrap_or_else(|| Service::from_host(&authority, &ctx.workload.namespace));
    strip_peer_headers(req.headers_mut());
    // A Sidecar `ingress[]` port: its `defaultEndpoint` rather than the application's port.
    let (app, app_port) = target(&ctx.config.load(), conn, &authority, &service_labels.fqdn);
    let request_size = content_length(req.headers());
    // Early, so the access log line and the application see the same id.
    ensure_request_id(req.headers_mut());
    let request_bytes = request_size.max(0) as u64;
    let entry = ctx.access_log.as_ref().map(|_| {
        let mut e = AccessLogEntry::start(&req, Some(remote), Reporter::Destination, request_bytes);
        e.downstream_peer_principal = non_empty(peer);
        // Istio's inbound cluster for the application's port.
        e.upstream_cluster = Some(format!("inbound|{app_port}||"));
        e.upstream_host = Some(app.to_string());
        e
    });
    // This hop's SERVER span, a child of the caller's CLIENT span.
    let span = ctx.tracer.as_ref().map(|t| {
        let port = service_port(&authority, &service_labels.fqdn)
            .or_else(|| endpoint_port(&ctx.config.load(), &service_labels.fqdn, conn.local))
            .unwrap_or(app_port);
        t.start(HopRequest {
            kind: HopKind::Server,
            name: server_span_name(&service_labels.fqdn, port),
            method: req.method(),
            authority: &authority,
            path: req.uri().path_and_query().map_or("/", |pq| pq.as_str()),
            headers: req.headers(),
            peer: Some(remote),
            upstream_cluster: format!("inbound|{port}||").into(),
            started,
        })
    });
    let propagation = span.as_ref().map(|s| s.propagation().clone());
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
                mtls,
            },
        );
        let log = entry.map(|mut e| {
            e.response_code = resp.status().as_u16();
            e.response_flags = flags;
            e
        });
        let resp = record_on_end(ctx, resp, labels, started, request_bytes, log);
        match span {
            Some(span) => span.finish(resp, flags, request_bytes),
            None => resp,
        }
    };
    // JWT authentication then RBAC, from the config in force now.
    if let Some(policy) = ctx.config.load().inbound_policy().cloned() {
        let uri = req.uri().clone();
        let auth = match policy.authenticate(req.headers_mut(), &uri).await {
            Ok(a) => a,
            Err(e) => {
                let reason = match &e {
                    JwtError::Invalid(r) => r.as_str(),
                    JwtError::Missing => "missing",
                };
                tracing::info!(%remote, path = uri.path(), reason, "request refused by jwt_authn");
                return finish(flags::NONE, text(StatusCode::UNAUTHORIZED, e.to_string()));
            }
        };
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
        let view = RequestView {
            peer: (mtls && !peer.is_empty()).then_some(peer),
            source: remote,
            destination: conn.local,
            method: req.method().as_str(),
            host: &authority,
            path: uri.path(),
            path_and_query,
            headers: req.headers(),
            server_name: None,
            auth: Some(&auth),
        };
        if let Decision::Deny(reason) = policy.authorize(&view) {
            tracing::info!(%remote, peer, path = uri.path(), %reason, "request refused by RBAC");
            return finish(flags::NONE, text(StatusCode::FORBIDDEN, RBAC_DENIED));
        }
    }
    let mut report_bag = None;
    if let Some(mixer) = &ctx.mixer {
        let uid = ctx.node.uid();
        let attrs = RequestAttributes {
            reporter_kind: "inbound",
            source_principal: (!peer.is_empty()).then_some(peer),
            destination_principal: Some(&own),
            source_uid: None,
            destination_uid: Some(&uid),
            destination_service_host: &service,
            host: &authority,
            path: req.uri().path(),
            method: req.method().as_str(),
            headers: req.headers(),
            mtls,
        };
        let mut bag = attrs.to_bag();
        // Pilot's `mixer` filter on virtualInbound: the destination service's quotas and the
        // network fail policy.
        let config = ctx.config.load();
        let policy = default_policy(
            config.mixer_filter(crate::authz::INBOUND_LISTENER),
            &service_labels.fqdn,
            &mut bag,
        );
        if !policy.skip_check
            && let Some((status, body)) = mixer.check_request(&bag, &policy).await.rejection()
        {
            return finish(flags::UNAUTHORIZED_EXTERNAL, text(status, body));
        }
        report_bag = (!policy.skip_report).then_some(bag);
    }
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    headers.remove(&XFCC);
    if mtls && let Ok(v) = HeaderValue::from_str(&format!("By={own};URI={peer}")) {
        headers.insert(XFCC.clone(), v);
    }
    if !headers.contains_key(HOST)
        && let Ok(v) = HeaderValue::from_str(&authority)
    {
        headers.insert(HOST, v);
    }
    // The application's calls continue the trace from this hop's span (when it forwards them).
    if let Some(p) = &propagation {
        p.inject(headers);
    }
    let mut resp = match ctx.upstream.send(app, None, req).await {
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
                    format!("application at {app}: {e}"),
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

/// Where a request on `conn` goes, and the port of its `inbound|PORT||` cluster: the endpoint
/// of the Sidecar ingress entry for the port the connection arrived on; on the local-mode
/// inbound listener (whose own port is neither the application's nor a service port: `local`
/// and `app` ports differ), the entry for the service port the caller addressed (`Host`, else
/// the service whose endpoint is this listener); else the application (`conn.app`).
fn target(config: &Config, conn: &InboundConn, authority: &str, fqdn: &str) -> (SocketAddr, u16) {
    let ingress = |port: u16| {
        crate::capture::ingress_upstream(config, port, conn.local.ip()).map(|r| match r {
            Ok(addr) => (addr, port),
            Err(e) => {
                tracing::warn!(port, error = %e, "sidecar ingress port: forwarding to the application instead");
                (conn.app, conn.app.port())
            }
        })
    };
    let fallback = (conn.app, conn.app.port());
    if let Some(t) = ingress(conn.local.port()) {
        return t;
    }
    let has_ingress = config
        .inbound_policy()
        .is_some_and(|p| !p.modes.ingress.is_empty());
    if !has_ingress || conn.local.port() == conn.app.port() {
        return fallback;
    }
    service_port(authority, fqdn)
        .or_else(|| endpoint_port(config, fqdn, conn.local))
        .and_then(ingress)
        .unwrap_or(fallback)
}

/// The service port in `authority` when it names the service `fqdn` (`reviews:9080`,
/// `reviews.default.svc.cluster.local:9080`); a gateway passes the client's Host on, whose port
/// is not the service's.
fn service_port(authority: &str, fqdn: &str) -> Option<u16> {
    let (host, port) = authority.rsplit_once(':')?;
    let names_it = fqdn == host
        || fqdn
            .strip_prefix(host)
            .is_some_and(|rest| rest.starts_with('.'));
    if names_it { port.parse().ok() } else { None }
}

/// The port of service `fqdn` whose endpoints include `inbound` (this sidecar's inbound
/// address): the cluster `outbound|P||fqdn` that routes to this listener.
fn endpoint_port(config: &Config, fqdn: &str, inbound: SocketAddr) -> Option<u16> {
    config.clusters.iter().find_map(|(name, cluster)| {
        let mut parts = name.split('|');
        let (Some("outbound"), Some(port), Some(""), Some(f)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        if f != fqdn {
            return None;
        }
        config
            .endpoints_of(cluster)
            .filter(|e| e.addrs.contains(&inbound))?;
        port.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(local: &str, app: &str) -> InboundConn {
        InboundConn {
            peer: "".into(),
            remote: "127.0.0.1:50000".parse().unwrap(),
            local: local.parse().unwrap(),
            app: app.parse().unwrap(),
            mtls: false,
        }
    }

    /// Sidecar ingress: by the port the connection arrived on (capture, explicit listeners),
    /// or on the local-mode inbound listener by the service port the caller addressed.
    #[test]
    fn requests_go_to_the_ingress_endpoint_of_their_port() {
        let fqdn = "details.default.svc.cluster.local";
        let config = crate::capture::ingress_tests::config(
            "127.0.0.1:18080".parse().unwrap(),
            "127.0.0.1:3307".parse().unwrap(),
            &[],
        );
        let ingress: SocketAddr = "127.0.0.1:18080".parse().unwrap();
        // Captured for port 9080 (app on the original port): the ingress endpoint.
        let c = conn("10.0.0.5:9080", "127.0.0.1:9080");
        assert_eq!(target(&config, &c, "details:9080", fqdn), (ingress, 9080));
        // Local mode: the inbound listener's own port, the service port in Host.
        let c = conn("127.0.0.1:15006", "127.0.0.1:9999");
        assert_eq!(target(&config, &c, "details:9080", fqdn), (ingress, 9080));
        assert_eq!(
            target(&config, &c, &format!("{fqdn}:9080"), fqdn),
            (ingress, 9080)
        );
        // Another service port, or a Host that is not the service: the application.
        let app: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        assert_eq!(target(&config, &c, "details:8080", fqdn), (app, 9999));
        assert_eq!(target(&config, &c, "127.0.0.1:9080", fqdn), (app, 9999));
        // Captured for a port without an entry: the application on that port, even when the
        // Host names an ingress port.
        let c = conn("10.0.0.5:8080", "127.0.0.1:8080");
        let own: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(target(&config, &c, "details:9080", fqdn), (own, 8080));
        // No Sidecar ingress: unchanged.
        let c = conn("127.0.0.1:15006", "127.0.0.1:9999");
        assert_eq!(
            target(&Config::default(), &c, "details:9080", fqdn),
            (app, 9999)
        );
    }

    #[test]
    fn service_port_only_when_the_authority_names_the_service() {
        let fqdn = "reviews.default.svc.cluster.local";
        assert_eq!(service_port("reviews:9080", fqdn), Some(9080));
        assert_eq!(service_port("reviews.default:9080", fqdn), Some(9080));
        assert_eq!(service_port(&format!("{fqdn}:9080"), fqdn), Some(9080));
        assert_eq!(service_port("127.0.0.1:18080", fqdn), None);
        assert_eq!(service_port("rev:9080", fqdn), None);
        assert_eq!(service_port("reviews", fqdn), None);
    }
}
