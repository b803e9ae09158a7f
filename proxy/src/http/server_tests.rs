//! HTTP/2, gRPC and upgrades through a sidecar pair (client outbound → mTLS → server inbound →
//! application).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_proto::google::rpc::Status as RpcStatus;
use mesh_proto::istio::mixer::v1::mixer_client::MixerClient;
use mesh_proto::istio::mixer::v1::mixer_server::{Mixer, MixerServer};
use mesh_proto::istio::mixer::v1::{
    CheckRequest, CheckResponse, ReportRequest, ReportResponse, check_response,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::tcp::testkit::{PORT, SERVICE, mesh, spiffe, wait_for_line};

/// A gRPC application: `Check` answers with the deduplication id as the precondition message,
/// or fails with FAILED_PRECONDITION when the id is `fail`. Counts the HTTP/2 connections.
struct Echo;

#[tonic::async_trait]
impl Mixer for Echo {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let id = request.into_inner().deduplication_id;
        if id == "fail" {
            return Err(tonic::Status::failed_precondition(format!("refused: {id}")));
        }
        Ok(tonic::Response::new(CheckResponse {
            precondition: Some(check_response::PreconditionResult {
                status: Some(RpcStatus {
                    code: 0,
                    message: id,
                    details: vec![],
                }),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
    async fn report(
        &self,
        _: tonic::Request<ReportRequest>,
    ) -> Result<tonic::Response<ReportResponse>, tonic::Status> {
        Ok(tonic::Response::new(ReportResponse::default()))
    }
}

/// Serves `Echo` on a new port; returns the address and a count of accepted connections.
async fn grpc_app() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let incoming = async_stream_of(l, count);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MixerServer::new(Echo))
            .serve_with_incoming_shutdown(incoming, std::future::pending()),
    );
    (addr, accepted)
}

/// The listener's connections as a stream, counting them.
fn async_stream_of(
    l: TcpListener,
    count: Arc<AtomicUsize>,
) -> impl futures::Stream<Item = std::io::Result<TcpStream>> {
    futures::stream::unfold((l, count), |(l, count)| async move {
        let r = l.accept().await.map(|(s, _)| s);
        count.fetch_add(1, Ordering::SeqCst);
        Some((r, (l, count)))
    })
}

async fn grpc_client(outbound: SocketAddr) -> MixerClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{outbound}"))
        .unwrap()
        .origin(format!("http://{SERVICE}:{PORT}").parse().unwrap())
        .connect()
        .await
        .unwrap();
    MixerClient::new(channel)
}

fn check(id: &str) -> CheckRequest {
    CheckRequest {
        deduplication_id: id.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn grpc_crosses_two_hops_with_trailers_and_status_labels() {
    let (app, app_conns) = grpc_app().await;
    let m = mesh(app).await;
    let mut client = grpc_client(m.outbound).await;

    let ok = client.check(check("hello")).await.unwrap().into_inner();
    assert_eq!(
        ok.precondition.unwrap().status.unwrap().message,
        "hello",
        "the reply came back"
    );
    // A non-OK status with its message travels in the trailers across both hops.
    let err = client.check(check("fail")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(err.message(), "refused: fail");

    // Several concurrent calls are multiplexed: the application still sees one connection
    // (HTTP/2 from the server sidecar), and so does the server sidecar from the client one.
    let calls = (0..8).map(|i| {
        let mut c = client.clone();
        async move { c.check(check(&format!("n{i}"))).await.unwrap() }
    });
    futures::future::join_all(calls).await;
    assert_eq!(
        app_conns.load(Ordering::SeqCst),
        1,
        "one upstream h2 connection"
    );

    for (metrics, reporter) in [
        (&m.client_metrics, "reporter=\"source\""),
        (&m.server_metrics, "reporter=\"destination\""),
    ] {
        wait_for_line(
            metrics,
            &[
                "istio_requests_total{",
                reporter,
                "request_protocol=\"grpc\"",
                "grpc_response_status=\"9\"",
                "response_code=\"200\"",
            ],
        )
        .await;
        wait_for_line(
            metrics,
            &[
                "istio_requests_total{",
                reporter,
                "grpc_response_status=\"0\"",
                " 9",
            ],
        )
        .await;
    }
    // The destination knows the caller from the mTLS handshake.
    wait_for_line(
        &m.server_metrics,
        &[
            "istio_requests_total{",
            &format!("source_principal=\"{}\"", spiffe("client")),
            "connection_security_policy=\"mutual_tls\"",
        ],
    )
    .await;
}

/// An application (HTTP/1.1 and h2c) that switches to an echo protocol on `Upgrade: echo`,
/// and answers other requests with their HTTP version.
async fn upgrade_app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = service_fn(|mut req: Request<Incoming>| async move {
                    if req.headers().get("upgrade").is_none() {
                        let body = format!("{:?}", req.version());
                        return Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(body))));
                    }
                    let on = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let up = on.await.unwrap();
                        let mut io = TokioIo::new(up);
                        let mut buf = [0u8; 1024];
                        loop {
                            let n = io.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            let _ = io.write_all(&buf[..n]).await;
                        }
                    });
                    let mut resp = Response::new(Full::new(Bytes::new()));
                    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                    resp.headers_mut()
                        .insert("connection", "upgrade".parse().unwrap());
                    resp.headers_mut()
                        .insert("upgrade", "echo".parse().unwrap());
                    Ok(resp)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn upgraded_connections_are_spliced_both_ways() {
    let m = mesh(upgrade_app().await).await;
    let mut c = TcpStream::connect(m.outbound).await.unwrap();
    c.write_all(
        format!(
            "GET /ws HTTP/1.1\r\nHost: {SERVICE}:{PORT}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(c.read(&mut b).await.unwrap(), 1, "closed after {head:?}");
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for msg in [&b"ping"[..], b"second message"] {
        c.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg);
    }
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served_and_only_grpc_reaches_the_app_as_http2() {
    let m = mesh(upgrade_app().await).await;
    // (client speaks h2c, gRPC content type, version the application sees): between the
    // sidecars the request stays HTTP/2; to the plaintext application only gRPC does.
    for (h2, grpc, want) in [
        (true, false, "HTTP/1.1"),
        (true, true, "HTTP/2.0"),
        (false, false, "HTTP/1.1"),
    ] {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .http2_only(h2)
            .build_http::<Full<Bytes>>();
        let mut req = Request::get(format!("http://{}/v", m.outbound))
            .header("host", format!("{SERVICE}:{PORT}"));
        if grpc {
            req = req.header("content-type", "application/grpc");
        }
        let req = req.body(Full::new(Bytes::new())).unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, want.as_bytes(), "h2={h2} grpc={grpc}");
    }
}
