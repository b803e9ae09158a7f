//! The HTTP/2 side of `serve_grpc`: `/istio.mixer.v1.Mixer/Check` is answered here without
//! tonic's codec (the request body is read whole, its message parsed by [`crate::wire`], the
//! response encoded once into one DATA frame followed by the `grpc-status` trailers); every
//! other path (Report, unknown methods) goes to the generated `MixerServer`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use mesh_proto::istio::mixer::v1::mixer_server::MixerServer;
use prost::Message;
use tonic::Status;
use tower::ServiceExt;

use crate::server::{MixerService, decode_errors_are_invalid_argument};

/// The Check method's path.
pub const CHECK_PATH: &str = "/istio.mixer.v1.Mixer/Check";

/// gRPC's length-prefixed message header: compressed flag + big-endian length.
const FRAME_HEADER: usize = 5;

/// A response body: one message and its trailers (Check), or tonic's (everything else).
pub enum GrpcBody {
    Unary {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    Tonic(tonic::body::Body),
}

impl Default for GrpcBody {
    fn default() -> Self {
        GrpcBody::Unary {
            data: None,
            trailers: None,
        }
    }
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        match self.get_mut() {
            GrpcBody::Unary { data, trailers } => {
                if let Some(d) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            GrpcBody::Tonic(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GrpcBody::Unary { data, trailers } => data.is_none() && trailers.is_none(),
            GrpcBody::Tonic(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GrpcBody::Unary { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            GrpcBody::Tonic(b) => b.size_hint(),
        }
    }
}

/// The hyper service of one connection (cheap to clone: two `Arc`s).
#[derive(Clone)]
pub struct GrpcService {
    /// `None`: Check goes through `tonic` too.
    mixer: Option<Arc<MixerService>>,
    tonic: MixerServer<MixerService>,
}

impl GrpcService {
    /// Check answered here, the rest through the generated server.
    pub fn new(service: MixerService) -> Self {
        GrpcService {
            tonic: MixerServer::new(service.clone()),
            mixer: Some(Arc::new(service)),
        }
    }

    /// Every call through the generated server (tonic's codec), to compare with.
    pub fn generated(service: MixerService) -> Self {
        GrpcService {
            tonic: MixerServer::new(service),
            mixer: None,
        }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<GrpcBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for GrpcService {
    type Response = Response<GrpcBody>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn call(&self, req: Request<Incoming>) -> BoxFuture {
        if let Some(mixer) = self
            .mixer
            .as_ref()
            .filter(|_| req.uri().path() == CHECK_PATH)
        {
            let mixer = mixer.clone();
            Box::pin(async move { Ok(check(&mixer, req).await) })
        } else {
            let tonic = self.tonic.clone();
            Box::pin(async move {
                match tonic.oneshot(req).await {
                    Ok(resp) => Ok(decode_errors_are_invalid_argument(resp).map(GrpcBody::Tonic)),
                    Err(never) => match never {},
                }
            })
        }
    }
}

/// The largest Check message read, as tonic's default decoding limit (4 MiB).
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// Answers one Check call.
async fn check(mixer: &MixerService, req: Request<Incoming>) -> Response<GrpcBody> {
    let limited = http_body_util::Limited::new(req.into_body(), FRAME_HEADER + MAX_MESSAGE);
    let body = match limited.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            mixer.count_check_code(tonic::Code::ResourceExhausted as i32);
            return Status::resource_exhausted(format!(
                "request message larger than the limit of {MAX_MESSAGE} bytes"
            ))
            .into_http();
        }
        Err(e) => return Status::cancelled(format!("request body: {e}")).into_http(),
    };
    let message = match message(&body) {
        Ok(m) => m,
        Err(status) => {
            mixer.count_check_code(status.code() as i32);
            return status.into_http();
        }
    };
    match mixer.handle_check_bytes(message).await {
        Ok(resp) => ok_response(&resp),
        Err(status) => status.into_http(),
    }
}

/// The one message of a unary request body (as tonic's server reads it: a compressed message
/// is refused, a body shorter than its frame is an unexpected end).
fn message(body: &[u8]) -> Result<&[u8], Status> {
    let Some((header, rest)) = body.split_first_chunk::<FRAME_HEADER>() else {
        return Err(if body.is_empty() {
            Status::internal("Missing request message.")
        } else {
            Status::internal("Unexpected EOF decoding stream.")
        });
    };
    match header[0] {
        0 => {}
        1 => {
            return Err(Status::unimplemented(
                "compressed messages are not supported",
            ));
        }
        flag => {
            return Err(Status::internal(format!(
                "protocol error: received message with invalid compression flag: {flag} (valid flags are 0 and 1)"
            )));
        }
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    rest.get(..len)
        .ok_or_else(|| Status::internal("Unexpected EOF decoding stream."))
}

/// HTTP 200, `application/grpc`, the framed message, then `grpc-status: 0`.
fn ok_response(resp: &impl Message) -> Response<GrpcBody> {
    let len = resp.encoded_len();
    let mut buf = BytesMut::with_capacity(FRAME_HEADER + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    if let Err(e) = resp.encode(&mut buf) {
        return Status::internal(format!("response not encoded: {e}")).into_http();
    }
    let mut trailers = HeaderMap::with_capacity(1);
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let mut response = Response::new(GrpcBody::Unary {
        data: Some(buf.freeze()),
        trailers: Some(trailers),
    });
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_reads_one_frame() {
        assert_eq!(message(&[0, 0, 0, 0, 2, 7, 8]).unwrap(), &[7, 8]);
        assert_eq!(message(&[0, 0, 0, 0, 0]).unwrap(), &[] as &[u8]);
    }

    #[test]
    fn message_refuses_short_compressed_and_bad_frames() {
        assert_eq!(message(&[]).unwrap_err().code(), tonic::Code::Internal);
        assert_eq!(message(&[0, 0]).unwrap_err().code(), tonic::Code::Internal);
        assert_eq!(
            message(&[0, 0, 0, 0, 3, 1]).unwrap_err().code(),
            tonic::Code::Internal
        );
        assert_eq!(
            message(&[1, 0, 0, 0, 0]).unwrap_err().code(),
            tonic::Code::Unimplemented
        );
        assert_eq!(
            message(&[7, 0, 0, 0, 0]).unwrap_err().code(),
            tonic::Code::Internal
        );
    }

    #[test]
    fn ok_response_is_one_framed_message_then_status_trailers() {
        let resp = mesh_proto::istio::mixer::v1::CheckResponse::default();
        let mut r = ok_response(&resp);
        assert_eq!(r.headers()["content-type"], "application/grpc");
        let GrpcBody::Unary { data, trailers } = r.body_mut() else {
            panic!("unary body");
        };
        assert_eq!(data.as_deref(), Some(&[0u8, 0, 0, 0, 0][..]));
        assert_eq!(trailers.as_ref().unwrap()["grpc-status"], "0");
    }
}
