//! The ADS service: `StreamAggregatedResources` (SotW) and `DeltaAggregatedResources` (Delta).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mesh_proto::envoy::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use mesh_proto::envoy::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::delta::Delta;
use super::sotw::Sotw;
use super::status::SyncStatus;
use super::stream;
use crate::metrics::PilotMetrics;
use crate::model::RegistryCache;
use crate::translate::Options;

/// What every stream shares.
pub(super) struct Shared {
    pub(super) registry: RegistryCache,
    pub(super) options: Options,
    pub(super) metrics: PilotMetrics,
    pub(super) status: SyncStatus,
    pub(super) shutdown: watch::Receiver<bool>,
    next_stream: AtomicU64,
}

impl Shared {
    pub(super) fn next_stream(&self) -> u64 {
        self.next_stream.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// The ADS server. Streams end when `shutdown` flips to `true` (so a graceful server stop does
/// not wait on long-lived proxy streams).
#[derive(Clone)]
pub struct AdsServer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AdsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdsServer").finish_non_exhaustive()
    }
}

impl AdsServer {
    /// A server translating the registries of `registry` with `options`.
    pub fn new(
        registry: RegistryCache,
        options: Options,
        metrics: PilotMetrics,
        status: SyncStatus,
        shutdown: watch::Receiver<bool>,
    ) -> AdsServer {
        AdsServer {
            shared: Arc::new(Shared {
                registry,
                options,
                metrics,
                status,
                shutdown,
                next_stream: AtomicU64::new(0),
            }),
        }
    }

    /// The tonic service to mount.
    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<AdsServer> {
        AggregatedDiscoveryServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(stream::serve::<Sotw>(
            self.shared.clone(),
            request.into_inner(),
            tx,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(stream::serve::<Delta>(
            self.shared.clone(),
            request.into_inner(),
            tx,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
