//! The certificate service (`istio.v1.auth.IstioCertificateService/CreateCertificate`) and the
//! process around it: listeners, monitoring, readiness, shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use futures::FutureExt;
use mesh_identity::SpiffeId;
use mesh_proto::istio::v1::auth::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use mesh_proto::istio::v1::auth::{IstioCertificateRequest, IstioCertificateResponse};
use mesh_runtime::{Metrics, Readiness, StartError};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::authn::{Authenticators, CallerInfo, LocalTokenAuthenticator};
use crate::ca::{CaError, CertificateAuthority, SignError, TtlPolicy};
use crate::metrics::{CitadelMetrics, CsrResult};
use crate::token::{IssuerKey, TokenError};

/// Readiness condition: the CA's root is loaded.
pub const READY_CA: &str = "ca";

/// What Citadel needs to run (from the command line).
#[derive(Debug, Clone)]
pub struct Config {
    pub grpc_addr: SocketAddr,
    pub monitoring_addr: SocketAddr,
    pub state_dir: PathBuf,
    pub trust_domain: String,
    pub ttl: TtlPolicy,
}

/// Why Citadel could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Shown without a source chain: the bind error already names its cause.
    #[error("{0}")]
    Start(StartError),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot load the CA: {0}")]
    Ca(CaError),
    #[error("cannot load the token issuer key: {0}")]
    Token(TokenError),
    /// tonic's transport error says little itself; the detail is in its source.
    #[error("grpc server failed")]
    Grpc(#[source] tonic::transport::Error),
    #[error("monitoring server failed: {0}")]
    Monitoring(std::io::Error),
}

/// The gRPC certificate service.
#[derive(Clone)]
pub struct CitadelService {
    ca: Arc<CertificateAuthority>,
    authenticators: Arc<Authenticators>,
    ttl: TtlPolicy,
    trust_domain: String,
    metrics: CitadelMetrics,
}

impl CitadelService {
    pub fn new(
        ca: Arc<CertificateAuthority>,
        authenticators: Authenticators,
        ttl: TtlPolicy,
        trust_domain: String,
        metrics: CitadelMetrics,
    ) -> Self {
        CitadelService {
            ca,
            authenticators: Arc::new(authenticators),
            ttl,
            trust_domain,
            metrics,
        }
    }

    /// The service wrapped for tonic.
    pub fn into_server(self) -> IstioCertificateServiceServer<Self> {
        IstioCertificateServiceServer::new(self)
    }

    fn refuse(&self, result: CsrResult, status: Status) -> Status {
        self.metrics.record(result);
        status
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CitadelService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let caller = CallerInfo::from_metadata(request.metadata());
        let who = match self.authenticators.authenticate(&caller).await {
            Ok(who) => who,
            Err(reason) => {
                tracing::warn!(%peer, %reason, "certificate request not authenticated");
                return Err(self.refuse(
                    CsrResult::Unauthenticated,
                    Status::unauthenticated(format!("authentication failed: {reason}")),
                ));
            }
        };
        let id = SpiffeId::new(
            self.trust_domain.clone(),
            who.namespace.clone(),
            who.service_account.clone(),
        )
        .map_err(|e| {
            self.refuse(
                CsrResult::Unauthenticated,
                Status::unauthenticated(format!("caller identity unusable: {e}")),
            )
        })?;
        let req = request.into_inner();
        let ttl = self.ttl.resolve(req.validity_duration).map_err(|e| {
            tracing::warn!(%peer, spiffe_id = %id, error = %e, "certificate request refused");
            self.refuse(
                CsrResult::TtlTooLong,
                Status::invalid_argument(e.to_string()),
            )
        })?;
        let chain = self.ca.sign(&req.csr, &id, ttl).map_err(|e| match e {
            SignError::Csr(_) => {
                tracing::warn!(%peer, spiffe_id = %id, error = %e, "certificate request refused");
                self.refuse(
                    CsrResult::InvalidCsr,
                    Status::invalid_argument(e.to_string()),
                )
            }
            _ => {
                tracing::error!(%peer, spiffe_id = %id, error = %e, "cannot sign certificate");
                self.refuse(CsrResult::SignError, Status::internal(e.to_string()))
            }
        })?;
        self.metrics.record(CsrResult::Success);
        tracing::info!(
            %peer,
            spiffe_id = %id,
            authenticated_by = who.by,
            ttl_secs = ttl.as_secs(),
            "certificate issued"
        );
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: chain,
        }))
    }
}

/// A Citadel with its listeners bound and its CA loaded, ready to serve.
pub struct Citadel {
    grpc: TcpListener,
    monitoring: TcpListener,
    service: CitadelService,
    readiness: Readiness,
    metrics: Metrics,
}

impl Citadel {
    /// Checks the configuration, binds both listeners, loads (or creates) the CA and the token
    /// issuer key.
    pub async fn bind(config: Config) -> Result<Self, RunError> {
        SpiffeId::new(config.trust_domain.clone(), "ns", "sa").map_err(|_| {
            RunError::Config(format!("invalid trust domain {:?}", config.trust_domain))
        })?;
        if config.ttl.default > config.ttl.max {
            return Err(RunError::Config(format!(
                "--default-ttl {}s exceeds --max-ttl {}s",
                config.ttl.default.as_secs(),
                config.ttl.max.as_secs()
            )));
        }
        if config.ttl.default.is_zero() {
            return Err(RunError::Config("--default-ttl must be positive".into()));
        }
        let grpc = mesh_runtime::bind_tcp("grpc", config.grpc_addr)
            .await
            .map_err(RunError::Start)?;
        let monitoring = mesh_runtime::bind_tcp("monitoring", config.monitoring_addr)
            .await
            .map_err(RunError::Start)?;
        let readiness = Readiness::new(&[READY_CA]);
        let metrics = Metrics::default();

        let ca = CertificateAuthority::load_or_create(&config.state_dir, &config.trust_domain)
            .map_err(RunError::Ca)?;
        let key = IssuerKey::load_or_create(&config.state_dir).map_err(RunError::Token)?;
        let authenticators = Authenticators::new().with(LocalTokenAuthenticator::new(key));
        let service = CitadelService::new(
            Arc::new(ca),
            authenticators,
            config.ttl,
            config.trust_domain,
            CitadelMetrics::register(&metrics),
        );
        Ok(Citadel {
            grpc,
            monitoring,
            service,
            readiness,
            metrics,
        })
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.grpc.local_addr()
    }

    /// The bound monitoring address.
    pub fn monitoring_addr(&self) -> std::io::Result<SocketAddr> {
        self.monitoring.local_addr()
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), RunError> {
        let shutdown = shutdown.shared();
        let grpc_addr = self.grpc.local_addr().ok();
        let monitoring_addr = self.monitoring.local_addr().ok();
        let monitoring = tokio::spawn(mesh_runtime::serve_monitoring(
            self.monitoring,
            self.readiness.clone(),
            self.metrics,
            shutdown.clone(),
        ));
        self.readiness.set(READY_CA, true);
        tracing::info!(?grpc_addr, ?monitoring_addr, "citadel serving");
        let grpc = tonic::transport::Server::builder()
            .add_service(self.service.into_server())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(self.grpc),
                shutdown,
            )
            .await;
        let monitoring = monitoring
            .await
            .map_err(|e| RunError::Monitoring(std::io::Error::other(e)))?;
        grpc.map_err(RunError::Grpc)?;
        monitoring.map_err(RunError::Monitoring)?;
        tracing::info!("citadel stopped");
        Ok(())
    }
}

/// Binds, loads the CA and serves until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    Citadel::bind(config).await?.serve(shutdown).await
}
