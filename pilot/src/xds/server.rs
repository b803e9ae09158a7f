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
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::convergence::Convergence;
use super::delta::Delta;
use super::push::{PushContext, PushKind, Pusher};
use super::request::SotwRequest;
use super::service::AdsService;
use super::sotw::Sotw;
use super::status::SyncStatus;
use super::stream;
use super::tls::XdsPeer;
use super::wire::{DeltaResponse, SotwResponse};
use crate::metrics::PilotMetrics;
use crate::model::RegistryCache;
use crate::translate::Options;

/// What every stream shares.
pub(super) struct Shared {
    /// The current push; streams recompute when it changes.
    pub(super) pushes: watch::Receiver<Arc<PushContext>>,
    pub(super) convergence: Arc<Convergence>,
    /// Pushes in flight (computed and not yet answered by their proxy).
    pub(super) push_permits: Arc<tokio::sync::Semaphore>,
    pub(super) metrics: PilotMetrics,
    pub(super) status: SyncStatus,
    pub(super) shutdown: watch::Receiver<bool>,
    /// The SotW resource-name lists of every stream, one copy per distinct list.
    pub(super) names: super::names::NameInterner,
    /// SotW selections shared by the streams naming the same resources.
    pub(super) selections: super::sotw::Selections,
    /// Gateway credentials served as SDS secrets (none: no secrets are served).
    pub(super) credentials: std::sync::OnceLock<crate::sds::CredentialSource>,
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
    /// A server translating the snapshots of `registry` with `options`. Starts (on the current
    /// Tokio runtime) the task debouncing snapshot changes into pushes; it ends with the
    /// snapshot sender or when `shutdown` flips.
    pub fn new(
        registry: RegistryCache,
        options: Options,
        metrics: PilotMetrics,
        status: SyncStatus,
        shutdown: watch::Receiver<bool>,
    ) -> AdsServer {
        let mut snapshots = registry.subscribe();
        let initial = snapshots.borrow_and_update().clone();
        let first = PushContext::build(
            1,
            PushKind::Full,
            Instant::now(),
            initial,
            registry.domain_suffix(),
            &options,
            None,
        );
        registry.offer(&first.snapshot, &first.registry);
        let (push_tx, push_rx) = watch::channel(Arc::new(first));
        let convergence = Arc::new(Convergence::new(metrics.convergence_time.clone()));
        let pusher = Pusher {
            snapshots,
            pushes: push_tx,
            domain_suffix: registry.domain_suffix().into(),
            options,
            metrics: metrics.clone(),
            convergence: convergence.clone(),
            shutdown: shutdown.clone(),
            cache: Some(registry.clone()),
        };
        tokio::spawn(pusher.run());
        AdsServer {
            shared: Arc::new(Shared {
                pushes: push_rx,
                convergence,
                push_permits: Arc::new(tokio::sync::Semaphore::new(
                    super::stream::PUSH_CONCURRENCY,
                )),
                metrics,
                status,
                shutdown,
                names: super::names::NameInterner::default(),
                selections: super::sotw::Selections::default(),
                credentials: std::sync::OnceLock::new(),
                next_stream: AtomicU64::new(0),
            }),
        }
    }

    /// Serves gateway secrets (SDS) from `source` on the streams opened from now on (set it
    /// before serving; a second source is ignored, with a warning). See `crate::sds`.
    pub fn with_credentials(self, source: crate::sds::CredentialSource) -> AdsServer {
        if self.shared.credentials.set(source).is_err() {
            tracing::warn!("ads server already has a credential source; the new one is ignored");
        }
        self
    }

    /// The pushes as they are published (the current one first).
    pub fn pushes(&self) -> watch::Receiver<Arc<PushContext>> {
        self.shared.pushes.clone()
    }

    /// What every stream shares (tests look inside).
    #[cfg(test)]
    pub(super) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The tonic service to mount (responses written from the shared encoded resources).
    pub fn into_service(self) -> AdsService {
        AdsService::new(self)
    }

    /// The generated service over the decoded messages (each response decoded again: for
    /// wrappers that need the generated trait; [`AdsServer::into_service`] is the fast one).
    pub fn into_generated_service(self) -> AggregatedDiscoveryServiceServer<AdsServer> {
        AggregatedDiscoveryServiceServer::new(self)
    }

    /// Serves a SotW stream.
    pub(super) fn sotw(
        &self,
        request: Request<impl Requests<SotwRequest>>,
    ) -> Response<ReceiverStream<Result<SotwResponse, Status>>> {
        let (tx, rx) = mpsc::channel(16);
        let peer = request.extensions().get::<XdsPeer>().cloned();
        tokio::spawn(stream::serve::<Sotw>(
            self.shared.clone(),
            peer,
            request.into_inner(),
            tx,
        ));
        Response::new(ReceiverStream::new(rx))
    }

    /// Serves a Delta stream.
    pub(super) fn delta(
        &self,
        request: Request<impl Requests<DeltaDiscoveryRequest>>,
    ) -> Response<ReceiverStream<Result<DeltaResponse, Status>>> {
        let (tx, rx) = mpsc::channel(16);
        let peer = request.extensions().get::<XdsPeer>().cloned();
        tokio::spawn(stream::serve::<Delta>(
            self.shared.clone(),
            peer,
            request.into_inner(),
            tx,
        ));
        Response::new(ReceiverStream::new(rx))
    }
}

/// A stream of decoded requests.
pub(super) trait Requests<T>:
    tokio_stream::Stream<Item = Result<T, Status>> + Unpin + Send + 'static
{
}

impl<T, S> Requests<T> for S where
    S: tokio_stream::Stream<Item = Result<T, Status>> + Unpin + Send + 'static
{
}

type Decoded<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = Decoded<DiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        use tokio_stream::StreamExt;
        let request = request.map(|s| s.map(|r| r.map(SotwRequest::from)));
        let stream = self.sotw(request).into_inner();
        Ok(Response::new(Box::pin(
            stream.map(|r| r.map(|r| r.decoded())),
        )))
    }

    type DeltaAggregatedResourcesStream = Decoded<DeltaDiscoveryResponse>;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        use tokio_stream::StreamExt;
        let stream = self.delta(request).into_inner();
        Ok(Response::new(Box::pin(
            stream.map(|r| r.map(|r| r.decoded())),
        )))
    }
}
