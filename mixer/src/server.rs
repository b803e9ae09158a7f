//! The `istio.mixer.v1.Mixer` gRPC service: Check (with deduplication) and Report.

use std::collections::HashMap;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use mesh_proto::istio::mixer::v1::check_request::QuotaParams;
use mesh_proto::istio::mixer::v1::mixer_server::{Mixer, MixerServer};
use mesh_proto::istio::mixer::v1::{CheckRequest, CheckResponse, ReportRequest, ReportResponse};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::adapter::prometheus::PrometheusSink;
use crate::check::{Checked, RequestError, check_wire, check_with_quotas};
use crate::config::{Policy, PolicyHandle};
use crate::dedup::Dedup;
use crate::metrics::MixerMetrics;
use crate::quota::QuotaBackends;
use crate::report::{ReportAdapters, dispatch, report};
use crate::unary::GrpcService;
use crate::wire::WireCheck;

/// How many Check deduplication ids are remembered.
pub const DEDUP_CAPACITY: usize = 10_000;

/// The Mixer service: the current policy, metrics, quota counters, the Report adapters
/// (prometheus series, stdio outputs, span exporters) and the deduplication memory.
#[derive(Clone)]
pub struct MixerService {
    policy: PolicyHandle,
    metrics: MixerMetrics,
    dedup: Arc<Mutex<Dedup<CheckResponse>>>,
    quotas: QuotaBackends,
    adapters: ReportAdapters,
}

impl MixerService {
    /// A service whose prometheus adapter series go to a registry of their own (see
    /// [`MixerService::with_prometheus`]).
    pub fn new(policy: PolicyHandle, metrics: MixerMetrics) -> Self {
        MixerService {
            policy,
            metrics,
            dedup: Arc::new(Mutex::new(Dedup::new(DEDUP_CAPACITY))),
            quotas: QuotaBackends::default(),
            adapters: ReportAdapters::new(PrometheusSink::new(mesh_runtime::Metrics::default())),
        }
    }

    /// Sends the prometheus adapter's series to `sink` (Mixer's own `/metrics`).
    pub fn with_prometheus(mut self, sink: PrometheusSink) -> Self {
        self.adapters.prometheus = sink;
        self
    }

    /// Answers a Check; a repeated non-empty `deduplication_id` gets the remembered answer.
    pub async fn handle_check(&self, req: &CheckRequest) -> Result<CheckResponse, Status> {
        self.answer_check(&req.deduplication_id, &req.quotas, |policy| {
            check_with_quotas(policy, req)
        })
        .await
    }

    /// [`MixerService::handle_check`] of a request's protobuf bytes, read without prost's
    /// intermediate maps ([`WireCheck`]); bytes that are no `CheckRequest` are INVALID_ARGUMENT.
    pub async fn handle_check_bytes(&self, bytes: &[u8]) -> Result<CheckResponse, Status> {
        let req = match WireCheck::parse(bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "check rejected");
                self.metrics
                    .check_answered_code(tonic::Code::InvalidArgument as i32);
                return Err(Status::invalid_argument(e.to_string()));
            }
        };
        self.answer_check(req.deduplication_id, &req.quotas, |policy| {
            check_wire(policy, &req)
        })
        .await
    }

    /// Dedup, decision (`decide`), quota allocation, metrics.
    async fn answer_check(
        &self,
        id: &str,
        requested: &HashMap<String, QuotaParams>,
        decide: impl FnOnce(&Policy) -> Result<Checked, RequestError>,
    ) -> Result<CheckResponse, Status> {
        if !id.is_empty()
            && let Some(previous) = self.dedup.lock().get(id)
        {
            tracing::debug!(deduplication_id = id, "repeated check answered from memory");
            return Ok(previous);
        }
        let policy = self.policy.current();
        let result = decide(&policy);
        match result {
            Ok(checked) => {
                let mut resp = checked.response;
                if !checked.quota_calls.is_empty() {
                    let granted = self
                        .quotas
                        .allocate(&policy, &checked.quota_calls, requested, id)
                        .await;
                    resp.quotas.extend(granted);
                }
                let code = resp
                    .precondition
                    .as_ref()
                    .and_then(|p| p.status.as_ref())
                    .map_or(0, |s| s.code);
                self.metrics.check_answered_code(code);
                if !id.is_empty() {
                    self.dedup.lock().insert(id, resp.clone());
                }
                Ok(resp)
            }
            Err(e) => {
                let status = Status::from(e.clone());
                tracing::warn!(error = %e, "check rejected");
                self.metrics.check_answered_code(status.code() as i32);
                Err(status)
            }
        }
    }

    /// Counts a Check answered with `code` before it reached the service (a bad frame).
    pub fn count_check_code(&self, code: i32) {
        self.metrics.check_answered_code(code);
    }

    /// Answers a Report.
    pub fn handle_report(&self, req: &ReportRequest) -> Result<ReportResponse, Status> {
        match report(req, &self.metrics) {
            Ok(bags) => {
                dispatch(&self.policy.current(), &bags, &self.adapters);
                Ok(ReportResponse {})
            }
            Err(e) => {
                tracing::warn!(error = %e, "report rejected");
                Err(e.into())
            }
        }
    }
}

#[tonic::async_trait]
impl Mixer for MixerService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        self.handle_check(request.get_ref())
            .await
            .map(Response::new)
    }

    async fn report(
        &self,
        request: Request<ReportRequest>,
    ) -> Result<Response<ReportResponse>, Status> {
        self.handle_report(request.get_ref()).map(Response::new)
    }
}

/// A request whose bytes are not a valid message (truncated, bad wire type) is a malformed
/// request: INVALID_ARGUMENT, where tonic's decoder says INTERNAL.
pub fn decode_errors_are_invalid_argument<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let headers = resp.headers_mut();
    let decode_error = headers.get("grpc-status").is_some_and(|v| v == "13")
        && headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| {
                m.starts_with("failed%20to%20decode") || m.starts_with("failed to decode")
            });
    if decode_error {
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
    }
    resp
}

/// HTTP/2 settings of the gRPC server.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 8 << 20;
const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// Serves `service` on `listener` until `shutdown` resolves, then lets the open calls finish.
///
/// Served by hyper's HTTP/2 connection directly with [`GrpcService`]: Check without tonic's
/// codec, everything else through the generated `MixerServer` (tonic's router and transport
/// layers are left out); per connection
/// `TCP_NODELAY`, 1 MiB stream / 8 MiB connection windows, 1024 concurrent streams.
pub async fn serve_grpc(
    listener: TcpListener,
    service: MixerService,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_hyper(listener, GrpcService::new(service), shutdown).await
}

/// [`serve_grpc`] with every call, Check included, through the generated `MixerServer` and
/// tonic's codec (the former path, kept to compare with in the bench).
pub async fn serve_grpc_generated(
    listener: TcpListener,
    service: MixerService,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_hyper(listener, GrpcService::generated(service), shutdown).await
}

async fn serve_hyper(
    listener: TcpListener,
    svc: GrpcService,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of descriptors and the like: say so, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        // Small unary answers go out at once (no Nagle delay behind the previous one).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let conn = builder.serve_connection(TokioIo::new(stream), svc.clone());
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "grpc connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The same service through tonic's `Server` (kept to compare with in the bench).
pub async fn serve_grpc_tonic(
    listener: TcpListener,
    service: MixerService,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(
            decode_errors_are_invalid_argument::<tonic::body::Body>,
        ))
        .add_service(MixerServer::new(service))
        .serve_with_incoming_shutdown(
            tokio_stream::StreamExt::map(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                |conn| {
                    conn.inspect(|s| {
                        if let Err(e) = s.set_nodelay(true) {
                            tracing::debug!(error = %e, "TCP_NODELAY not set");
                        }
                    })
                },
            ),
            shutdown,
        )
        .await
}
