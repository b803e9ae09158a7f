//! The `istio.mixer.v1.Mixer` gRPC service: Check (with deduplication) and Report.

use std::sync::Arc;

use mesh_proto::istio::mixer::v1::mixer_server::{Mixer, MixerServer};
use mesh_proto::istio::mixer::v1::{CheckRequest, CheckResponse, ReportRequest, ReportResponse};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::adapter::code_name;
use crate::check::check;
use crate::config::PolicyHandle;
use crate::dedup::Dedup;
use crate::metrics::MixerMetrics;
use crate::report::report;

/// How many Check deduplication ids are remembered.
pub const DEDUP_CAPACITY: usize = 10_000;

/// The Mixer service: the current policy, metrics and the deduplication memory.
#[derive(Clone)]
pub struct MixerService {
    policy: PolicyHandle,
    metrics: MixerMetrics,
    dedup: Arc<Mutex<Dedup<CheckResponse>>>,
}

impl MixerService {
    pub fn new(policy: PolicyHandle, metrics: MixerMetrics) -> Self {
        MixerService {
            policy,
            metrics,
            dedup: Arc::new(Mutex::new(Dedup::new(DEDUP_CAPACITY))),
        }
    }

    /// Answers a Check; a repeated non-empty `deduplication_id` gets the remembered answer.
    pub fn handle_check(&self, req: &CheckRequest) -> Result<CheckResponse, Status> {
        let id = req.deduplication_id.as_str();
        if !id.is_empty()
            && let Some(previous) = self.dedup.lock().get(id)
        {
            tracing::debug!(deduplication_id = id, "repeated check answered from memory");
            return Ok(previous);
        }
        let result = check(&self.policy.current(), req);
        match result {
            Ok(resp) => {
                let code = resp
                    .precondition
                    .as_ref()
                    .and_then(|p| p.status.as_ref())
                    .map_or(0, |s| s.code);
                self.metrics.check_answered(&code_name(code));
                if !id.is_empty() {
                    self.dedup.lock().insert(id, resp.clone());
                }
                Ok(resp)
            }
            Err(e) => {
                let status = Status::from(e.clone());
                tracing::warn!(error = %e, "check rejected");
                self.metrics
                    .check_answered(&code_name(status.code() as i32));
                Err(status)
            }
        }
    }

    /// Answers a Report.
    pub fn handle_report(&self, req: &ReportRequest) -> Result<ReportResponse, Status> {
        match report(req, &self.metrics) {
            Ok(_) => Ok(ReportResponse {}),
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
        self.handle_check(request.get_ref()).map(Response::new)
    }

    async fn report(
        &self,
        request: Request<ReportRequest>,
    ) -> Result<Response<ReportResponse>, Status> {
        self.handle_report(request.get_ref()).map(Response::new)
    }
}

/// Serves `service` on `listener` until `shutdown` resolves.
pub async fn serve_grpc(
    listener: TcpListener,
    service: MixerService,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(MixerServer::new(service))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
}
