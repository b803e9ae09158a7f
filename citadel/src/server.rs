//! The certificate service (`istio.v1.auth.IstioCertificateService/CreateCertificate`) and the
//! process around it: listeners (plaintext gRPC, optional gRPC over TLS, monitoring with
//! `/roots.pem`), readiness, shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use std::future::IntoFuture;

use futures::FutureExt;
use mesh_identity::SpiffeId;
use mesh_proto::istio::v1::auth::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use mesh_proto::istio::v1::auth::{IstioCertificateRequest, IstioCertificateResponse};
use mesh_runtime::{Metrics, Readiness, StartError};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::authn::{
    Authenticators, CallerInfo, LocalTokenAuthenticator, PeerCertificateAuthenticator,
    TokenReviewAuthenticator,
};
use crate::ca::{CaError, CaSecret, CertificateAuthority, SignError, TtlPolicy};
use crate::metrics::{CitadelMetrics, CsrResult};
use crate::tls::{MtlsConnectInfo, TlsSetupError};
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
    /// Address of the gRPC-over-TLS listener, where a caller may renew with its current
    /// certificate; none: no TLS listener.
    pub tls_addr: Option<SocketAddr>,
    /// A PEM file of further roots to trust (beside `STATE/extra-roots.pem`).
    pub extra_roots: Option<PathBuf>,
    /// Check bearer tokens with the Kubernetes TokenReview API (audience `istio-ca`).
    pub kube_tokenreview: bool,
    /// Keep the CA in the Secret `istio-ca-secret` of this namespace (create-or-load) instead
    /// of `ca-cert.pem`/`ca-key.pem` in the state directory; none: the state directory.
    pub ca_secret_namespace: Option<String>,
}

impl Config {
    /// Local mode: plaintext gRPC and monitoring, local tokens only, no extra roots.
    pub fn local(
        grpc_addr: SocketAddr,
        monitoring_addr: SocketAddr,
        state_dir: PathBuf,
        ttl: TtlPolicy,
    ) -> Self {
        Config {
            grpc_addr,
            monitoring_addr,
            state_dir,
            trust_domain: "cluster.local".into(),
            ttl,
            tls_addr: None,
            extra_roots: None,
            kube_tokenreview: false,
            ca_secret_namespace: None,
        }
    }
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
    #[error("cannot set up the TLS listener: {0}")]
    Tls(TlsSetupError),
    #[error("cannot create the Kubernetes client (TokenReview, CA Secret): {0}")]
    Kube(kube::Error),
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
        let mut caller = CallerInfo::from_metadata(request.metadata());
        let mut remote = request.remote_addr();
        if let Some(info) = request.extensions().get::<MtlsConnectInfo>() {
            remote = info.remote_addr;
            caller = caller.with_peer_chain(info.peer_chain.clone());
        }
        let peer = remote.map(|a| a.to_string()).unwrap_or_default();
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
    tls: Option<(TcpListener, Arc<rustls::ServerConfig>)>,
    monitoring: TcpListener,
    service: CitadelService,
    trust_bundle_pem: Arc<String>,
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
        let tls_listener = match config.tls_addr {
            Some(addr) => Some(
                mesh_runtime::bind_tcp("tls", addr)
                    .await
                    .map_err(RunError::Start)?,
            ),
            None => None,
        };
        let monitoring = mesh_runtime::bind_tcp("monitoring", config.monitoring_addr)
            .await
            .map_err(RunError::Start)?;
        let readiness = Readiness::new(&[READY_CA]);
        let metrics = Metrics::default();

        let kube = if config.kube_tokenreview || config.ca_secret_namespace.is_some() {
            Some(kube::Client::try_default().await.map_err(RunError::Kube)?)
        } else {
            None
        };
        let mut ca = match (&config.ca_secret_namespace, &kube) {
            (Some(namespace), Some(client)) => {
                let mut ca = CaSecret::new(namespace.clone())
                    .load_or_create(client.clone(), &config.trust_domain)
                    .await
                    .map_err(RunError::Ca)?;
                let extra = config
                    .state_dir
                    .join(crate::ca::authority::EXTRA_ROOTS_FILE);
                if extra.exists() {
                    ca.add_extra_roots_file(&extra).map_err(RunError::Ca)?;
                }
                ca
            }
            _ => CertificateAuthority::load_or_create(&config.state_dir, &config.trust_domain)
                .map_err(RunError::Ca)?,
        };
        if let Some(path) = &config.extra_roots {
            ca.add_extra_roots_file(path).map_err(RunError::Ca)?;
        }
        let key = IssuerKey::load_or_create(&config.state_dir).map_err(RunError::Token)?;

        // First success wins: the current certificate (TLS listener only), a Kubernetes
        // service-account token, a local token.
        let mut authenticators = Authenticators::new();
        let tls = match tls_listener {
            Some(listener) => {
                authenticators = authenticators.with(PeerCertificateAuthenticator::new(
                    config.trust_domain.clone(),
                ));
                Some((
                    listener,
                    crate::tls::server_config(&ca).map_err(RunError::Tls)?,
                ))
            }
            None => None,
        };
        if config.kube_tokenreview
            && let Some(client) = kube
        {
            authenticators = authenticators.with(TokenReviewAuthenticator::new(client));
        }
        let authenticators = authenticators.with(LocalTokenAuthenticator::new(key));
        tracing::info!(?authenticators, "caller authentication");
        let trust_bundle_pem = Arc::new(ca.trust_bundle_pem());
        let service = CitadelService::new(
            Arc::new(ca),
            authenticators,
            config.ttl,
            config.trust_domain,
            CitadelMetrics::register(&metrics),
        );
        Ok(Citadel {
            grpc,
            tls,
            monitoring,
            service,
            trust_bundle_pem,
            readiness,
            metrics,
        })
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.grpc.local_addr()
    }

    /// The bound TLS gRPC address, if there is a TLS listener.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|(l, _)| l.local_addr().ok())
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
        let tls_addr = self.tls_addr();
        let bundle = self.trust_bundle_pem.clone();
        let router = mesh_runtime::monitoring_router(self.readiness.clone(), self.metrics).route(
            "/roots.pem",
            axum::routing::get(move || {
                let bundle = bundle.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/x-pem-file")],
                        String::clone(&bundle),
                    )
                }
            }),
        );
        let monitoring = tokio::spawn(
            axum::serve(self.monitoring, router)
                .with_graceful_shutdown(shutdown.clone())
                .into_future(),
        );
        let tls = self.tls.map(|(listener, config)| {
            let server = tonic::transport::Server::builder()
                .add_service(self.service.clone().into_server())
                .serve_with_incoming_shutdown(
                    crate::tls::incoming(listener, config, shutdown.clone()),
                    shutdown.clone(),
                );
            tokio::spawn(server)
        });
        self.readiness.set(READY_CA, true);
        tracing::info!(?grpc_addr, ?tls_addr, ?monitoring_addr, "citadel serving");
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
        if let Some(tls) = tls {
            tls.await
                .map_err(|e| RunError::Monitoring(std::io::Error::other(e)))?
                .map_err(RunError::Grpc)?;
        }
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
