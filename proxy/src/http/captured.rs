//! Captured outbound HTTP connections (see [`crate::capture`]): routed by Host like the
//! outbound listener when a route matches, else by the outbound traffic policy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{HOST, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::server::graceful::Watcher;
use tokio::net::TcpStream;

use crate::capture::{OutboundPolicy, Prefixed, Sniffed, authority_with_port};

use super::context::ProxyContext;
use super::limits::{HttpLimits, builder_for, count_end, guarded, http_builder};
use super::response::{Body, text};
use super::routed::{self, RoutedKind};
use super::server::serve_request;

/// Serves a captured outbound HTTP connection whose original destination is `original`:
/// requests whose Host (with the dialled port added when it names none) has a route in
/// `route_listener`'s table (`virtualOutbound` when `None`) are routed like the outbound
/// listener's; others go by the outbound traffic policy: ALLOW_ANY forwards them to `original`
/// as they are (Istio's `PassthroughCluster`), REGISTRY_ONLY answers 502 (`BlackHoleCluster`).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve_captured_http(
    ctx: Arc<ProxyContext>,
    stream: TcpStream,
    sniffed: Sniffed,
    head: Vec<u8>,
    remote: SocketAddr,
    original: SocketAddr,
    route_listener: Option<String>,
    fallback_policy: OutboundPolicy,
    limits: HttpLimits,
    watcher: Watcher,
) {
    let listener: Arc<str> = route_listener
        .unwrap_or_else(|| crate::run::OUTBOUND_LISTENER.to_string())
        .into();
    let metrics = ctx.metrics.clone();
    let svc = service_fn(move |req| {
        let ctx = ctx.clone();
        let listener = listener.clone();
        async move {
            let resp = serve_request(&ctx.metrics, req, |req| {
                captured_request(&ctx, &listener, remote, original, fallback_policy, req)
            })
            .await;
            Ok::<_, Infallible>(resp)
        }
    });
    let (io, refused) = guarded(
        Prefixed::new(head, stream),
        sniffed != Sniffed::Http2,
        &limits,
    );
    let builder = builder_for(&http_builder(&limits), sniffed);
    let c = builder.serve_connection_with_upgrades(io, svc);
    let result = watcher.watch(c).await;
    count_end(&metrics, &refused, &result);
    if let Err(e) = result {
        tracing::debug!(error = %e, "captured connection ended with an error");
    }
}

async fn captured_request(
    ctx: &ProxyContext,
    listener: &str,
    remote: SocketAddr,
    original: SocketAddr,
    fallback_policy: OutboundPolicy,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let config = ctx.config.load();
    // Origin-form requests name the service without the port when it is the scheme's default;
    // the dialled port tells which of the service's ports was meant.
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| authority_with_port(h, original.port()));
    let authority = match (req.uri().authority(), &host) {
        (Some(a), _) => a.as_str().to_string(),
        (None, Some(h)) => h.clone(),
        (None, None) => String::new(),
    };
    let routed = config.route_table_for(listener).is_some_and(|t| {
        crate::routing::select(t, &authority, req.uri().path(), req.headers(), 0).is_some()
    });
    if routed {
        if req.uri().authority().is_none()
            && let Some(v) = host.and_then(|h| HeaderValue::from_str(&h).ok())
        {
            req.headers_mut().insert(HOST, v);
        }
        // An ORIGINAL_DST cluster (PassthroughCluster, ServiceEntry resolution NONE) connects
        // where the application dialled, not to the authority's address.
        req.extensions_mut()
            .insert(crate::cluster::OriginalDestination(original));
        return routed::handle(ctx, listener, RoutedKind::SidecarOutbound, remote, req).await;
    }
    match OutboundPolicy::of_config(&config, fallback_policy) {
        OutboundPolicy::RegistryOnly => {
            ctx.metrics.upstream_error("blackhole");
            text(
                StatusCode::BAD_GATEWAY,
                format!(
                    "{}: {authority} ({original}) is not in the service registry (REGISTRY_ONLY)",
                    crate::capture::BLACKHOLE_CLUSTER
                ),
            )
        }
        OutboundPolicy::AllowAny => {
            super::headers::strip_hop_by_hop(req.headers_mut());
            match ctx.upstream.send(original, None, req).await {
                Ok(resp) => super::response::streamed(resp),
                Err(e) => {
                    ctx.metrics.upstream_error("passthrough");
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("{} to {original}: {e}", crate::capture::PASSTHROUGH_CLUSTER),
                    )
                }
            }
        }
    }
}
