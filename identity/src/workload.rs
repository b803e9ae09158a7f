//! The workload's certificate: fetched from Citadel with the workload's token, held in memory,
//! renewed in the background at half its life, and turned into rustls configurations.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use mesh_proto::istio::v1::auth::IstioCertificateRequest;
use mesh_proto::istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;
use parking_lot::{Mutex, RwLock};
use rand::Rng;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, ServerConfig};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tonic::transport::{Channel, Endpoint};
use x509_parser::prelude::FromDer;

use crate::csr;
use crate::spiffe::{SpiffeId, spiffe_id_of};
use crate::tls::{MeshTls, TlsError, TlsMaterial};

/// How to obtain the workload certificate.
#[derive(Clone)]
pub struct IdentityConfig {
    /// Citadel's gRPC address, e.g. `http://127.0.0.1:8060`.
    pub citadel_addr: String,
    /// The bearer token proving the workload's service account.
    pub token: String,
    /// Requested certificate lifetime.
    pub ttl: Duration,
    /// The mesh trust domain; Citadel must issue an identity inside it.
    pub trust_domain: String,
}

impl std::fmt::Debug for IdentityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is never printed.
        f.debug_struct("IdentityConfig")
            .field("citadel_addr", &self.citadel_addr)
            .field("ttl", &self.ttl)
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

/// Why the workload certificate could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// tonic's transport error says little itself; the detail is in its source.
    #[error("invalid citadel address {addr:?}")]
    Address {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the token cannot be sent as a gRPC header (it holds characters not allowed there)")]
    TokenEncoding,
    #[error(transparent)]
    Csr(#[from] csr::CsrError),
    #[error("citadel refused the certificate request: {code:?}: {message}")]
    Rpc { code: tonic::Code, message: String },
    #[error("citadel returned an unusable certificate chain: {0}")]
    BadChain(String),
    #[error("citadel issued {issued}, outside trust domain {trust_domain}")]
    TrustDomain {
        issued: String,
        trust_domain: String,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl From<tonic::Status> for IdentityError {
    fn from(s: tonic::Status) -> Self {
        IdentityError::Rpc {
            code: s.code(),
            message: s.message().to_string(),
        }
    }
}

/// One issued certificate and everything built from it.
struct Issued {
    id: SpiffeId,
    /// When the certificate arrived, or its `notBefore` if later. Citadel backdates
    /// `notBefore`, so renewal is timed from here rather than from `notBefore`.
    valid_from: SystemTime,
    not_after: SystemTime,
    tls: MeshTls,
    /// Client configurations per (sorted) expected-SAN list.
    client_configs: Mutex<HashMap<Vec<String>, Arc<ClientConfig>>>,
}

impl Issued {
    fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.valid_from)
            .unwrap_or_default()
    }
}

/// Asks Citadel for certificates.
#[derive(Clone)]
struct Fetcher {
    client: IstioCertificateServiceClient<Channel>,
    token: String,
    ttl: Duration,
    trust_domain: String,
}

impl Fetcher {
    fn new(config: &IdentityConfig) -> Result<Self, IdentityError> {
        let endpoint = Endpoint::from_shared(config.citadel_addr.clone())
            .map_err(|source| IdentityError::Address {
                addr: config.citadel_addr.clone(),
                source,
            })?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15));
        Ok(Fetcher {
            client: IstioCertificateServiceClient::new(endpoint.connect_lazy()),
            token: config.token.clone(),
            ttl: config.ttl,
            trust_domain: config.trust_domain.clone(),
        })
    }

    async fn fetch(&self) -> Result<Issued, IdentityError> {
        let key = csr::generate(None)?;
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: key.csr_pem.clone(),
            validity_duration: i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX),
            metadata: None,
        });
        let bearer = format!("Bearer {}", self.token.trim())
            .parse()
            .map_err(|_| IdentityError::TokenEncoding)?;
        request.metadata_mut().insert("authorization", bearer);
        let response = self
            .client
            .clone()
            .create_certificate(request)
            .await?
            .into_inner();
        let mut ders = Vec::new();
        for pem in &response.cert_chain {
            let mut reader = pem.as_bytes();
            for cert in rustls_pemfile::certs(&mut reader) {
                ders.push(cert.map_err(|e| IdentityError::BadChain(e.to_string()))?);
            }
        }
        self.accept(ders, key.private_key(), &key.public_key_raw)
    }

    /// Checks the chain Citadel returned and builds the TLS configurations from it.
    fn accept(
        &self,
        mut ders: Vec<CertificateDer<'static>>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
        public_key_raw: &[u8],
    ) -> Result<Issued, IdentityError> {
        if ders.len() < 2 {
            return Err(IdentityError::BadChain(format!(
                "{} certificate(s), expected leaf .. root",
                ders.len()
            )));
        }
        let root = ders
            .pop()
            .ok_or_else(|| IdentityError::BadChain("empty".into()))?;
        let leaf = &ders[0];
        let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(leaf)
            .map_err(|e| IdentityError::BadChain(format!("leaf does not parse: {e}")))?;
        if parsed.public_key().subject_public_key.data.as_ref() != public_key_raw {
            return Err(IdentityError::BadChain(
                "leaf does not carry the requested public key".into(),
            ));
        }
        let id = spiffe_id_of(leaf)
            .ok_or_else(|| IdentityError::BadChain("leaf has no SPIFFE URI SAN".into()))?;
        if id.trust_domain != self.trust_domain {
            return Err(IdentityError::TrustDomain {
                issued: id.to_string(),
                trust_domain: self.trust_domain.clone(),
            });
        }
        let validity = parsed.validity();
        let valid_from = to_system_time(validity.not_before.timestamp()).max(SystemTime::now());
        let not_after = to_system_time(validity.not_after.timestamp());
        let tls = MeshTls::new(TlsMaterial {
            chain: ders,
            key,
            root,
            trust_domain: self.trust_domain.clone(),
        })?;
        Ok(Issued {
            id,
            valid_from,
            not_after,
            tls,
            client_configs: Mutex::new(HashMap::new()),
        })
    }
}

fn to_system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

/// State shared between the handles and the renewal task.
struct Shared {
    current: RwLock<Arc<Issued>>,
    generation: watch::Sender<u64>,
    renewal_failures: AtomicU64,
}

impl Shared {
    fn current(&self) -> Arc<Issued> {
        self.current.read().clone()
    }

    fn replace(&self, issued: Issued) {
        *self.current.write() = Arc::new(issued);
        self.generation.send_modify(|g| *g += 1);
    }
}

/// Stops the renewal task when the last handle goes away.
struct Inner {
    shared: Arc<Shared>,
    renewer: AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// The workload's identity: a certificate from Citadel, renewed in the background. Cloning
/// gives another handle to the same identity.
#[derive(Clone)]
pub struct WorkloadIdentity {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WorkloadIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cur = self.inner.shared.current();
        f.debug_struct("WorkloadIdentity")
            .field("spiffe_id", &cur.id.to_string())
            .field("not_after", &cur.not_after)
            .finish_non_exhaustive()
    }
}

impl WorkloadIdentity {
    /// Generates a key, obtains the first certificate from Citadel (one attempt: an error here
    /// means no certificate) and starts the background renewal. Must run inside a tokio runtime.
    pub async fn start(config: IdentityConfig) -> Result<WorkloadIdentity, IdentityError> {
        let fetcher = Fetcher::new(&config)?;
        let issued = fetcher.fetch().await?;
        tracing::info!(
            spiffe_id = %issued.id,
            not_after = %humanize(issued.not_after),
            "workload certificate issued"
        );
        let (generation, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            current: RwLock::new(Arc::new(issued)),
            generation,
            renewal_failures: AtomicU64::new(0),
        });
        let renewer = tokio::spawn(renew_loop(shared.clone(), fetcher)).abort_handle();
        Ok(WorkloadIdentity {
            inner: Arc::new(Inner { shared, renewer }),
        })
    }

    /// The identity in the current certificate.
    pub fn spiffe_id(&self) -> SpiffeId {
        self.inner.shared.current().id.clone()
    }

    /// When the current certificate expires.
    pub fn cert_not_after(&self) -> SystemTime {
        self.inner.shared.current().not_after
    }

    /// The current certificate chain (leaf first, without the root).
    pub fn cert_chain(&self) -> Vec<CertificateDer<'static>> {
        self.inner.shared.current().tls.material().chain.clone()
    }

    /// The mesh root certificate peers must chain to.
    pub fn root_cert(&self) -> CertificateDer<'static> {
        self.inner.shared.current().tls.material().root.clone()
    }

    /// How many renewal attempts have failed since start.
    pub fn renewal_failures(&self) -> u64 {
        self.inner.shared.renewal_failures.load(Ordering::Relaxed)
    }

    /// A receiver that changes each time the certificate is replaced.
    pub fn rotations(&self) -> watch::Receiver<u64> {
        self.inner.shared.generation.subscribe()
    }

    /// Server configuration for inbound mTLS with the current certificate: client certificate
    /// required and verified to the root; ALPN `istio`, `http/1.1`. Call it for each new
    /// connection to pick up rotated certificates.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.inner.shared.current().tls.server_config()
    }

    /// Client configuration for outbound mTLS with the current certificate, accepting servers
    /// whose SPIFFE URI SAN is in `expected_sans` (empty: any identity of the trust domain).
    /// Cached per SAN list until the certificate rotates.
    pub fn client_config(&self, expected_sans: &[String]) -> Arc<ClientConfig> {
        let cur = self.inner.shared.current();
        let mut key = expected_sans.to_vec();
        key.sort();
        key.dedup();
        let mut cache = cur.client_configs.lock();
        cache
            .entry(key)
            .or_insert_with_key(|k| cur.tls.client_config(k))
            .clone()
    }
}

/// When to renew: half the remaining lifetime after `valid_from`, ±10%.
fn renewal_time(valid_from: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let lifetime = not_after.duration_since(valid_from).unwrap_or_default();
    valid_from + lifetime.mul_f64(0.5 * jitter)
}

const MAX_BACKOFF: Duration = Duration::from_secs(60);

async fn renew_loop(shared: Arc<Shared>, fetcher: Fetcher) {
    loop {
        let cur = shared.current();
        let jitter = rand::rng().random_range(0.9..=1.1);
        let at = renewal_time(cur.valid_from, cur.not_after, jitter);
        let wait = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tracing::debug!(spiffe_id = %cur.id, in_secs = wait.as_secs(), "next certificate renewal");
        tokio::time::sleep(wait).await;

        let mut backoff = Duration::from_millis(500);
        loop {
            match fetcher.fetch().await {
                Ok(issued) => {
                    tracing::info!(
                        spiffe_id = %issued.id,
                        not_after = %humanize(issued.not_after),
                        "workload certificate renewed"
                    );
                    shared.replace(issued);
                    break;
                }
                Err(error) => {
                    shared.renewal_failures.fetch_add(1, Ordering::Relaxed);
                    let remaining = cur
                        .not_after
                        .duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO);
                    if remaining.is_zero() {
                        tracing::error!(%error, spiffe_id = %cur.id, "certificate renewal failed and the certificate has expired; retrying");
                    } else if remaining < cur.lifetime() / 5 {
                        tracing::warn!(%error, spiffe_id = %cur.id, expires_in_secs = remaining.as_secs(), "certificate renewal failed and expiry is near; keeping the current certificate and retrying");
                    } else {
                        tracing::warn!(%error, spiffe_id = %cur.id, expires_in_secs = remaining.as_secs(), "certificate renewal failed; keeping the current certificate and retrying");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

fn humanize(t: SystemTime) -> String {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => format!("unix:{}", d.as_secs()),
        Err(_) => "before 1970".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_half_life_with_jitter() {
        let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let na = nb + Duration::from_secs(100);
        assert_eq!(renewal_time(nb, na, 1.0), nb + Duration::from_secs(50));
        assert_eq!(renewal_time(nb, na, 0.9), nb + Duration::from_secs(45));
        assert_eq!(renewal_time(nb, na, 1.1), nb + Duration::from_secs(55));
        // A certificate whose dates are reversed renews at once.
        assert_eq!(renewal_time(na, nb, 1.0), na);
    }

    #[test]
    fn config_debug_hides_token() {
        let c = IdentityConfig {
            citadel_addr: "http://127.0.0.1:8060".into(),
            token: "secret-token-value".into(),
            ttl: Duration::from_secs(60),
            trust_domain: "cluster.local".into(),
        };
        assert!(!format!("{c:?}").contains("secret-token-value"));
    }

    #[tokio::test]
    async fn rejects_chains_that_do_not_fit() {
        let fetcher = Fetcher {
            client: IstioCertificateServiceClient::new(
                Endpoint::from_static("http://127.0.0.1:1").connect_lazy(),
            ),
            token: String::new(),
            ttl: Duration::from_secs(60),
            trust_domain: "cluster.local".into(),
        };
        let key = csr::generate(None).unwrap();
        // Too short.
        assert!(matches!(
            fetcher.accept(vec![], key.private_key(), &key.public_key_raw),
            Err(IdentityError::BadChain(_))
        ));
        // A leaf for someone else's key.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::default();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let other = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://cluster.local/ns/a/sa/b".try_into().unwrap(),
        )];
        let foreign = p.signed_by(&other, &issuer).unwrap().der().clone();
        let err = fetcher
            .accept(
                vec![foreign, ca_cert.der().clone()],
                key.private_key(),
                &key.public_key_raw,
            )
            .err()
            .unwrap();
        assert!(err.to_string().contains("requested public key"), "{err}");
        // A leaf for our key but in another trust domain.
        let csr = rcgen::CertificateSigningRequestParams::from_pem(&key.csr_pem).unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://other.domain/ns/a/sa/b".try_into().unwrap(),
        )];
        let ours = p.signed_by(&csr.public_key, &issuer).unwrap().der().clone();
        assert!(matches!(
            fetcher.accept(
                vec![ours, ca_cert.der().clone()],
                key.private_key(),
                &key.public_key_raw
            ),
            Err(IdentityError::TrustDomain { .. })
        ));
    }
}
