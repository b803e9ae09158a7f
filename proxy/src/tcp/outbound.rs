//! A `tcp_proxy` listener: each connection goes to a cluster of the filter (picked by weight),
//! an endpoint of it (the cluster's load balancing), over mTLS with ALPN `istio-tcp` when the
//! cluster has a transport socket, then bytes are copied both ways until either side closes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;
use rand::Rng;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::http::alpn::{self, HopProtocol};
use crate::http::{
    AccessLogEntry, Outcome, Party, ProxyContext, Reporter, Service, Workload, flags,
    request_labels, service_of_cluster,
};

use super::counted::Counted;
use super::metrics::TcpLabels;
use super::sni;

/// Any upstream byte stream.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Serves the `tcp_proxy` listener Pilot named `listener_name` until `shutdown`; connections
/// already proxied run to their end.
pub async fn serve_tcp(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    listener_name: String,
    shutdown: impl Future<Output = ()>,
) {
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
        tokio::spawn(async move { proxy_stream(&ctx, &name, stream, Vec::new(), remote).await });
    }
}

/// Connects to `endpoint`, over mTLS offering `istio-tcp` when `tls` is given; returns the
/// stream and the peer's SPIFFE id.
async fn connect(
    endpoint: SocketAddr,
    timeout: Duration,
    tls: Option<(Arc<rustls::ClientConfig>, &str)>,
) -> io::Result<(Box<dyn Io>, Option<String>)> {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(endpoint))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = tcp.set_nodelay(true);
    let Some((base, sni)) = tls else {
        return Ok((Box::new(tcp), None));
    };
    let cfg = alpn::client_config(&base, HopProtocol::Tcp);
    // The SNI names the service (`outbound_.P_.SUBSET_.FQDN`) for the destination's metrics;
    // identity is checked by SPIFFE SAN, not by this name.
    let name = ServerName::try_from(sni.to_string())
        .unwrap_or_else(|_| ServerName::IpAddress(endpoint.ip().into()));
    let tls = tokio::time::timeout(
        timeout,
        tokio_rustls::TlsConnector::from(cfg).connect(name, tcp),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "tls handshake timed out"))??;
    let peer = mesh_identity::peer_identity(tls.get_ref().1).map(|id| id.to_string());
    Ok((Box::new(tls), peer))
}

/// How long a client may take to send its ClientHello on a listener routed by SNI.
const SNI_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the start of `down` until the ClientHello's server name is known (or known to be
/// absent); the bytes read are left in `head` for the upstream.
async fn read_sni<S: AsyncRead + Unpin>(down: &mut S, head: &mut Vec<u8>) -> Option<String> {
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match sni::parse(head) {
                sni::Sni::Name(n) => return Some(n),
                sni::Sni::None => return None,
                sni::Sni::NeedMore => {}
            }
            if head.len() >= sni::MAX_HELLO {
                return None;
            }
            match down.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(SNI_TIMEOUT, read).await.ok().flatten()
}

/// Proxies one downstream connection by the `tcp_proxy` of `listener`; `head` holds bytes
/// already read from `down` (by protocol sniffing), sent upstream first.
pub(crate) async fn proxy_stream<S: Io>(
    ctx: &ProxyContext,
    listener: &str,
    mut down: S,
    mut head: Vec<u8>,
    remote: SocketAddr,
) {
    let config = ctx.config.load();
    let Some(tcp) = config.listeners.get(listener).and_then(|l| l.tcp.clone()) else {
        tracing::debug!(listener, %remote, "no tcp_proxy configuration for listener; closing");
        return;
    };
    // TLS passthrough: the chain is chosen by the ClientHello's server name; the bytes read
    // to find it go upstream first.
    let sni = if tcp.routes_by_sni() {
        read_sni(&mut down, &mut head).await
    } else {
        None
    };
    let Some(chain) = tcp.chain(sni.as_deref()) else {
        tracing::debug!(listener, %remote, ?sni, "no filter chain matches the server name; closing");
        return;
    };
    proxy_chain(ctx, listener, down, head, remote, chain).await;
}

/// Proxies one downstream connection to a cluster of `chain` (of listener `listener`): a
/// gateway's TLS-terminating chain hands the decrypted stream here (`crate::gateway`).
pub(crate) async fn proxy_chain<S: Io>(
    ctx: &ProxyContext,
    listener: &str,
    down: S,
    head: Vec<u8>,
    remote: SocketAddr,
    chain: &super::TcpChain,
) {
    let started = (SystemTime::now(), Instant::now());
    let config = ctx.config.load();
    let roll: u32 = rand::rng().random();
    let Some(cluster_name) = chain.pick(roll) else {
        return;
    };
    let found_cluster = config.clusters.get(cluster_name);
    let service = found_cluster
        .and_then(|c| c.service.clone())
        .unwrap_or_else(|| Service::from_fqdn(service_of_cluster(cluster_name)));
    let own = ctx.own_principal();
    let unknown = Workload::unknown();
    let labels = |response_flags: &'static str, mtls: bool, peer: &str| -> TcpLabels {
        request_labels(
            Reporter::Source,
            &Party {
                workload: &ctx.workload,
                principal: if mtls { &own } else { "" },
            },
            &Party {
                workload: &unknown,
                principal: peer,
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
    // The connection's access log line (when the listener has a logger), written at its end.
    let log = |flags: &'static str,
               upstream: Option<SocketAddr>,
               peer: Option<&str>,
               bytes: (u64, u64)| {
        if let Some(access_log) = &ctx.access_log {
            let mut e = AccessLogEntry::tcp(started.0, remote, Reporter::Source);
            e.response_flags = flags;
            e.bytes_received = bytes.0;
            e.bytes_sent = bytes.1;
            e.duration = started.1.elapsed().as_millis() as u64;
            e.upstream_host = upstream.map(|a| a.to_string());
            e.upstream_cluster = Some(cluster_name.to_string());
            e.upstream_peer_principal = peer.map(str::to_string);
            access_log.log_tcp(listener, e);
        }
    };
    let refuse = |flag: &'static str, why: &str| {
        tracing::debug!(listener, cluster = cluster_name, %remote, why, "tcp connection refused");
        let l = labels(flag, false, "");
        metrics.opened(&l);
        metrics.closed(&l);
        log(flag, None, None, (0, 0));
    };
    let Some(cluster) = found_cluster else {
        ctx.metrics.upstream_error("unknown_cluster");
        return refuse(flags::NO_HEALTHY_UPSTREAM, "unknown cluster");
    };
    let found = config.endpoints_of(cluster);
    let endpoints: &[SocketAddr] = found.map_or(&[], |e| e.addrs.as_slice());
    let state = ctx.upstream.clusters.get(cluster);
    if let Some(e) = found {
        // Endpoint weights for the load balancer.
        state.observe(e);
    }
    let Some(endpoint) = state.pick(endpoints, cluster.lb, &[], rand::rng().random()) else {
        ctx.metrics.upstream_error("no_endpoint");
        return refuse(flags::NO_HEALTHY_UPSTREAM, "no endpoint");
    };
    let tls = match &cluster.tls {
        None => None,
        Some(t) => match crate::tls::upstream_client_config(t, &ctx.identity) {
            Some(cfg) => Some((cfg, t.sni.as_str())),
            None => {
                ctx.metrics.upstream_error("no_identity");
                return refuse(
                    flags::UPSTREAM_CONNECT_FAILURE,
                    "no workload certificate yet",
                );
            }
        },
    };
    let mtls = tls.is_some();
    let (mut up, peer) = match connect(endpoint, cluster.connect_timeout, tls).await {
        Ok(c) => c,
        Err(e) => {
            ctx.metrics.upstream_error("connect");
            tracing::debug!(cluster = cluster_name, %endpoint, error = %e, "tcp upstream connect failed");
            tracing::debug!(listener, cluster = cluster_name, %remote, "tcp connection refused");
            let l = labels(flags::UPSTREAM_CONNECT_FAILURE, false, "");
            metrics.opened(&l);
            metrics.closed(&l);
            log(
                flags::UPSTREAM_CONNECT_FAILURE,
                Some(endpoint),
                None,
                (0, 0),
            );
            return;
        }
    };
    let l = labels(flags::NONE, mtls, peer.as_deref().unwrap_or(""));
    metrics.opened(&l);
    let (sent, received) = metrics.bytes(&l);
    if !head.is_empty() {
        received.inc_by(head.len() as u64);
        if let Err(e) = up.write_all(&head).await {
            tracing::debug!(cluster = cluster_name, %endpoint, error = %e, "tcp upstream closed early");
            metrics.closed(&l);
            log(
                flags::NONE,
                Some(endpoint),
                peer.as_deref(),
                (head.len() as u64, 0),
            );
            return;
        }
    }
    // This connection's own byte counts (for its access log line), beside the metric series.
    let (conn_received, conn_sent) = (Counter::default(), Counter::default());
    let mut down = Counted {
        inner: Counted {
            inner: down,
            received,
            sent,
        },
        received: conn_received.clone(),
        sent: conn_sent.clone(),
    };
    match tokio::io::copy_bidirectional(&mut down, &mut up).await {
        Ok((to_up, to_down)) => {
            tracing::debug!(cluster = cluster_name, %endpoint, to_up, to_down, "tcp connection closed");
        }
        Err(e) => {
            tracing::debug!(cluster = cluster_name, %endpoint, error = %e, "tcp connection ended with an error");
        }
    }
    metrics.closed(&l);
    let bytes = (conn_received.get() + head.len() as u64, conn_sent.get());
    log(flags::NONE, Some(endpoint), peer.as_deref(), bytes);
}
