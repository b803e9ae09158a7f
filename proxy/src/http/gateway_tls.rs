//! A gateway listener connection that terminates TLS (`crate::gateway`): read the
//! ClientHello, pick the filter chain by its server name, finish the handshake with that
//! chain's configuration (client certificate required and verified for MUTUAL), then serve
//! HTTP/2 or HTTP/1.1 by the negotiated ALPN with the listener's routes, as the plaintext
//! gateway listener does. Requests carry `x-forwarded-proto: https`. A chain with a
//! `tcp_proxy` (`protocol: TLS` server) splices the decrypted bytes to its cluster instead.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;

use crate::gateway::GatewayTls;

use super::context::ProxyContext;
use super::limits::{HttpLimits, count_end, guarded};
use super::routed::{self, RoutedKind};
use super::server::serve_request;

/// How long a client may take to send its ClientHello and finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one TLS connection of gateway listener `name`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve_tls_connection(
    ctx: Arc<ProxyContext>,
    stream: TcpStream,
    remote: SocketAddr,
    name: Arc<str>,
    kind: RoutedKind,
    tls: Arc<GatewayTls>,
    builder: auto::Builder<TokioExecutor>,
    watcher: Watcher,
    limits: HttpLimits,
) {
    let failed = |why: &str, error: Option<String>| {
        ctx.metrics.tls_handshake_failures.inc();
        tracing::info!(listener = %name, %remote, error = error.as_deref().unwrap_or(""), "gateway TLS handshake refused: {why}");
    };
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return failed("bad ClientHello", Some(e.to_string())),
        Err(_) => return failed("no ClientHello in time", None),
    };
    let sni = start.client_hello().server_name().map(str::to_string);
    let Some(selected) = tls.select(sni.as_deref()) else {
        // No chain for this name: Envoy closes the connection the same way.
        return failed("no filter chain for the server name", sni);
    };
    let stream = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        start.into_stream(selected.config.clone()),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return failed("handshake failed", Some(e.to_string())),
        Err(_) => return failed("handshake timed out", None),
    };
    if !selected.client_allowed(stream.get_ref().1.peer_certificates()) {
        return failed(
            "client certificate names none of the subject alt names",
            None,
        );
    }
    // A `protocol: TLS` server's chain: the decrypted bytes go to its tcp_proxy cluster.
    if let Some(chain) = tls
        .spec()
        .chains
        .get(selected.chain)
        .and_then(|c| c.tcp.as_ref())
    {
        return crate::tcp::proxy_chain(&ctx, &name, stream, Vec::new(), remote, chain).await;
    }
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let metrics = ctx.metrics.clone();
    let svc = service_fn(move |mut req| {
        let ctx = ctx.clone();
        let name = name.clone();
        req.headers_mut()
            .insert("x-forwarded-proto", HeaderValue::from_static("https"));
        async move {
            let resp = serve_request(&ctx.metrics, req, |req| async {
                routed::handle(&ctx, &name, kind, remote, req).await
            })
            .await;
            Ok::<_, Infallible>(resp)
        }
    });
    let builder = if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    let (io, refused) = guarded(stream, !h2, &limits);
    let conn = builder.serve_connection_with_upgrades(io, svc);
    let result = watcher.watch(conn).await;
    count_end(&metrics, &refused, &result);
    if let Err(e) = result {
        tracing::debug!(error = %e, "gateway TLS connection ended with an error");
    }
}
