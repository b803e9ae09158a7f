//! Accept loops: plaintext HTTP/1.1 for routed listeners, mTLS then HTTP/1.1 for inbound.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use super::context::ProxyContext;
use super::routed::{self, RoutedKind};

const DRAIN: Duration = Duration::from_secs(5);

/// Serves a routed listener (`virtualOutbound`, `0.0.0.0_<port>`) until `shutdown`.
pub async fn serve_routed(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    listener_name: String,
    kind: RoutedKind,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let name: Arc<str> = listener_name.into();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
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
        let svc = service_fn(move |req| {
            let ctx = ctx.clone();
            let name = name.clone();
            async move { Ok::<_, Infallible>(routed::handle(&ctx, &name, kind, remote, req).await) }
        });
        let conn = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "downstream connection ended with an error");
            }
        });
    }
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}

/// Serves the inbound listener: mTLS (client certificate required) with the workload identity,
/// then HTTP/1.1 to the application. Connections before the identity is held are closed.
pub async fn serve_inbound(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
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
        let Some(identity) = ctx.identity.get() else {
            tracing::warn!(%remote, "inbound connection before the workload certificate is held; closing");
            continue;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config());
        let ctx = ctx.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                .await
            {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    ctx.metrics.tls_handshake_failures.inc();
                    tracing::info!(%remote, error = %e, "inbound mTLS handshake failed");
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
            let svc = service_fn(move |req| {
                let ctx = ctx.clone();
                let peer = peer.clone();
                async move {
                    Ok::<_, Infallible>(super::inbound::handle(&ctx, &peer, remote, req).await)
                }
            });
            let conn = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), svc);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "inbound connection ended with an error");
            }
        });
    }
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}
