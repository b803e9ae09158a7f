//! What downstream HTTP clients may send ([`HttpLimits`]), the hyper configuration that
//! enforces it, and counting what clients did wrong (`proxy_downstream_rejected_total`) and
//! upstream resets after the response headers.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::admin::{ProxyMetrics, UpstreamErrorLabels};
use crate::capture::{Sniffed, sniff};

use super::response::Body;
use super::smuggling::{HeadGuard, reason};

/// Envoy's default `max_request_headers_kb` (60 KiB).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 60 * 1024;
/// How long a client may take to send a whole request head by default.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The smallest read buffer hyper accepts.
const MIN_HEADER_BYTES: usize = 8192;

/// What downstream clients may send on an HTTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// A client that has not sent a complete request head this long after starting one (or
    /// after connecting) is disconnected.
    pub header_read_timeout: Duration,
    /// A request head larger than this is answered 431 (at least 8 KiB).
    pub max_header_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

/// HTTP/1.1 (keep-alive, upgrades) and HTTP/2, within `limits`.
pub(super) fn http_builder(limits: &HttpLimits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .keep_alive(true)
        .timer(TokioTimer::new())
        // The head read timeout is the request-head guard's (`guarded`): it runs only while a
        // head is incomplete, so idle keep-alive connections are not cut. hyper's own would
        // also close idle ones.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BYTES));
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1024)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    b
}

/// The builder for a connection whose first bytes were `sniffed`: HTTP/2 for the preface,
/// else HTTP/1 (whose parser answers 400 to anything that is not a request).
pub(super) fn builder_for(
    base: &auto::Builder<TokioExecutor>,
    sniffed: Sniffed,
) -> auto::Builder<TokioExecutor> {
    match sniffed {
        Sniffed::Http2 => base.clone().http2_only(),
        _ => base.clone().http1_only(),
    }
}

/// Waits for the start of a plaintext HTTP connection (at most the header read timeout) and
/// tells HTTP/2 from HTTP/1. `None` when the client closed, or sent nothing in time (counted
/// as `header_timeout`).
pub(super) async fn open_http(
    stream: &mut TcpStream,
    metrics: &ProxyMetrics,
    limits: &HttpLimits,
) -> Option<(Sniffed, Vec<u8>)> {
    let s = sniff(stream, limits.header_read_timeout).await;
    if s.head.is_empty() {
        if s.timed_out {
            metrics.downstream_rejected("header_timeout");
            tracing::debug!("client sent nothing before the header read timeout; closing");
        }
        return None;
    }
    Some((s.protocol, s.head))
}

/// `io` behind the request-head guard (inspecting when the connection speaks HTTP/1).
pub(super) fn guarded<S>(
    io: S,
    http1: bool,
    limits: &HttpLimits,
) -> (TokioIo<HeadGuard<S>>, Arc<AtomicU8>) {
    let (g, refused) = HeadGuard::new(
        io,
        limits.max_header_bytes.max(MIN_HEADER_BYTES),
        limits.header_read_timeout,
        http1,
    );
    (TokioIo::new(g), refused)
}

/// Counts how a downstream connection ended, when it was the client's fault.
pub(super) fn count_end(
    metrics: &ProxyMetrics,
    refused: &AtomicU8,
    result: &Result<(), Box<dyn std::error::Error + Send + Sync>>,
) {
    match refused.load(Ordering::Relaxed) {
        reason::CL_TE_CONFLICT => metrics.downstream_rejected("cl_te_conflict"),
        reason::HEADER_TOO_LARGE => metrics.downstream_rejected("header_too_large"),
        reason::HEADER_TIMEOUT => metrics.downstream_rejected("header_timeout"),
        _ => {
            if let Err(e) = result {
                count_connection_error(metrics, e.as_ref());
            }
        }
    }
}

/// Counts why a downstream connection ended, when it was the client's fault.
pub(super) fn count_connection_error(
    metrics: &ProxyMetrics,
    err: &(dyn std::error::Error + 'static),
) {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                metrics.downstream_rejected("header_timeout");
            } else if h.is_parse_too_large() {
                metrics.downstream_rejected("header_too_large");
            } else if h.is_parse() {
                metrics.downstream_rejected("bad_request");
            }
            return;
        }
        cur = e.source();
    }
}

/// A response body that counts an error (the upstream reset mid-body) once.
pub(super) struct ResetCounted {
    pub(super) inner: Body,
    /// `proxy_upstream_errors_total` (only that family: cloning all the metrics per request
    /// would cost a reference count each).
    pub(super) errors: Option<Family<UpstreamErrorLabels, Counter>>,
}

impl hyper::body::Body for ResetCounted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(e))) = &polled
            && let Some(m) = this.errors.take()
        {
            tracing::debug!(error = %e, "upstream reset after the response headers");
            m.get_or_create(&UpstreamErrorLabels {
                reason: "reset_after_headers",
            })
            .inc();
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
