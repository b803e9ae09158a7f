//! The ADS gRPC service as mounted on the server: the generated routing, but with responses
//! encoded by [`super::wire`] (straight from the shared encoded resources) instead of as
//! decoded `DiscoveryResponse`s. Requests are decoded as the generated messages.
//!
//! Each response is framed into its own exactly sized buffer, freed once sent: tonic's encoder
//! would keep, per stream, a buffer as large as the largest response it ever sent (megabytes
//! per proxy for a full CDS), which dominated Pilot's memory with thousands of proxies.

use std::convert::Infallible;

use std::pin::Pin;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::Frame;
use http_body_util::BodyExt;
use mesh_proto::envoy::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use prost::Message;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};
use tonic::{Request, Status};

use super::request::{SotwRequest, WireRequest};
use super::server::AdsServer;
use super::wire::{DeltaResponse, SotwResponse};

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// `envoy.service.discovery.v3.AggregatedDiscoveryService`, served by an [`AdsServer`].
#[derive(Clone)]
pub struct AdsService {
    ads: AdsServer,
    max_decoding_message_size: Option<usize>,
}

impl std::fmt::Debug for AdsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdsService").finish_non_exhaustive()
    }
}

impl AdsService {
    pub(super) fn new(ads: AdsServer) -> AdsService {
        AdsService {
            ads,
            max_decoding_message_size: None,
        }
    }

    /// Limits the size of a decoded request (default 4 MiB).
    #[must_use]
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.max_decoding_message_size = Some(limit);
        self
    }
}

impl tonic::server::NamedService for AdsService {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

/// Decoded requests of one stream.
type RequestStream<Req> = Pin<Box<dyn tokio_stream::Stream<Item = Result<Req, Status>> + Send>>;

/// Requests larger than this are refused when no limit is set (tonic's default).
const DEFAULT_MAX_REQUEST: usize = 4 * 1024 * 1024;

/// The request stream of `req`, decoded as `Req` (at most `max` bytes a message). Each message
/// is decoded from the bytes received and its buffer dropped once consumed: tonic's decoder
/// would keep, per stream, a buffer as large as the largest request (an EDS request names every
/// cluster: over 100 KB per proxy).
fn requests<B, Req>(req: http::Request<B>, max: Option<usize>) -> Request<RequestStream<Req>>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<StdError> + Send + 'static,
    Req: WireRequest,
{
    let max = max.unwrap_or(DEFAULT_MAX_REQUEST);
    let (parts, body) = req.into_parts();
    let state = Some((Box::pin(body), BytesMut::new()));
    let stream = futures::stream::unfold(state, move |state| async move {
        let (mut body, mut buf) = state?;
        loop {
            if buf.len() >= 5 {
                let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if buf[0] != 0 {
                    let status = Status::unimplemented("compressed requests are not supported");
                    return Some((Err(status), None));
                }
                if len > max {
                    let status = Status::out_of_range(format!(
                        "request of {len} bytes is over the limit of {max}"
                    ));
                    return Some((Err(status), None));
                }
                // The whole message in one buffer, grown once (not doubled frame by frame).
                buf.reserve((5 + len).saturating_sub(buf.len()));
                if buf.len() >= 5 + len {
                    buf.advance(5);
                    let msg = buf.split_to(len).freeze();
                    if buf.is_empty() {
                        // Let the (possibly large) allocation go with this message.
                        buf = BytesMut::new();
                    }
                    return Some(match Req::decode_wire(msg) {
                        Ok(req) => (Ok(req), Some((body, buf))),
                        Err(e) => (
                            Err(Status::internal(format!("decoding a request: {e}"))),
                            None,
                        ),
                    });
                }
            }
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(mut data) = frame.into_data() {
                        buf.reserve(data.remaining());
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            let n = chunk.len();
                            buf.extend_from_slice(chunk);
                            data.advance(n);
                        }
                    }
                }
                Some(Err(e)) => return Some((Err(Status::from_error(e.into())), None)),
                None if buf.is_empty() => return None,
                None => {
                    let status = Status::internal("request stream ended inside a message");
                    return Some((Err(status), None));
                }
            }
        }
    });
    let stream: RequestStream<Req> = Box::pin(stream);
    Request::from_http(http::Request::from_parts(parts, stream))
}

/// One gRPC message frame: no compression, the length, the message.
fn frame<M: Message>(msg: &M) -> Result<Bytes, Status> {
    let len = msg.encoded_len();
    let prefix = u32::try_from(len)
        .map_err(|_| Status::out_of_range(format!("response of {len} bytes is too large")))?;
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(prefix);
    msg.encode(&mut buf)
        .map_err(|e| Status::internal(format!("encoding a response: {e}")))?;
    Ok(buf.freeze())
}

/// The trailers ending a stream with `status`.
fn trailers(status: &Status) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    if let Err(e) = status.add_header(&mut map) {
        tracing::debug!(error = %e, "status not representable as trailers");
    }
    map
}

/// The gRPC response to a stream of `responses`: each framed as it comes, then the status.
fn response<M: Message + Send + 'static>(
    responses: ReceiverStream<Result<M, Status>>,
) -> http::Response<tonic::body::Body> {
    let frames = futures::stream::unfold(Some(responses), |state| async move {
        let mut responses = state?;
        let (frame, next) = match responses.next().await {
            Some(Ok(msg)) => match frame(&msg) {
                Ok(bytes) => (Frame::data(bytes), Some(responses)),
                Err(status) => (Frame::trailers(trailers(&status)), None),
            },
            Some(Err(status)) => (Frame::trailers(trailers(&status)), None),
            None => (Frame::trailers(trailers(&Status::ok(""))), None),
        };
        Some((Ok::<_, Infallible>(frame), next))
    });
    let mut response = http::Response::new(tonic::body::Body::new(
        http_body_util::StreamBody::new(frames),
    ));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        tonic::metadata::GRPC_CONTENT_TYPE,
    );
    response
}

impl<B> Service<http::Request<B>> for AdsService
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let max = self.max_decoding_message_size;
        let ads = self.ads.clone();
        match req.uri().path() {
            SOTW_PATH => Box::pin(async move {
                let stream = ads.sotw(requests::<B, SotwRequest>(req, max));
                Ok(response::<SotwResponse>(stream.into_inner()))
            }),
            DELTA_PATH => Box::pin(async move {
                let stream = ads.delta(requests::<B, DeltaDiscoveryRequest>(req, max));
                Ok(response::<DeltaResponse>(stream.into_inner()))
            }),
            _ => Box::pin(async move {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(
                    Status::GRPC_STATUS,
                    (tonic::Code::Unimplemented as i32).into(),
                );
                headers.insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(response)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::envoy::envoy::config::core::v3::Node;
    use mesh_proto::envoy::envoy::service::discovery::v3::DiscoveryRequest;

    fn req(i: usize) -> DiscoveryRequest {
        DiscoveryRequest {
            node: Some(Node {
                id: format!("node-{i}"),
                ..Node::default()
            }),
            resource_names: (0..i * 100).map(|n| format!("cluster-{n}")).collect(),
            ..DiscoveryRequest::default()
        }
    }

    /// A request body delivering `bytes` in chunks of `chunk`.
    fn body(
        bytes: Vec<u8>,
        chunk: usize,
    ) -> http::Request<
        http_body_util::StreamBody<
            impl tokio_stream::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send,
        >,
    > {
        let chunks: Vec<Result<Frame<Bytes>, Infallible>> = bytes
            .chunks(chunk)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        http::Request::new(http_body_util::StreamBody::new(tokio_stream::iter(chunks)))
    }

    #[tokio::test]
    async fn requests_split_or_joined_across_frames_are_decoded() {
        let mut wire = Vec::new();
        for i in 0..3 {
            wire.extend_from_slice(&frame(&req(i)).unwrap());
        }
        for chunk in [1, 7, 4096, wire.len()] {
            let mut s =
                requests::<_, DiscoveryRequest>(body(wire.clone(), chunk), None).into_inner();
            for i in 0..3 {
                assert_eq!(s.next().await.unwrap().unwrap(), req(i), "chunk {chunk}");
            }
            assert!(s.next().await.is_none());
        }
        // Over the limit, compressed, or cut short: an error ends the stream.
        let big = frame(&req(2)).unwrap().to_vec();
        let mut s = requests::<_, DiscoveryRequest>(body(big.clone(), 64), Some(10)).into_inner();
        assert_eq!(
            s.next().await.unwrap().unwrap_err().code(),
            tonic::Code::OutOfRange
        );
        let mut compressed = big.clone();
        compressed[0] = 1;
        let mut s = requests::<_, DiscoveryRequest>(body(compressed, 64), None).into_inner();
        assert_eq!(
            s.next().await.unwrap().unwrap_err().code(),
            tonic::Code::Unimplemented
        );
        let cut = big[..big.len() - 1].to_vec();
        let mut s = requests::<_, DiscoveryRequest>(body(cut, 64), None).into_inner();
        assert_eq!(
            s.next().await.unwrap().unwrap_err().code(),
            tonic::Code::Internal
        );
        assert!(s.next().await.is_none());
    }
}
