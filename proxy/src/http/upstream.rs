//! Upstream connections: a keep-alive pool per endpoint, plaintext or mTLS, HTTP/1.1 or HTTP/2.
//!
//! HTTP/1.1 hops go through [`H1Pool`] (keep-alive connections per endpoint, no task or URI
//! per request); HTTP/2 hops through hyper-util's pooled client. Both dial the endpoint and, for
//! mTLS clusters, run the rustls handshake with the workload's client configuration (which
//! checks the server's SPIFFE SAN). The peer identity travels to the response as an extension.
//!
//! Between sidecars the upstream hop speaks the protocol the request arrived in: HTTP/2
//! requests go out over HTTP/2 (ALPN `istio-h2`), multiplexed on one pooled connection per
//! endpoint; HTTP/1.x requests over HTTP/1.1 keep-alive connections (ALPN `istio`). In plaintext
//! (to the application or outside the mesh) only gRPC keeps HTTP/2 (prior knowledge); other
//! HTTP/2 requests are sent as HTTP/1.1.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::alpn::{self, HopProtocol};
use super::held::Held;
use super::pool::H1Pool;
use super::response::Body;
use crate::cluster::{Admission, ClusterStates};

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
            Ok(TokioIo::new(dial(addr, tls, timeout).await?))
        })
    }
}

/// Connects to `addr` (TCP_NODELAY), then runs the mTLS handshake when `tls` is given, each
/// within `timeout`.
pub(super) async fn dial(
    addr: SocketAddr,
    tls: Option<Arc<ClientConfig>>,
    timeout: Duration,
) -> io::Result<MeshStream> {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect to {addr} timed out"),
            )
        })?
        .map_err(|e| io::Error::new(e.kind(), format!("tcp connect to {addr}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    Ok(match tls {
        None => MeshStream::Plain(tcp),
        Some(cfg) => {
            // Mesh mTLS: identity is checked by SPIFFE SAN in the verifier; the name is not.
            // TLS origination: the SNI its configuration was built for.
            let name = crate::tls::origination::server_name_of(&cfg)
                .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
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
            let peer = mesh_identity::peer_identity(tls.get_ref().1).map(|id| id.to_string());
            MeshStream::Tls(Box::new(tls), peer)
        }
    })
}

/// A connection to an endpoint.
pub enum MeshStream {
    Plain(TcpStream),
    Tls(
        Box<tokio_rustls::client::TlsStream<TcpStream>>,
        Option<String>,
    ),
}

impl MeshStream {
    /// The SPIFFE id the upstream presented (mTLS).
    pub fn peer(&self) -> Option<&str> {
        match self {
            MeshStream::Tls(_, peer) => peer.as_deref(),
            MeshStream::Plain(_) => None,
        }
    }
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

/// `body` as an [`UpstreamBody`]: one that already is one is passed as it is, a downstream
/// body is streamed without a box, anything else is boxed.
fn upstream_body<B>(body: B) -> UpstreamBody
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut slot = Some(body);
    let any = &mut slot as &mut dyn Any;
    if let Some(b) = any
        .downcast_mut::<Option<UpstreamBody>>()
        .and_then(Option::take)
    {
        return b;
    }
    if let Some(b) = any
        .downcast_mut::<Option<Incoming>>()
        .and_then(Option::take)
    {
        return UpstreamBody::Streaming(b);
    }
    match slot {
        Some(b) => UpstreamBody::Boxed(b.map_err(Into::into).boxed_unsync()),
        None => UpstreamBody::Buffered(None),
    }
}

/// Any error a request body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of requests sent upstream: the downstream body streamed or a buffered copy (both
/// without a box), or any other body boxed.
pub enum UpstreamBody {
    Streaming(Incoming),
    /// A buffered body; `None` once sent (or when empty).
    Buffered(Option<Bytes>),
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl UpstreamBody {
    /// A buffered body (`bytes` may be empty).
    pub fn buffered(bytes: Bytes) -> Self {
        UpstreamBody::Buffered((!bytes.is_empty()).then_some(bytes))
    }
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Streaming(b) => Pin::new(b).poll_frame(cx).map_err(BoxError::from),
            UpstreamBody::Buffered(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            UpstreamBody::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Streaming(b) => b.is_end_stream(),
            UpstreamBody::Buffered(b) => b.is_none(),
            UpstreamBody::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Streaming(b) => b.size_hint(),
            UpstreamBody::Buffered(b) => {
                SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            UpstreamBody::Boxed(b) => b.size_hint(),
        }
    }
}

type PooledClient = Client<MeshConnector, UpstreamBody>;

/// How long an upstream connection may stay idle in a pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per endpoint (and TLS configuration).
const POOL_MAX_IDLE_PER_HOST: usize = 64;

/// A workload TLS configuration and the pool built from it.
type TlsPool = (Arc<ClientConfig>, PooledClient);

fn client(
    tls: Option<Arc<ClientConfig>>,
    connect_timeout: Duration,
    protocol: HopProtocol,
) -> PooledClient {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST);
    if protocol == HopProtocol::Http2 {
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_while_idle(false);
    }
    let tls = tls.map(|base| alpn::client_config(&base, protocol));
    builder.build(MeshConnector {
        tls,
        connect_timeout,
    })
}

/// The hop protocol for a request, and the version to send it with. Between sidecars (mTLS) an
/// HTTP/2 request stays HTTP/2: the peer sidecar serves both. In plaintext (to the application,
/// or to a destination outside the mesh) only gRPC stays HTTP/2, since gRPC servers speak it by
/// definition; any other HTTP/2 request goes out as HTTP/1.1, which every HTTP server speaks
/// (as Istio does for a port declared `http`).
fn hop_protocol<B>(req: &Request<B>, mtls: bool) -> (HopProtocol, http::Version) {
    if req.version() != http::Version::HTTP_2 {
        return (HopProtocol::Http1, req.version());
    }
    if mtls || is_grpc(req.headers()) {
        (HopProtocol::Http2, http::Version::HTTP_2)
    } else {
        (HopProtocol::Http1, http::Version::HTTP_11)
    }
}

/// `content-type: application/grpc` (or `application/grpc+proto` and the like).
fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// A workload TLS configuration (by address) → the (configuration it came from, its HTTP/1
/// variant).
type H1TlsConfigs = HashMap<usize, (Arc<ClientConfig>, Arc<ClientConfig>)>;

/// The upstream side: pooled clients for plaintext and per mTLS configuration (each for
/// HTTP/1.1 and HTTP/2), and each cluster's load balancing, circuit breaker and outlier state.
pub struct Upstream {
    /// HTTP/1.1, plaintext and mTLS (the common hop).
    h1: Arc<H1Pool>,
    /// The HTTP/1 client configuration derived from each workload configuration, by the
    /// latter's address (which the entry holds so that it is not reused meanwhile).
    h1_tls: Mutex<H1TlsConfigs>,
    plain: PooledClient,
    plain_h2: PooledClient,
    connect_timeout: Duration,
    /// Keyed by the address of the workload's configuration, which the entry holds so that the
    /// address is not reused by another configuration meanwhile.
    tls: Mutex<HashMap<(usize, HopProtocol), TlsPool>>,
    /// Per-cluster runtime state (kept across config updates).
    pub clusters: ClusterStates,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream::new(Duration::from_secs(10))
    }
}

impl Upstream {
    pub fn new(connect_timeout: Duration) -> Self {
        Upstream {
            h1: Arc::new(H1Pool::new(
                connect_timeout,
                POOL_IDLE_TIMEOUT,
                POOL_MAX_IDLE_PER_HOST,
            )),
            h1_tls: Mutex::new(HashMap::new()),
            plain: client(None, connect_timeout, HopProtocol::Http1),
            plain_h2: client(None, connect_timeout, HopProtocol::Http2),
            connect_timeout,
            tls: Mutex::new(HashMap::new()),
            clusters: ClusterStates::default(),
        }
    }

    /// Sends `req` in the background (request mirroring): the answer is read and dropped, and
    /// the whole exchange is abandoned after 30 s.
    pub fn send_detached(
        &self,
        endpoint: SocketAddr,
        tls: Option<Arc<ClientConfig>>,
        req: Request<UpstreamBody>,
        cluster: String,
    ) {
        let (protocol, version) = hop_protocol(&req, tls.is_some());
        let client = self.client_for(tls.clone(), protocol);
        let mut req = req;
        *req.version_mut() = version;
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        match Uri::builder()
            .scheme(if tls.is_some() { "https" } else { "http" })
            .authority(endpoint.to_string())
            .path_and_query(pq)
            .build()
        {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => return,
        }
        tokio::spawn(async move {
            let exchange = async {
                let resp = client.request(req).await?;
                let status = resp.status().as_u16();
                let _ = resp.into_body().collect().await;
                Ok::<u16, hyper_util::client::legacy::Error>(status)
            };
            match tokio::time::timeout(Duration::from_secs(30), exchange).await {
                Ok(Ok(status)) => tracing::debug!(%cluster, %endpoint, status, "mirror answered"),
                Ok(Err(e)) => tracing::debug!(%cluster, %endpoint, error = %e, "mirror failed"),
                Err(_) => tracing::debug!(%cluster, %endpoint, "mirror timed out"),
            }
        });
    }

    fn client_for(&self, tls: Option<Arc<ClientConfig>>, protocol: HopProtocol) -> PooledClient {
        match tls {
            None if protocol == HopProtocol::Http2 => self.plain_h2.clone(),
            None => self.plain.clone(),
            Some(cfg) => {
                let key = (Arc::as_ptr(&cfg) as usize, protocol);
                let mut map = self.tls.lock();
                if map.len() > 256 {
                    map.clear();
                }
                map.entry(key)
                    .or_insert_with(|| {
                        let pool = client(Some(cfg.clone()), self.connect_timeout, protocol);
                        (cfg, pool)
                    })
                    .1
                    .clone()
            }
        }
    }

    /// The HTTP/1 configuration derived from `base` (the same `Arc` while `base` is held).
    fn h1_tls(&self, base: Arc<ClientConfig>) -> Arc<ClientConfig> {
        let key = Arc::as_ptr(&base) as usize;
        let mut map = self.h1_tls.lock();
        if let Some((_, derived)) = map.get(&key) {
            return derived.clone();
        }
        if map.len() > 256 {
            map.clear();
        }
        let derived = alpn::client_config(&base, HopProtocol::Http1);
        map.insert(key, (base, derived.clone()));
        derived
    }

    /// Sends `req` to `endpoint`, over mTLS when `tls` is given, in the request's HTTP version
    /// (HTTP/2 stays HTTP/2 between sidecars and for gRPC). The logical authority travels in
    /// `Host`. HTTP/1 requests go through [`H1Pool`] in origin form; HTTP/2 and CONNECT through
    /// hyper-util's pooled client.
    pub async fn send<B>(
        &self,
        endpoint: SocketAddr,
        tls: Option<Arc<ClientConfig>>,
        req: Request<B>,
    ) -> Result<Response<Body>, UpstreamError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.send_held(endpoint, tls, req, None).await
    }

    /// [`Upstream::send`], holding `guard` (the request's circuit breaker admission) until the
    /// response body ends (or the request fails).
    pub async fn send_held<B>(
        &self,
        endpoint: SocketAddr,
        tls: Option<Arc<ClientConfig>>,
        req: Request<B>,
        guard: Option<Admission>,
    ) -> Result<Response<Body>, UpstreamError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut req = req.map(upstream_body);
        let (protocol, version) = hop_protocol(&req, tls.is_some());
        *req.version_mut() = version;
        if protocol == HopProtocol::Http1 && req.method() != http::Method::CONNECT {
            if req.uri().authority().is_some() {
                let pq = req
                    .uri()
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
                *req.uri_mut() = Uri::from(pq);
            }
            let tls = tls.map(|base| self.h1_tls(base));
            return self.h1.send(endpoint, tls, req, guard).await;
        }
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let uri = Uri::builder()
            .scheme(if tls.is_some() { "https" } else { "http" })
            .authority(endpoint.to_string())
            .path_and_query(pq)
            .build()
            .map_err(|e| UpstreamError::Request(e.to_string()))?;
        *req.uri_mut() = uri;
        // Keyed by the TLS config's identity: a rotated certificate gives a new config and so a
        // fresh pool.
        let client = self.client_for(tls, protocol);
        match client.request(req).await {
            Ok(resp) => Ok(resp.map(|b| match guard {
                Some(g) => Held::new(b.boxed(), g).boxed(),
                None => b.boxed(),
            })),
            Err(e) if e.is_connect() => {
                let mut msg = e.to_string();
                let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg = format!("{msg}: {s}");
                    src = s.source();
                }
                Err(UpstreamError::Connect(msg))
            }
            Err(e) => Err(UpstreamError::Request(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: http::Version, content_type: Option<&str>) -> Request<()> {
        let mut b = Request::builder().version(version).uri("/");
        if let Some(ct) = content_type {
            b = b.header(http::header::CONTENT_TYPE, ct);
        }
        b.body(()).unwrap()
    }

    #[tokio::test]
    async fn upstream_bodies_keep_their_bytes_and_size() {
        use http_body_util::{Empty, Full};
        use hyper::body::Body as _;
        let empty = UpstreamBody::buffered(Bytes::new());
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
        assert!(empty.collect().await.unwrap().to_bytes().is_empty());
        let full = UpstreamBody::buffered(Bytes::from_static(b"abc"));
        assert!(!full.is_end_stream());
        assert_eq!(full.size_hint().exact(), Some(3));
        assert_eq!(full.collect().await.unwrap().to_bytes(), "abc");
        // Another body type is boxed; an upstream body passes as it is.
        let other = upstream_body(Full::new(Bytes::from_static(b"xy")));
        assert!(matches!(other, UpstreamBody::Boxed(_)));
        assert_eq!(other.collect().await.unwrap().to_bytes(), "xy");
        let same = upstream_body(UpstreamBody::buffered(Bytes::from_static(b"z")));
        assert!(matches!(same, UpstreamBody::Buffered(Some(_))));
        let none = upstream_body(Empty::<Bytes>::new());
        assert!(none.is_end_stream());
    }

    #[test]
    fn http2_stays_http2_between_sidecars_and_for_grpc_only_in_plaintext() {
        use http::Version;
        let h2 = req(Version::HTTP_2, None);
        let grpc = req(Version::HTTP_2, Some("application/grpc+proto"));
        let h1 = req(Version::HTTP_11, None);
        assert_eq!(
            hop_protocol(&h2, true),
            (HopProtocol::Http2, Version::HTTP_2)
        );
        assert_eq!(
            hop_protocol(&grpc, false),
            (HopProtocol::Http2, Version::HTTP_2)
        );
        // A plain HTTP/2 client in front of an HTTP/1.1-only application still gets through.
        assert_eq!(
            hop_protocol(&h2, false),
            (HopProtocol::Http1, Version::HTTP_11)
        );
        assert_eq!(
            hop_protocol(&h1, true),
            (HopProtocol::Http1, Version::HTTP_11)
        );
    }
}
