//! The destination side of a TCP hop: an mTLS connection that negotiated `istio-tcp` (or a
//! plaintext one the inbound capture took for TCP) is authorized (RBAC with the connection's
//! facts only) and spliced to the application.

use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::authz::{Decision, RequestView};
use crate::http::{
    Outcome, Party, ProxyContext, Reporter, Service, Workload, flags, request_labels,
};

use super::counted::Counted;
use super::metrics::TcpLabels;

const APP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The service FQDN in an Istio SNI `outbound_.P_.SUBSET_.FQDN`.
pub fn service_of_sni(sni: &str) -> Option<&str> {
    let rest = sni.strip_prefix("outbound_.")?;
    let mut parts = rest.splitn(3, "_.");
    let _port = parts.next()?;
    let _subset = parts.next()?;
    parts.next().filter(|f| !f.is_empty())
}

/// Splices `stream` (mTLS from `peer`, arrived at `local`) with a new connection to the
/// application, counting Istio's TCP metrics as the destination reporter.
pub async fn serve_inbound<S: AsyncRead + AsyncWrite + Unpin + Send>(
    ctx: &ProxyContext,
    peer: &str,
    remote: SocketAddr,
    local: SocketAddr,
    app: SocketAddr,
    sni: Option<&str>,
    stream: S,
) {
    splice_inbound(ctx, peer, remote, local, app, sni, true, stream).await
}

/// Splices a plaintext `stream` (no peer identity; PERMISSIVE or DISABLE, e.g. a captured
/// connection that is not HTTP) with a new connection to the application, counting Istio's
/// TCP metrics as the destination reporter with `connection_security_policy="none"`.
pub async fn serve_inbound_plaintext<S: AsyncRead + AsyncWrite + Unpin + Send>(
    ctx: &ProxyContext,
    remote: SocketAddr,
    local: SocketAddr,
    app: SocketAddr,
    stream: S,
) {
    splice_inbound(ctx, "", remote, local, app, None, false, stream).await
}

#[allow(clippy::too_many_arguments)]
async fn splice_inbound<S: AsyncRead + AsyncWrite + Unpin + Send>(
    ctx: &ProxyContext,
    peer: &str,
    remote: SocketAddr,
    local: SocketAddr,
    app: SocketAddr,
    sni: Option<&str>,
    mtls: bool,
    stream: S,
) {
    let service = match sni.and_then(service_of_sni) {
        Some(fqdn) => Service::from_fqdn(fqdn),
        None => Service::from_fqdn(""),
    };
    let source = Workload::from_peer_headers(&HeaderMap::new(), peer);
    let own = ctx.own_principal();
    let labels = |response_flags: &'static str| -> TcpLabels {
        request_labels(
            Reporter::Destination,
            &Party {
                workload: &source,
                principal: peer,
            },
            &Party {
                workload: &ctx.workload,
                principal: &own,
            },
            &service,
            Outcome {
                response_code: 0,
                response_flags,
                mtls,
            },
        )
        .into()
    };
    let metrics = &ctx.metrics.tcp;
    if let Some(policy) = ctx.config.load().inbound_policy().cloned() {
        let empty = HeaderMap::new();
        let view = RequestView {
            peer: (!peer.is_empty()).then_some(peer),
            source: remote,
            destination: local,
            method: "",
            host: "",
            path: "",
            path_and_query: "",
            headers: &empty,
            server_name: sni,
            auth: None,
        };
        if let Decision::Deny(reason) = policy.authorize(&view) {
            tracing::info!(%remote, peer, %reason, "tcp connection refused by RBAC");
            let l = labels(flags::NONE);
            metrics.opened(&l);
            metrics.closed(&l);
            return;
        }
    }
    let mut up = match tokio::time::timeout(APP_CONNECT_TIMEOUT, TcpStream::connect(app)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            ctx.metrics.upstream_error("app");
            tracing::info!(%app, error = %e, "tcp: cannot reach the application");
            let l = labels(flags::UPSTREAM_CONNECT_FAILURE);
            metrics.opened(&l);
            metrics.closed(&l);
            return;
        }
        Err(_) => {
            ctx.metrics.upstream_error("app");
            let l = labels(flags::UPSTREAM_CONNECT_FAILURE);
            metrics.opened(&l);
            metrics.closed(&l);
            return;
        }
    };
    let _ = up.set_nodelay(true);
    let l = labels(flags::NONE);
    metrics.opened(&l);
    let (sent, received) = metrics.bytes(&l);
    let mut down = Counted {
        inner: stream,
        received,
        sent,
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
        tracing::debug!(%remote, error = %e, "inbound tcp connection ended with an error");
    }
    metrics.closed(&l);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_names_the_service() {
        assert_eq!(
            service_of_sni("outbound_.9000_._.echo.default.svc.cluster.local"),
            Some("echo.default.svc.cluster.local")
        );
        assert_eq!(
            service_of_sni("outbound_.27017_.v1_.mongo.db.svc.cluster.local"),
            Some("mongo.db.svc.cluster.local")
        );
        assert_eq!(service_of_sni("example.com"), None);
    }
}
