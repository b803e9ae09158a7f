//! Entry points for the coverage-guided fuzzers in `fuzz/` (hidden from the docs; not an API
//! to build on). They expose the proxy's own HTTP/1 front end so the fuzzers drive the same
//! code a plaintext listener runs: protocol sniffing, the replay of the sniffed bytes, the
//! request-head guard ([`HeadGuard`]) and the listeners' hyper configuration.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::Ordering;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::capture::{Prefixed, Sniffed, sniff};

use super::limits::{HttpLimits, builder_for, guarded, http_builder};
use super::response::Body;

pub use super::smuggling::{HeadGuard, reason};

/// How [`serve_plaintext`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// What the sniffer decided.
    pub sniffed: Sniffed,
    /// Why the head guard refused a request ([`reason`]; `NONE` when it did not).
    pub refused: u8,
    /// Whether hyper ended the connection with an error.
    pub error: bool,
}

/// Serves one plaintext connection as a routed or inbound plaintext listener does (sniff the
/// first bytes, replay them, guard HTTP/1 request heads, serve with the listeners' hyper
/// builder), every request answered by `handler`. Needs a Tokio runtime with timers.
pub async fn serve_plaintext<S, F, Fut>(mut stream: S, limits: HttpLimits, handler: F) -> Served
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let s = sniff(&mut stream, limits.header_read_timeout).await;
    if s.head.is_empty() {
        return Served {
            sniffed: s.protocol,
            refused: reason::NONE,
            error: false,
        };
    }
    let (io, refused) = guarded(
        Prefixed::new(s.head, stream),
        s.protocol != Sniffed::Http2,
        &limits,
    );
    let builder = builder_for(&http_builder(&limits), s.protocol);
    let svc = service_fn(move |req| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler(req).await) }
    });
    let result = builder.serve_connection_with_upgrades(io, svc).await;
    Served {
        sniffed: s.protocol,
        refused: refused.load(Ordering::Relaxed),
        error: result.is_err(),
    }
}

/// The TLS ClientHello reader behind SNI routing and the PERMISSIVE ALPN check: `buf`'s server
/// name and ALPN protocols, `None` when the hello is incomplete or `buf` is not one.
pub fn client_hello(buf: &[u8]) -> Option<(Option<String>, Vec<Vec<u8>>)> {
    let read = |h: &crate::tcp::ClientHello<'_>| {
        (
            h.server_name().map(str::to_string),
            h.alpn().map(<[u8]>::to_vec).collect(),
        )
    };
    match crate::tcp::with_client_hello(buf, read) {
        crate::tcp::Peeked::Hello(v) => Some(v),
        crate::tcp::Peeked::Incomplete | crate::tcp::Peeked::NotHello => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn ok() -> Response<Body> {
        Response::new(
            Full::new(Bytes::from_static(b"ok"))
                .map_err(|never| match never {})
                .boxed(),
        )
    }

    #[tokio::test]
    async fn serves_requests_and_refuses_conflicting_framing() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let served = tokio::spawn(serve_plaintext(
            server,
            HttpLimits::default(),
            |_req| async { ok() },
        ));
        client
            .write_all(
                b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
            )
            .await
            .unwrap();
        client.shutdown().await.unwrap();
        let mut out = String::new();
        client.read_to_string(&mut out).await.unwrap();
        let served = served.await.unwrap();
        assert_eq!(served.sniffed, Sniffed::Http1);
        assert_eq!(served.refused, reason::CL_TE_CONFLICT);
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        assert_eq!(out.matches("HTTP/1.1 ").count(), 2, "{out}");
    }
}
