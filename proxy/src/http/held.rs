//! A response body that holds something (a circuit breaker admission) until the body ends, so
//! a request counts against its cluster's limits while its response still streams.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::response::Body;

/// `inner`, releasing `guard` at its end, on an error, or when dropped unfinished.
pub struct Held<G> {
    inner: Body,
    guard: Option<G>,
}

impl<G> Held<G> {
    pub fn new(inner: Body, guard: G) -> Self {
        Held {
            inner,
            guard: Some(guard),
        }
    }
}

impl<G: Unpin> HttpBody for Held<G> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.guard = None,
            Poll::Ready(Some(Err(_)) | None) => this.guard = None,
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
    use http_body_util::{BodyExt, StreamBody};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn released_at_the_end_of_the_body_not_before() {
        let released = Arc::new(AtomicBool::new(false));
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, hyper::Error>>(1);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut body = Held::new(StreamBody::new(stream).boxed(), Flag(released.clone()));
        tx.send(Ok(Frame::data(Bytes::from("a")))).await.unwrap();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        assert!(!released.load(Ordering::SeqCst), "still streaming");
        drop(tx);
        assert!(body.frame().await.is_none());
        assert!(released.load(Ordering::SeqCst));
    }
}
