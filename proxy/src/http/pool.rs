//! HTTP/1.1 upstream connections, pooled per (endpoint, TLS configuration): a request takes an
//! idle keep-alive connection that is ready (or dials a new one), and its connection goes back
//! to the pool when the response body ends. Compared with hyper-util's pooled client this
//! spawns no task per request (only one per connection, driving it), builds no URI or pool key
//! string per request and hands the body back without an extra channel.
//!
//! A request that an idle connection could not even start (the upstream had closed it) is
//! retried once on another connection, as hyper-util does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rustls::ClientConfig;

use crate::cluster::Admission;

use super::response::Body;
use super::upstream::{PeerPrincipal, UpstreamBody, UpstreamError, dial};

/// (endpoint, address of the TLS configuration or 0 for plaintext).
type Key = (SocketAddr, usize);

/// An idle connection.
struct Idle {
    sender: SendRequest<UpstreamBody>,
    peer: Option<Arc<str>>,
    since: Instant,
}

struct Entries {
    by_key: HashMap<Key, Vec<Idle>, foldhash::fast::RandomState>,
    last_sweep: Instant,
}

/// The pool. Cheap to share (`Arc`).
pub struct H1Pool {
    idle: Mutex<Entries>,
    idle_timeout: Duration,
    max_idle_per_key: usize,
    connect_timeout: Duration,
}

impl H1Pool {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration, max_idle_per_key: usize) -> Self {
        H1Pool {
            idle: Mutex::new(Entries {
                by_key: HashMap::default(),
                last_sweep: Instant::now(),
            }),
            idle_timeout,
            max_idle_per_key,
            connect_timeout,
        }
    }

    /// A ready idle connection for `key`, dropping closed and expired ones on the way.
    fn checkout(&self, key: Key) -> Option<Idle> {
        let mut idle = self.idle.lock();
        let now = Instant::now();
        if now.duration_since(idle.last_sweep) > self.idle_timeout / 2 {
            idle.last_sweep = now;
            let timeout = self.idle_timeout;
            idle.by_key.retain(|_, v| {
                v.retain(|c| !c.sender.is_closed() && now.duration_since(c.since) < timeout);
                !v.is_empty()
            });
        }
        let list = idle.by_key.get_mut(&key)?;
        let mut found = None;
        // Most recently used first: its socket is the warmest.
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            let c = &list[i];
            if c.sender.is_closed() || now.duration_since(c.since) >= self.idle_timeout {
                list.swap_remove(i);
                continue;
            }
            if c.sender.is_ready() {
                found = Some(list.swap_remove(i));
                break;
            }
        }
        if list.is_empty() {
            idle.by_key.remove(&key);
        }
        found
    }

    fn checkin(&self, key: Key, sender: SendRequest<UpstreamBody>, peer: Option<Arc<str>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock();
        let list = idle.by_key.entry(key).or_default();
        if list.len() >= self.max_idle_per_key {
            return;
        }
        list.push(Idle {
            sender,
            peer,
            since: Instant::now(),
        });
    }

    /// Idle connections held (for tests).
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.lock().by_key.values().map(Vec::len).sum()
    }

    /// Idle connections hyper already saw closed (for tests).
    #[cfg(test)]
    fn idle_closed(&self) -> usize {
        let idle = self.idle.lock();
        idle.by_key
            .values()
            .flatten()
            .filter(|c| c.sender.is_closed())
            .count()
    }

    /// Dials `endpoint` and starts driving the connection.
    async fn connect(
        &self,
        endpoint: SocketAddr,
        tls: Option<Arc<ClientConfig>>,
    ) -> Result<(SendRequest<UpstreamBody>, Option<Arc<str>>), UpstreamError> {
        let stream = dial(endpoint, tls, self.connect_timeout)
            .await
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        let peer = stream.peer().map(Arc::from);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%endpoint, error = %e, "upstream connection ended with an error");
            }
        });
        Ok((sender, peer))
    }

    /// Sends `req` (origin-form URI, HTTP/1.x) to `endpoint`; `tls` is the derived HTTP/1
    /// client configuration for mTLS, `None` for plaintext. A request without `Host` gets the
    /// endpoint's. `guard` (a circuit breaker admission) is held until the response body ends.
    pub async fn send(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        tls: Option<Arc<ClientConfig>>,
        mut req: Request<UpstreamBody>,
        guard: Option<Admission>,
    ) -> Result<Response<Body>, UpstreamError> {
        if !req.headers().contains_key(HOST)
            && let Ok(v) = HeaderValue::from_str(&endpoint.to_string())
        {
            req.headers_mut().insert(HOST, v);
        }
        let key = (
            endpoint,
            tls.as_ref().map_or(0, |c| Arc::as_ptr(c) as usize),
        );
        loop {
            let (mut sender, peer, reused) = match self.checkout(key) {
                Some(c) => (c.sender, c.peer, true),
                None => {
                    // Boxed: the dial and handshake futures are large and rarely run.
                    let (s, p) = Box::pin(self.connect(endpoint, tls.clone())).await?;
                    (s, p, false)
                }
            };
            if let Err(e) = sender.ready().await {
                if reused {
                    continue;
                }
                return Err(UpstreamError::Request(e.to_string()));
            }
            let mut resp = match sender.try_send_request(req).await {
                Ok(r) => r,
                Err(mut e) => match e.take_message() {
                    // Not started on a connection the upstream had closed: once more.
                    Some(r) if reused => {
                        req = r;
                        continue;
                    }
                    _ => return Err(UpstreamError::Request(e.into_error().to_string())),
                },
            };
            if let Some(p) = &peer {
                resp.extensions_mut().insert(PeerPrincipal(p.to_string()));
            }
            // A switched connection is not HTTP any more; the rest go back once read.
            let back = (resp.status() != StatusCode::SWITCHING_PROTOCOLS).then(|| Checkin {
                pool: Arc::downgrade(self),
                key,
                sender,
                peer,
            });
            return Ok(resp.map(|inner| {
                let mut body = Returning { inner, back, guard };
                if body.inner.is_end_stream() {
                    body.give_back();
                }
                body.boxed()
            }));
        }
    }
}

/// What goes back to the pool.
struct Checkin {
    pool: Weak<H1Pool>,
    key: Key,
    sender: SendRequest<UpstreamBody>,
    peer: Option<Arc<str>>,
}

/// A response body that returns its connection to the pool when it ends. Dropped before its
/// end, the connection is dropped with it (closed once hyper sees it unused). It also holds
/// the request's circuit breaker admission until then (as `Held` does for other bodies).
struct Returning {
    inner: Incoming,
    back: Option<Checkin>,
    guard: Option<Admission>,
}

impl Returning {
    fn give_back(&mut self) {
        self.guard = None;
        if let Some(c) = self.back.take()
            && let Some(pool) = c.pool.upgrade()
        {
            pool.checkin(c.key, c.sender, c.peer);
        }
    }
}

impl HttpBody for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.give_back(),
            Poll::Ready(None) => self.give_back(),
            // The connection failed: it is not reused.
            Poll::Ready(Some(Err(_))) => {
                self.back = None;
                self.guard = None;
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Empty, Full};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// An HTTP/1.1 server answering `hello` to each request; counts the connections accepted.
    async fn server() -> (SocketAddr, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let c = conns.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let host = req
                            .headers()
                            .get(HOST)
                            .map(|h| h.to_str().unwrap().to_string())
                            .unwrap_or_default();
                        let _ = req.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            format!("hello {host}"),
                        ))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        (addr, conns)
    }

    fn get(path: &str) -> Request<UpstreamBody> {
        Request::get(path)
            .body(UpstreamBody::Boxed(
                Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            ))
            .unwrap()
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        let (addr, conns) = server().await;
        let pool = Arc::new(H1Pool::new(
            Duration::from_secs(5),
            Duration::from_secs(60),
            8,
        ));
        for _ in 0..5 {
            let resp = pool.send(addr, None, get("/x"), None).await.unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, format!("hello {addr}"));
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_open_more_and_an_unread_body_is_not_reused() {
        let (addr, conns) = server().await;
        let pool = Arc::new(H1Pool::new(
            Duration::from_secs(5),
            Duration::from_secs(60),
            8,
        ));
        let a = pool.send(addr, None, get("/a"), None).await.unwrap();
        let b = pool.send(addr, None, get("/b"), None).await.unwrap();
        assert_eq!(conns.load(Ordering::SeqCst), 2, "a is still being read");
        drop(a);
        let _ = b.into_body().collect().await.unwrap();
        assert_eq!(pool.idle_count(), 1, "only the finished one is idle");
        let c = pool.send(addr, None, get("/c"), None).await.unwrap();
        let _ = c.into_body().collect().await.unwrap();
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_replaced() {
        // Answers one request per connection, then closes without saying so.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                });
            }
        });
        let pool = Arc::new(H1Pool::new(
            Duration::from_secs(5),
            Duration::from_secs(60),
            8,
        ));
        for _ in 0..3 {
            let resp = pool.send(addr, None, get("/"), None).await.unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "ok");
            // Pooled, then seen closed by the upstream.
            let deadline = Instant::now() + Duration::from_secs(5);
            while pool.idle_count() != pool.idle_closed() {
                assert!(Instant::now() < deadline, "the close is never seen");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let refused = SocketAddr::from(([127, 0, 0, 1], 1));
        assert!(matches!(
            pool.send(refused, None, get("/"), None).await,
            Err(UpstreamError::Connect(_))
        ));
    }
}
