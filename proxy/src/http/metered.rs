//! Response bodies that report when they end, so a request's duration runs to its last byte
//! (as Envoy measures it) and its response size is the bytes actually sent.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::admin::RequestLabels;

use super::access_log::AccessLogEntry;
use super::context::ProxyContext;
use super::response::Body;

/// A body that calls `on_end(bytes)` once: at its end, on an error, or when dropped early.
pub struct Metered<F: FnOnce(u64)> {
    inner: Body,
    bytes: u64,
    on_end: Option<F>,
}

impl<F: FnOnce(u64)> Metered<F> {
    fn finish(&mut self) {
        if let Some(f) = self.on_end.take() {
            f(self.bytes);
        }
    }
}

impl<F: FnOnce(u64) + Unpin> HttpBody for Metered<F> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(Some(Err(_)) | None) => this.finish(),
            Poll::Pending => {}
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

impl<F: FnOnce(u64)> Drop for Metered<F> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Records the request when `resp`'s body ends: Istio's request metrics with `labels`, and the
/// access log line `log` when access logging is on. Every listener records through here.
pub fn record_on_end(
    ctx: &ProxyContext,
    resp: Response<Body>,
    labels: RequestLabels,
    started: Instant,
    request_bytes: u64,
    log: Option<AccessLogEntry>,
) -> Response<Body> {
    let access_log = ctx.access_log.clone();
    let metrics = ctx.metrics.clone();
    metered(resp, move |response_bytes| {
        let duration = started.elapsed();
        metrics.record_request(&labels, duration, request_bytes, response_bytes);
        if let (Some(access_log), Some(mut e)) = (access_log, log) {
            e.bytes_sent = response_bytes;
            e.duration = duration.as_millis() as u64;
            access_log.log(e);
        }
    })
}

/// Wraps `resp`'s body so `on_end` gets the body bytes sent once the body is done.
pub fn metered<F>(resp: Response<Body>, on_end: F) -> Response<Body>
where
    F: FnOnce(u64) + Send + Sync + Unpin + 'static,
{
    resp.map(|inner| {
        Metered {
            inner,
            bytes: 0,
            on_end: Some(on_end),
        }
        .boxed()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn counter() -> (
        Arc<AtomicU64>,
        impl FnOnce(u64) + Send + Sync + Unpin + 'static,
    ) {
        let seen = Arc::new(AtomicU64::new(u64::MAX));
        let s = seen.clone();
        (seen, move |n| s.store(n, Ordering::SeqCst))
    }

    #[tokio::test]
    async fn reports_the_bytes_sent_once_at_the_end() {
        let chunks = futures::stream::iter(
            ["abc", "de"].map(|c| Ok::<_, hyper::Error>(Frame::data(Bytes::from(c)))),
        );
        let (seen, on_end) = counter();
        let resp = metered(Response::new(StreamBody::new(chunks).boxed()), on_end);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "abcde");
        assert_eq!(seen.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn reports_when_dropped_unread() {
        let (seen, on_end) = counter();
        let full = Full::new(Bytes::from("xyz")).map_err(|never| match never {});
        let resp = metered(Response::new(full.boxed()), on_end);
        assert_eq!(seen.load(Ordering::SeqCst), u64::MAX, "not yet");
        drop(resp);
        assert_eq!(seen.load(Ordering::SeqCst), 0);
    }
}
