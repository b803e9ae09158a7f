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

/// A body that calls `on_end(bytes, grpc_status)` once: at its end, on an error, or when
/// dropped early. `grpc_status` is the `grpc-status` of the trailers, when they had one.
pub struct Metered<F: FnOnce(u64, Option<&'static str>)> {
    inner: Body,
    bytes: u64,
    grpc_status: Option<&'static str>,
    on_end: Option<F>,
}

impl<F: FnOnce(u64, Option<&'static str>)> Metered<F> {
    fn finish(&mut self) {
        if let Some(f) = self.on_end.take() {
            f(self.bytes, self.grpc_status);
        }
    }
}

/// gRPC status codes as label values (`grpc_response_status`); other values are not labelled.
const GRPC_CODES: [&str; 17] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
];

/// The `grpc-status` of a header or trailer block, as a label value.
pub fn grpc_status_label(headers: &http::HeaderMap) -> Option<&'static str> {
    let v = headers.get("grpc-status")?.to_str().ok()?.trim();
    GRPC_CODES.iter().copied().find(|c| *c == v)
}

impl<F: FnOnce(u64, Option<&'static str>) + Unpin> HttpBody for Metered<F> {
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
                } else if let Some(t) = frame.trailers_ref()
                    && let Some(s) = grpc_status_label(t)
                {
                    this.grpc_status = Some(s);
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

impl<F: FnOnce(u64, Option<&'static str>)> Drop for Metered<F> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Records the request when `resp`'s body ends: Istio's request metrics with `labels`, and the
/// access log line `log` when access logging is on. Every listener records through here.
/// gRPC responses (`content-type: application/grpc*`) are labelled `request_protocol` `grpc`
/// with `grpc_response_status` from the trailers (or the headers of a trailers-only answer).
pub fn record_on_end(
    ctx: &ProxyContext,
    resp: Response<Body>,
    mut labels: RequestLabels,
    started: Instant,
    request_bytes: u64,
    log: Option<AccessLogEntry>,
) -> Response<Body> {
    let access_log = ctx.access_log.clone();
    let recorder = ctx.metrics.recorder.clone();
    let grpc = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        labels.request_protocol = "grpc";
        if let Some(s) = grpc_status_label(resp.headers()) {
            labels.grpc_response_status = s;
        }
    }
    metered_grpc(resp, move |response_bytes, trailer_status| {
        if grpc && let Some(s) = trailer_status {
            labels.grpc_response_status = s;
        }
        let duration = started.elapsed();
        recorder.record(&labels, duration, request_bytes, response_bytes);
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
    metered_grpc(resp, move |bytes, _| on_end(bytes))
}

/// Like [`metered`], also handing over the trailers' `grpc-status`.
fn metered_grpc<F>(resp: Response<Body>, on_end: F) -> Response<Body>
where
    F: FnOnce(u64, Option<&'static str>) + Send + Sync + Unpin + 'static,
{
    resp.map(|inner| {
        Metered {
            inner,
            bytes: 0,
            grpc_status: None,
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
