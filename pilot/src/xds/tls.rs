//! xDS over mutual TLS (Istio's port 15012): the same ADS service, each connection's client
//! certificate required and chained to the mesh roots, its SPIFFE id handed to the stream
//! (tonic puts [`XdsPeer`] in every request's extensions) so a proxy can only ask for config of
//! its own namespace.
//!
//! Pilot's own certificate comes from PEM files ([`XdsTls::from_pem`]) or from Citadel through
//! `mesh-identity` ([`XdsTls::from_citadel`], renewed in the background). Until Citadel has
//! issued one, connections are closed after accept.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use mesh_identity::{IdentityConfig, SpiffeId, WorkloadIdentity, peer_identity};
use mesh_proto::envoy::envoy::config::core::v3::Node;
use parking_lot::Mutex;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::transport::server::Connected;

use crate::inject::tls::{HANDSHAKE_TIMEOUT, PemError, read_certs, read_key};
use crate::translate::ProxyInfo;

/// The readiness condition of a Citadel-issued xDS certificate.
pub const XDS_TLS_READY: &str = "xds-tls-certificate";

/// Who is at the other end of an mTLS xDS connection (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdsPeer {
    pub remote: SocketAddr,
    /// The verified SPIFFE id of the client certificate.
    pub spiffe_id: SpiffeId,
}

/// Why the xDS TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum XdsTlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("xds roots: {0}")]
    Roots(String),
    #[error("xds certificate and key do not make a TLS config: {0}")]
    Config(String),
}

/// Pilot's server side of xDS mTLS. Cheap to clone.
#[derive(Clone)]
pub struct XdsTls {
    trust_domain: String,
    source: Arc<Source>,
}

enum Source {
    Fixed(Arc<ServerConfig>),
    Citadel {
        identity: watch::Receiver<Option<WorkloadIdentity>>,
        /// The identity's config last seen, and ours made from it (ALPN `h2`).
        cache: Mutex<Option<(Arc<ServerConfig>, Arc<ServerConfig>)>>,
    },
}

impl std::fmt::Debug for XdsTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsTls")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl XdsTls {
    /// Pilot's certificate chain and key, and the roots client certificates must chain to, from
    /// PEM files. Client SPIFFE ids must be in `trust_domain`.
    pub fn from_pem(
        cert: &Path,
        key: &Path,
        roots: &Path,
        trust_domain: &str,
    ) -> Result<XdsTls, XdsTlsError> {
        let chain = read_certs("xds certificate", cert)?;
        let key = read_key("xds key", key)?;
        let mut store = RootCertStore::empty();
        for root in read_certs("xds roots", roots)? {
            store
                .add(root)
                .map_err(|e| XdsTlsError::Roots(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .map_err(|e| XdsTlsError::Roots(e.to_string()))?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| XdsTlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| XdsTlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(XdsTls {
            trust_domain: trust_domain.to_string(),
            source: Arc::new(Source::Fixed(Arc::new(config))),
        })
    }

    /// Pilot's certificate from Citadel: asks until one is issued (backing off up to 30 s; the
    /// task ends when `shutdown` flips), then `mesh-identity` renews it. `on_ready` runs once
    /// the first certificate is held.
    pub fn from_citadel(
        config: IdentityConfig,
        mut shutdown: watch::Receiver<bool>,
        on_ready: impl FnOnce() + Send + 'static,
    ) -> XdsTls {
        let trust_domain = config.trust_domain.clone();
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            loop {
                match WorkloadIdentity::start(config.clone()).await {
                    Ok(identity) => {
                        tracing::info!(spiffe_id = %identity.spiffe_id(), "xds certificate issued by citadel");
                        tx.send_replace(Some(identity));
                        on_ready();
                        // Keep the sender (and so the identity's renewal) until shutdown.
                        let _ = shutdown.wait_for(|s| *s).await;
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(%error, citadel = %config.citadel_addr, retry_in_ms = backoff.as_millis() as u64, "cannot get the xds certificate");
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        });
        XdsTls {
            trust_domain,
            source: Arc::new(Source::Citadel {
                identity: rx,
                cache: Mutex::new(None),
            }),
        }
    }

    /// The configuration for a new connection; `None` while no certificate is held.
    fn current(&self) -> Option<Arc<ServerConfig>> {
        match &*self.source {
            Source::Fixed(c) => Some(c.clone()),
            Source::Citadel { identity, cache } => {
                let base = identity.borrow().as_ref()?.server_config();
                let mut cache = cache.lock();
                if let Some((seen, ours)) = cache.as_ref()
                    && Arc::ptr_eq(seen, &base)
                {
                    return Some(ours.clone());
                }
                let mut ours = (*base).clone();
                ours.alpn_protocols = vec![b"h2".to_vec()];
                let ours = Arc::new(ours);
                *cache = Some((base, ours.clone()));
                Some(ours)
            }
        }
    }

    /// Accepts on `listener` until the returned stream is dropped, handshaking each connection
    /// in its own task; yields the connections whose client presented a certificate chained to
    /// the roots with a SPIFFE id of the trust domain. Serve it with tonic's
    /// `serve_with_incoming_shutdown`.
    pub fn incoming(self, listener: TcpListener) -> ReceiverStream<Result<MtlsConn, io::Error>> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = tx.closed() => return,
                    a = listener.accept() => a,
                };
                let (tcp, remote) = match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        tracing::warn!(%error, "xds tls accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(config) = self.current() else {
                    tracing::debug!(%remote, "xds tls connection closed: no certificate yet");
                    continue;
                };
                let tx = tx.clone();
                let trust_domain = self.trust_domain.clone();
                tokio::spawn(async move {
                    if let Some(conn) = handshake(config, tcp, remote, &trust_domain).await {
                        let _ = tx.send(Ok(conn)).await;
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

async fn handshake(
    config: Arc<ServerConfig>,
    tcp: TcpStream,
    remote: SocketAddr,
    trust_domain: &str,
) -> Option<MtlsConn> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let io = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(io)) => io,
        Ok(Err(error)) => {
            tracing::info!(%remote, %error, "xds tls handshake refused");
            return None;
        }
        Err(_) => {
            tracing::info!(%remote, "xds tls handshake timed out");
            return None;
        }
    };
    let Some(spiffe_id) = peer_identity(io.get_ref().1) else {
        tracing::warn!(%remote, "xds client certificate carries no SPIFFE id; closed");
        return None;
    };
    if spiffe_id.trust_domain != trust_domain {
        tracing::warn!(%remote, %spiffe_id, trust_domain, "xds client outside the trust domain; closed");
        return None;
    }
    tracing::debug!(%remote, %spiffe_id, "xds tls client");
    Some(MtlsConn {
        io,
        peer: XdsPeer { remote, spiffe_id },
    })
}

/// One accepted mTLS connection and its verified peer.
pub struct MtlsConn {
    io: TlsStream<TcpStream>,
    peer: XdsPeer,
}

impl Connected for MtlsConn {
    type ConnectInfo = XdsPeer;

    fn connect_info(&self) -> XdsPeer {
        self.peer.clone()
    }
}

impl AsyncRead for MtlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for MtlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// A proxy on an mTLS stream may only be served as a proxy of its certificate's namespace.
pub(super) fn authorize(peer: &XdsPeer, node: Option<&Node>) -> Result<(), Status> {
    // A missing or unreadable node is reported by the session itself.
    let Some(Ok(proxy)) = node.map(ProxyInfo::from_node) else {
        return Ok(());
    };
    if proxy.namespace != peer.spiffe_id.namespace {
        tracing::warn!(
            proxy = %proxy.id, spiffe_id = %peer.spiffe_id, remote = %peer.remote,
            "xds client asked for another namespace's config"
        );
        return Err(Status::permission_denied(format!(
            "{} may not receive config for namespace {:?} (node {})",
            peer.spiffe_id, proxy.namespace, proxy.id
        )));
    }
    tracing::info!(proxy = %proxy.id, spiffe_id = %peer.spiffe_id, remote = %peer.remote, "xds mtls client identified");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_a_citadel_certificate_nothing_is_served() {
        let (stop, stop_rx) = watch::channel(false);
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ready.clone();
        let tls = XdsTls::from_citadel(
            IdentityConfig {
                citadel_addr: "http://127.0.0.1:1".into(),
                token: "t".into(),
                ttl: Duration::from_secs(3600),
                trust_domain: "cluster.local".into(),
            },
            stop_rx,
            move || flag.store(true, std::sync::atomic::Ordering::SeqCst),
        );
        assert!(tls.current().is_none());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = tls.incoming(listener);
        // The connection is accepted and closed at once: the client reads end of file.
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read(&mut tcp, &mut buf),
        )
        .await
        .unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(!ready.load(std::sync::atomic::Ordering::SeqCst));
        stop.send_replace(true);
        // Nothing reached the server.
        use tokio_stream::StreamExt as _;
        assert!(
            tokio::time::timeout(Duration::from_millis(50), incoming.next())
                .await
                .is_err()
        );
    }
}
