//! Accept loops: plaintext HTTP/1.1 or h2c (prior knowledge, told apart by the connection
//! preface) for routed listeners; for inbound, mTLS and/or plaintext (by the peer
//! authentication mode), then by the negotiated ALPN (see [`super::alpn`]) HTTP/1.1, HTTP/2,
//! or a raw TCP stream spliced to the application.
//!
//! Every HTTP connection allows `Connection: upgrade` (WebSocket and the like): when the
//! upstream answers 101, the downstream and upstream connections are spliced both ways.
//!
//! Bad input ([`HttpLimits`]): a request head over `max_header_bytes` → 431; conflicting or
//! invalid `Content-Length` → 400 (hyper's parser); a client that does not finish its request
//! head within `header_read_timeout` (slowloris) is disconnected. Each is counted in
//! `proxy_downstream_rejected_total{reason}`. An upstream reset after the response headers
//! aborts the downstream response (counted as `reset_after_headers`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{CONNECTION, HOST, HeaderValue, UPGRADE};
use http::{HeaderMap, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};

use crate::admin::ProxyMetrics;
use crate::capture::{Prefixed, Sniffed, peek_mesh_tls};

use super::alpn::{HopProtocol, ServerAlpn};
use super::context::ProxyContext;
use super::inbound::InboundConn;
use super::limits::{
    HttpLimits, ResetCounted, builder_for, count_end, guarded, http_builder, open_http,
};
use super::response::{Body, text};
use super::routed::{self, RoutedKind};
use crate::authz::{MtlsMode, sniff_tls};

const DRAIN: Duration = Duration::from_secs(5);
/// How long a client may take to start (PERMISSIVE sniffing) or finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a request asks to switch protocols (`Connection: upgrade` and `Upgrade`).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// HTTP/2 requests carry the authority in `:authority`; a mesh hop sends the logical one in
/// `Host` (the URI names the endpoint dialled). The request is made origin-form with `Host`
/// set, so the authority is read the same way for both versions.
fn normalize_h2_authority<B>(req: &mut Request<B>) {
    if req.version() != Version::HTTP_2 {
        return;
    }
    if !req.headers().contains_key(HOST)
        && let Some(v) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(HOST, v);
    }
    if let Some(pq) = req.uri().path_and_query().cloned() {
        *req.uri_mut() = Uri::from(pq);
    }
}

/// Runs `handle` for one request; when it asked to upgrade and the answer is 101, splices the
/// downstream connection with the upstream one once both have switched. The answer's body goes
/// to hyper as it is (not boxed once more), counting an upstream reset mid-body.
pub(super) async fn serve_request<F, Fut>(
    metrics: &ProxyMetrics,
    mut req: Request<Incoming>,
    handle: F,
) -> Response<ResetCounted>
where
    F: FnOnce(Request<Incoming>) -> Fut,
    Fut: Future<Output = Response<Body>>,
{
    normalize_h2_authority(&mut req);
    let downstream = wants_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let mut resp = handle(req).await;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let errors = Some(metrics.upstream_errors.clone());
        return resp.map(|inner| ResetCounted { inner, errors });
    }
    let uncounted = |inner| ResetCounted {
        inner,
        errors: None,
    };
    let Some(downstream) = downstream else {
        // A 101 nobody asked for cannot be honoured on this connection.
        return text(
            StatusCode::BAD_GATEWAY,
            "upstream switched protocols without an upgrade request",
        )
        .map(uncounted);
    };
    let upstream = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let (down, up) = match tokio::try_join!(downstream, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let mut down = TokioIo::new(down);
        let mut up = TokioIo::new(up);
        match tokio::io::copy_bidirectional(&mut down, &mut up).await {
            Ok((to_up, to_down)) => {
                tracing::debug!(to_up, to_down, "upgraded connection closed");
            }
            Err(e) => tracing::debug!(error = %e, "upgraded connection ended with an error"),
        }
    });
    resp.map(uncounted)
}

/// Serves a routed listener (`virtualOutbound`, `0.0.0.0_<port>`) until `shutdown`, with the
/// default [`HttpLimits`].
pub async fn serve_routed(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    listener_name: String,
    kind: RoutedKind,
    shutdown: impl Future<Output = ()>,
) {
    serve_routed_with(
        listener,
        ctx,
        listener_name,
        kind,
        HttpLimits::default(),
        shutdown,
    )
    .await
}

/// Serves a routed listener (`virtualOutbound`, `0.0.0.0_<port>`) until `shutdown`.
pub async fn serve_routed_with(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    listener_name: String,
    kind: RoutedKind,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let builder = http_builder(&limits);
    let name: Arc<str> = listener_name.into();
    tokio::pin!(shutdown);
    loop {
        let (mut stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(listener = %name, error = %e, "accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let name = name.clone();
        let watcher = graceful.watcher();
        let builder = builder.clone();
        tokio::spawn(async move {
            // A gateway listener with HTTPS servers terminates TLS first (`gateway_tls`).
            if kind == RoutedKind::Gateway
                && let Some(tls) = ctx.config.load().gateway_tls(&name).cloned()
            {
                // PASSTHROUGH chains on the same port: the ClientHello's name picks.
                let passthrough = ctx
                    .config
                    .load()
                    .listeners
                    .get(&*name)
                    .and_then(|l| l.tcp.clone());
                if let Some(tcp) = passthrough
                    && crate::gateway::mixed::passthrough_wins(
                        tls.spec(),
                        &tcp,
                        crate::gateway::mixed::peek_sni(&stream).await.as_deref(),
                    )
                {
                    return crate::tcp::proxy_stream(&ctx, &name, stream, Vec::new(), remote).await;
                }
                return super::gateway_tls::serve_tls_connection(
                    ctx, stream, remote, name, kind, tls, builder, watcher, limits,
                )
                .await;
            }
            // TLS passthrough on a gateway port: Pilot sent a `tcp_proxy` listener (by SNI).
            if kind == RoutedKind::Gateway
                && let Some(l) = ctx.config.load().listeners.get(&*name)
                && l.tcp.is_some()
            {
                return crate::tcp::proxy_stream(&ctx, &name, stream, Vec::new(), remote).await;
            }
            let Some((sniffed, head)) = open_http(&mut stream, &ctx.metrics, &limits).await else {
                return;
            };
            let metrics = ctx.metrics.clone();
            let svc = service_fn(move |req| {
                let ctx = ctx.clone();
                let name = name.clone();
                async move {
                    let resp = serve_request(&ctx.metrics, req, |req| async {
                        routed::handle(&ctx, &name, kind, remote, req).await
                    })
                    .await;
                    Ok::<_, Infallible>(resp)
                }
            });
            let builder = builder_for(&builder, sniffed);
            let (io, refused) = guarded(
                Prefixed::new(head, stream),
                sniffed != Sniffed::Http2,
                &limits,
            );
            let conn = builder.serve_connection_with_upgrades(io, svc);
            let result = watcher.watch(conn).await;
            count_end(&metrics, &refused, &result);
            if let Err(e) = result {
                tracing::debug!(error = %e, "downstream connection ended with an error");
            }
        });
    }
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}

/// Serves the inbound listener with the peer authentication mode Pilot gives for the local
/// port (`virtualInbound`; mTLS only until it arrives): STRICT → mutual TLS (client certificate
/// required) with the workload identity, PERMISSIVE → mutual TLS or plaintext told apart by the
/// first byte, DISABLE → plaintext. Then, by the negotiated ALPN, HTTP (HTTP/1.1 or HTTP/2,
/// forwarded to the application in the same version) or, for `istio-tcp`, the raw stream
/// spliced to the application. TLS connections before the identity is held are closed.
pub async fn serve_inbound(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    shutdown: impl Future<Output = ()>,
) {
    serve_inbound_with(listener, ctx, HttpLimits::default(), shutdown).await
}

/// [`serve_inbound`] within `limits`.
pub async fn serve_inbound_with(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let inbound = InboundServer::new(limits);
    let bound = listener.local_addr().ok();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "inbound accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(local) = stream.local_addr().ok().or(bound) else {
            continue;
        };
        let app = ctx.app_addr;
        tokio::spawn(inbound.connection(ctx.clone(), stream, remote, local, app));
    }
    inbound.drain().await;
}

/// What every inbound connection shares: the HTTP builder, the ALPN configurations and the
/// connections to drain at shutdown.
pub(crate) struct InboundServer {
    graceful: GracefulShutdown,
    builder: auto::Builder<TokioExecutor>,
    alpn: Arc<ServerAlpn>,
    limits: HttpLimits,
}

impl InboundServer {
    pub(crate) fn new(limits: HttpLimits) -> Self {
        InboundServer {
            graceful: GracefulShutdown::new(),
            builder: http_builder(&limits),
            alpn: Arc::new(ServerAlpn::default()),
            limits,
        }
    }

    /// Waits (at most the drain time) for the connections being served to finish.
    pub(crate) async fn drain(self) {
        let _ = tokio::time::timeout(DRAIN, self.graceful.shutdown()).await;
    }

    /// Serves one inbound connection that arrived for `local` (its port selects the peer
    /// authentication mode); requests and TCP streams go to `app`.
    pub(crate) fn connection(
        &self,
        ctx: Arc<ProxyContext>,
        stream: TcpStream,
        remote: SocketAddr,
        local: SocketAddr,
        app: SocketAddr,
    ) -> impl Future<Output = ()> + Send + 'static {
        let watcher = self.graceful.watcher();
        let builder = self.builder.clone();
        let alpn = self.alpn.clone();
        let limits = self.limits;
        inbound_connection(
            ctx, stream, remote, local, app, builder, alpn, watcher, limits,
        )
    }
}

#[allow(clippy::too_many_arguments)]
async fn inbound_connection(
    ctx: Arc<ProxyContext>,
    mut stream: TcpStream,
    remote: SocketAddr,
    local: SocketAddr,
    app: SocketAddr,
    builder: auto::Builder<TokioExecutor>,
    alpn: Arc<ServerAlpn>,
    watcher: Watcher,
    limits: HttpLimits,
) {
    let mode = ctx
        .config
        .load()
        .inbound_policy()
        .map_or(MtlsMode::Strict, |p| p.modes.for_port(local.port()));
    let _ = stream.set_nodelay(true);
    let tls = match mode {
        MtlsMode::Strict => true,
        MtlsMode::Disable => false,
        MtlsMode::Permissive => match sniff_tls(&stream, HANDSHAKE_TIMEOUT).await {
            // TLS without a mesh ALPN is the application's own: spliced to it untouched.
            Some(true) if !peek_mesh_tls(&stream, HANDSHAKE_TIMEOUT).await => {
                tracing::debug!(%remote, "TLS without a mesh ALPN on a PERMISSIVE port: to the application as TCP");
                crate::tcp::serve_inbound_plaintext(&ctx, remote, local, app, stream).await;
                return;
            }
            Some(t) => t,
            None => return,
        },
    };
    let conn = |peer: Arc<str>, mtls| {
        Arc::new(InboundConn {
            peer,
            remote,
            local,
            app,
            mtls,
        })
    };
    let svc = |conn: Arc<InboundConn>| {
        let ctx = ctx.clone();
        service_fn(move |req| {
            let ctx = ctx.clone();
            let conn = conn.clone();
            async move {
                let resp = serve_request(&ctx.metrics, req, |req| async {
                    super::inbound::handle(&ctx, &conn, req).await
                })
                .await;
                Ok::<_, Infallible>(resp)
            }
        })
    };
    if !tls {
        let Some((sniffed, head)) = open_http(&mut stream, &ctx.metrics, &limits).await else {
            return;
        };
        let (io, refused) = guarded(
            Prefixed::new(head, stream),
            sniffed != Sniffed::Http2,
            &limits,
        );
        let builder = builder_for(&builder, sniffed);
        let c = builder.serve_connection_with_upgrades(io, svc(conn("".into(), false)));
        let result = watcher.watch(c).await;
        count_end(&ctx.metrics, &refused, &result);
        if let Err(e) = result {
            tracing::debug!(error = %e, "inbound plaintext connection ended with an error");
        }
        return;
    }
    let Some(identity) = ctx.identity.get() else {
        tracing::warn!(%remote, "inbound connection before the workload certificate is held; closing");
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(alpn.config(identity.server_config()));
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            ctx.metrics.tls_handshake_failures.inc();
            tracing::info!(%remote, ?mode, error = %e, "inbound mTLS handshake failed");
            return;
        }
        Err(_) => {
            ctx.metrics.tls_handshake_failures.inc();
            tracing::info!(%remote, "inbound mTLS handshake timed out");
            return;
        }
    };
    let peer: Arc<str> = mesh_identity::peer_identity(tls.get_ref().1)
        .map(|id| id.to_string())
        .unwrap_or_default()
        .into();
    let protocol = HopProtocol::of_alpn(tls.get_ref().1.alpn_protocol());
    if protocol == HopProtocol::Tcp {
        let sni = tls.get_ref().1.server_name().map(str::to_string);
        crate::tcp::serve_inbound(&ctx, &peer, remote, local, app, sni.as_deref(), tls).await;
        return;
    }
    let (io, refused) = guarded(tls, protocol == HopProtocol::Http1, &limits);
    let c = builder.serve_connection_with_upgrades(io, svc(conn(peer, true)));
    let result = watcher.watch(c).await;
    count_end(&ctx.metrics, &refused, &result);
    if let Err(e) = result {
        tracing::debug!(error = %e, "inbound connection ended with an error");
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
