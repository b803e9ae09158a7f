//! Upstream connections: a keep-alive pool per endpoint, plaintext or mTLS.
//!
//! Built on hyper-util's pooled client with a connector that dials the endpoint and, for mTLS
//! clusters, runs the rustls handshake with the workload's client configuration (which checks
//! the server's SPIFFE SAN). The peer identity travels to the response as an extension.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The SPIFFE id the upstream presented (on responses over mTLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPrincipal(pub String);

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream connect error: {0}")]
    Connect(String),
    #[error("upstream request failed: {0}")]
    Request(String),
}

/// Dials endpoints; TLS when configured.
#[derive(Clone)]
pub struct MeshConnector {
    tls: Option<Arc<ClientConfig>>,
    connect_timeout: Duration,
}

impl tower::Service<Uri> for MeshConnector {
    type Response = TokioIo<MeshStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        let timeout = self.connect_timeout;
        Box::pin(async move {
            let addr: SocketAddr = uri
                .authority()
                .and_then(|a| a.as_str().parse().ok())
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("bad endpoint {uri}"))
                })?;
            let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connect to {addr} timed out"),
                    )
                })??;
            let _ = tcp.set_nodelay(true);
            let stream = match tls {
                None => MeshStream::Plain(tcp),
                Some(cfg) => {
                    // Identity is checked by SPIFFE SAN in the verifier; the name is not.
                    let name = ServerName::IpAddress(addr.ip().into());
                    let tls = tokio::time::timeout(
                        timeout,
                        tokio_rustls::TlsConnector::from(cfg).connect(name, tcp),
                    )
                    .await
                    .map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("tls handshake with {addr} timed out"),
                        )
                    })??;
                    let peer =
                        mesh_identity::peer_identity(tls.get_ref().1).map(|id| id.to_string());
                    MeshStream::Tls(Box::new(tls), peer)
                }
            };
            Ok(TokioIo::new(stream))
        })
    }
}

/// A connection to an endpoint.
pub enum MeshStream {
    Plain(TcpStream),
    Tls(
        Box<tokio_rustls::client::TlsStream<TcpStream>>,
        Option<String>,
    ),
}

impl Connection for MeshStream {
    fn connected(&self) -> Connected {
        match self {
            MeshStream::Plain(_) => Connected::new(),
            MeshStream::Tls(_, Some(peer)) => Connected::new().extra(PeerPrincipal(peer.clone())),
            MeshStream::Tls(_, None) => Connected::new(),
        }
    }
}

impl AsyncRead for MeshStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MeshStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MeshStream::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MeshStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MeshStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MeshStream::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MeshStream::Plain(s) => Pin::new(s).poll_flush(cx),
            MeshStream::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MeshStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MeshStream::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

type PooledClient = Client<MeshConnector, Incoming>;

fn client(tls: Option<Arc<ClientConfig>>, connect_timeout: Duration) -> PooledClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build(MeshConnector {
            tls,
            connect_timeout,
        })
}

/// The upstream side: one pooled client for plaintext, one per mTLS configuration.
pub struct Upstream {
    plain: PooledClient,
    connect_timeout: Duration,
    tls: Mutex<HashMap<usize, PooledClient>>,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream::new(Duration::from_secs(10))
    }
}

impl Upstream {
    pub fn new(connect_timeout: Duration) -> Self {
        Upstream {
            plain: client(None, connect_timeout),
            connect_timeout,
            tls: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `req` to `endpoint` (the request URI is rewritten to `http://endpoint/path`),
    /// over mTLS when `tls` is given.
    pub async fn send(
        &self,
        endpoint: SocketAddr,
        tls: Option<Arc<ClientConfig>>,
        mut req: Request<Incoming>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let uri = Uri::builder()
            .scheme(if tls.is_some() { "https" } else { "http" })
            .authority(endpoint.to_string())
            .path_and_query(pq)
            .build()
            .map_err(|e| UpstreamError::Request(e.to_string()))?;
        *req.uri_mut() = uri;
        let client = match tls {
            None => self.plain.clone(),
            Some(cfg) => {
                // Keyed by the config's identity: a rotated certificate gives a new config and
                // so a fresh pool.
                let key = Arc::as_ptr(&cfg) as usize;
                let mut map = self.tls.lock();
                if map.len() > 256 {
                    map.clear();
                }
                map.entry(key)
                    .or_insert_with(|| client(Some(cfg), self.connect_timeout))
                    .clone()
            }
        };
        client.request(req).await.map_err(|e| {
            if e.is_connect() {
                let mut msg = e.to_string();
                let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg = format!("{msg}: {s}");
                    src = s.source();
                }
                UpstreamError::Connect(msg)
            } else {
                UpstreamError::Request(e.to_string())
            }
        })
    }
}
