//! The capture listeners' accept loops: original destination, then dispatch.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::authz::MtlsMode;
use crate::http::{HttpLimits, InboundServer, ProxyContext, serve_captured_http};
use crate::xds::Config;

use super::client_hello::peek_mesh_tls;
use super::dispatch::{OutboundPolicy, PortKind, port_kind};
use super::ingress::app_for;
use super::original_dst::SharedOriginalDst;
use super::sniff::{Sniffed, peek_sniff, sniff};

/// How long a captured connection to an undeclared port may stay silent before it is taken
/// for a server-first protocol (TCP), like MeshConfig `protocolDetectionTimeout`: short, since
/// a MySQL-style client waits for the server's greeting meanwhile.
pub const DEFAULT_SNIFF_WAIT: Duration = Duration::from_millis(100);

/// How long to wait for captured connections to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// How a capture listener works.
#[derive(Clone)]
pub struct CaptureConfig {
    /// Where each connection was going.
    pub original_dst: SharedOriginalDst,
    /// The outbound traffic policy when Pilot does not say (`--outbound-traffic-policy`).
    pub policy: OutboundPolicy,
    /// The bounded wait of protocol sniffing.
    pub sniff_wait: Duration,
    /// Limits of the HTTP connections served.
    pub limits: HttpLimits,
}

fn protocol_label(s: Sniffed) -> &'static str {
    match s {
        Sniffed::Tls => "tls",
        Sniffed::Http2 => "http2",
        Sniffed::Http1 => "http1",
        Sniffed::Tcp => "tcp",
    }
}

/// Serves the outbound capture listener until `shutdown`.
pub async fn serve_capture_outbound(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    capture: CaptureConfig,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let capture = Arc::new(capture);
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "outbound capture accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let ctx = ctx.clone();
        let capture = capture.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let Some(original) = original_of(&ctx, &capture, &stream, "outbound") else {
                return;
            };
            let metrics = &ctx.metrics;
            match port_kind(&ctx.config.load(), original.port()) {
                PortKind::Tcp(name) => {
                    metrics.captured("outbound", "declared", "tcp_proxy");
                    crate::tcp::proxy_stream(&ctx, &name, stream, Vec::new(), remote).await;
                }
                PortKind::Http(name) => {
                    let mut stream = stream;
                    let s = sniff(&mut stream, capture.limits.header_read_timeout).await;
                    if s.head.is_empty() {
                        if s.timed_out {
                            metrics.downstream_rejected("header_timeout");
                        }
                        return;
                    }
                    metrics.captured("outbound", "declared", "http");
                    serve_captured_http(
                        ctx.clone(),
                        stream,
                        s.protocol,
                        s.head,
                        remote,
                        original,
                        Some(name),
                        capture.policy,
                        capture.limits,
                        watcher,
                    )
                    .await;
                }
                PortKind::Unknown => {
                    let mut stream = stream;
                    let s = sniff(&mut stream, capture.sniff_wait).await;
                    let protocol = protocol_label(s.protocol);
                    if s.protocol.is_http() {
                        metrics.captured("outbound", protocol, "http");
                        serve_captured_http(
                            ctx.clone(),
                            stream,
                            s.protocol,
                            s.head,
                            remote,
                            original,
                            None,
                            capture.policy,
                            capture.limits,
                            watcher,
                        )
                        .await;
                        return;
                    }
                    match OutboundPolicy::of_config(&ctx.config.load(), capture.policy) {
                        OutboundPolicy::AllowAny => {
                            metrics.captured("outbound", protocol, "passthrough");
                            crate::tcp::passthrough(&ctx, stream, s.head, remote, original).await;
                        }
                        OutboundPolicy::RegistryOnly => {
                            metrics.captured("outbound", protocol, "blackhole");
                            tracing::debug!(%remote, %original, "REGISTRY_ONLY: unknown destination refused");
                        }
                    }
                }
            }
        });
    }
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}

/// Serves the inbound capture listener until `shutdown`: like the inbound listener, with the
/// peer authentication mode of the original destination's port, and requests and streams
/// sent to the application on that port (at `--app-addr`'s IP), or, for a port of a Sidecar's
/// `ingress[]`, to its `defaultEndpoint` (see [`super::ingress`]).
///
/// Unless the port is STRICT, the first bytes are peeked at first (as Envoy's inspectors do
/// on `virtualInbound`): HTTP (and, PERMISSIVE, a TLS handshake offering a mesh ALPN: mTLS from
/// a sidecar, see [`super::client_hello`]) goes to the inbound server; anything else (the
/// application's own TLS included), or a client silent for the sniff wait (a server-first
/// protocol), is spliced to the application as plaintext TCP.
pub async fn serve_capture_inbound(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    capture: CaptureConfig,
    shutdown: impl Future<Output = ()>,
) {
    serve_inbound_loop(listener, ctx, capture, shutdown, false).await
}

/// Serves an inbound listener the proxy bound itself (a Sidecar ingress `bind` /
/// `captureMode: NONE` address) until `shutdown`: as the capture listener, with each
/// connection's own local address as its destination.
pub async fn serve_inbound_on(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    capture: CaptureConfig,
    shutdown: impl Future<Output = ()>,
) {
    serve_inbound_loop(listener, ctx, capture, shutdown, true).await
}

async fn serve_inbound_loop(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    capture: CaptureConfig,
    shutdown: impl Future<Output = ()>,
    explicit: bool,
) {
    let inbound = InboundServer::new(capture.limits);
    // Connections whose sniffing chose the inbound server come back here to be served by it.
    let (to_server, mut for_server) = mpsc::unbounded_channel::<InboundHandoff>();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "inbound capture accept failed");
                    continue;
                }
            },
            Some(c) = for_server.recv() => {
                tokio::spawn(inbound.connection(ctx.clone(), c.stream, c.remote, c.original, c.app));
                continue;
            }
            _ = &mut shutdown => break,
        };
        let original = if explicit {
            match stream.local_addr() {
                Ok(a) => a,
                Err(_) => continue,
            }
        } else {
            match original_of(&ctx, &capture, &stream, "inbound") {
                Some(a) => a,
                None => continue,
            }
        };
        let config = ctx.config.load();
        let app = app_for(
            &config,
            original.port(),
            original,
            SocketAddr::new(ctx.app_addr.ip(), original.port()),
        );
        let mode = inbound_mode(&config, original.port());
        drop(config);
        if mode == MtlsMode::Strict {
            ctx.metrics.captured("inbound", "declared", "inbound");
            tokio::spawn(inbound.connection(ctx.clone(), stream, remote, original, app));
            continue;
        }
        let ctx = ctx.clone();
        let to_server = to_server.clone();
        let wait = capture.sniff_wait;
        tokio::spawn(async move {
            let sniffed = peek_sniff(&stream, wait).await;
            // PERMISSIVE: TLS without a mesh ALPN is the application's own TLS.
            let app_tls = sniffed == Sniffed::Tls
                && mode == MtlsMode::Permissive
                && !peek_mesh_tls(&stream, wait).await;
            let target = if app_tls { "app_tls" } else { "inbound" };
            ctx.metrics
                .captured("inbound", protocol_label(sniffed), target);
            if !app_tls && inbound_is_served(mode, sniffed) {
                let _ = to_server.send(InboundHandoff {
                    stream,
                    remote,
                    original,
                    app,
                });
            } else {
                crate::tcp::serve_inbound_plaintext(&ctx, remote, original, app, stream).await;
            }
        });
    }
    inbound.drain().await;
}

/// A sniffed inbound connection on its way to the inbound server.
struct InboundHandoff {
    stream: TcpStream,
    remote: SocketAddr,
    original: SocketAddr,
    app: SocketAddr,
}

/// The peer authentication mode of inbound `port` (STRICT when Pilot sent no inbound policy,
/// as the inbound listener does).
fn inbound_mode(config: &Config, port: u16) -> MtlsMode {
    config
        .inbound_policy()
        .map_or(MtlsMode::Strict, |p| p.modes.for_port(port))
}

/// Whether a captured inbound connection whose first bytes say `sniffed` goes to the inbound
/// server (HTTP, or mTLS when the port accepts it), rather than to the application as TCP.
pub(super) fn inbound_is_served(mode: MtlsMode, sniffed: Sniffed) -> bool {
    match sniffed {
        Sniffed::Http1 | Sniffed::Http2 => true,
        Sniffed::Tls => mode != MtlsMode::Disable,
        Sniffed::Tcp => mode == MtlsMode::Strict,
    }
}

/// The original destination of a captured connection; `None` (counted) when there is none or
/// it is the capture listener itself (a connection made to it directly would loop).
fn original_of(
    ctx: &ProxyContext,
    capture: &CaptureConfig,
    stream: &TcpStream,
    direction: &'static str,
) -> Option<SocketAddr> {
    let original = match capture.original_dst.original_dst(stream) {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(direction, error = %e, "captured connection without an original destination; closing");
            ctx.metrics.captured(direction, "-", "no_original_dst");
            return None;
        }
    };
    if stream.local_addr().ok() == Some(original) {
        tracing::debug!(direction, %original, "connection made to the capture port itself; closing");
        ctx.metrics.captured(direction, "-", "loop");
        return None;
    }
    Some(original)
}
