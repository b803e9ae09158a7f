//! The workload's certificate: the first one fetched from Citadel with the workload's token,
//! held in memory, renewed in the background at half its life (with jitter) and turned into
//! rustls configurations.
//!
//! Renewal goes to Citadel's TLS listener, authenticated by the current certificate, when
//! [`RenewalConfig::tls_addr`] is set (Citadel renews the identity that certificate names);
//! otherwise, or once the current certificate has expired, or when Citadel refuses it, with the
//! token over the plaintext address. Citadel down: the current certificate is kept and the
//! renewal retried with exponential backoff; failures and the time left are exposed.
//!
//! Trust bundle: every root Citadel sends after the leaf (self-signed CA certificates of the
//! chain: its signing root and the extra roots of a rotation), so peers chaining to any of
//! them are accepted.

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
use tonic::transport::Channel;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::citadel::{self, TlsTarget};
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

/// How renewals are made (see the module documentation).
#[derive(Debug, Clone)]
pub struct RenewalConfig {
    /// Citadel's TLS listener (its `--tls-addr`), `host:port` or `https://host:port`: renewals
    /// authenticate there with the current certificate. None: renew with the token.
    pub tls_addr: Option<String>,
    /// Name verified in Citadel's server certificate (default: the host of `tls_addr`; Citadel's
    /// certificate names `istio-citadel`, `istio-citadel.istio-system[.svc]`, `localhost`,
    /// `127.0.0.1`).
    pub tls_server_name: Option<String>,
    /// First delay before retrying a failed renewal; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RenewalConfig {
    fn default() -> Self {
        RenewalConfig {
            tls_addr: None,
            tls_server_name: None,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
        }
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
    #[error("invalid citadel TLS address {0:?} (expected host:port or https://host:port)")]
    TlsAddress(String),
    #[error("cannot connect to citadel's TLS listener at {addr}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("citadel TLS client configuration: {0}")]
    CitadelTls(String),
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

    fn expired(&self) -> bool {
        self.not_after <= SystemTime::now()
    }
}

/// Asks Citadel for certificates.
#[derive(Clone)]
struct Fetcher {
    client: IstioCertificateServiceClient<Channel>,
    tls: Option<TlsTarget>,
    token: String,
    ttl: Duration,
    trust_domain: String,
}

impl Fetcher {
    fn new(config: &IdentityConfig, renewal: &RenewalConfig) -> Result<Self, IdentityError> {
        let tls = match &renewal.tls_addr {
            Some(addr) => Some(TlsTarget::parse(addr, renewal.tls_server_name.as_deref())?),
            None => None,
        };
        Ok(Fetcher {
            client: citadel::plaintext(&config.citadel_addr)?,
            tls,
            token: config.token.clone(),
            ttl: config.ttl,
            trust_domain: config.trust_domain.clone(),
        })
    }

    /// A certificate asked for with the token over the plaintext address.
    async fn fetch(&self) -> Result<Issued, IdentityError> {
        let key = csr::generate(None)?;
        let mut request = self.request(&key);
        let bearer = format!("Bearer {}", self.token.trim())
            .parse()
            .map_err(|_| IdentityError::TokenEncoding)?;
        request.metadata_mut().insert("authorization", bearer);
        self.send(self.client.clone(), request, key).await
    }

    /// A certificate asked for on Citadel's TLS listener, authenticated by `current`.
    async fn fetch_with_cert(
        &self,
        target: &TlsTarget,
        current: &Issued,
    ) -> Result<Issued, IdentityError> {
        let material = current.tls.material();
        let client = target
            .connect(
                current.tls.trust_bundle(),
                material.chain.clone(),
                material.key.clone_key(),
            )
            .await?;
        let key = csr::generate(Some(&current.id))?;
        let request = self.request(&key);
        self.send(client, request, key).await
    }

    /// The next certificate for `current`: by certificate over TLS when configured and still
    /// possible, else (or when Citadel refuses the certificate) by token.
    async fn renew(&self, current: &Issued) -> Result<Issued, IdentityError> {
        if let Some(target) = &self.tls {
            if current.expired() {
                tracing::warn!(spiffe_id = %current.id, "current certificate has expired; renewing with the token");
            } else {
                match self.fetch_with_cert(target, current).await {
                    Err(IdentityError::Rpc {
                        code: tonic::Code::Unauthenticated,
                        message,
                    }) => {
                        tracing::warn!(spiffe_id = %current.id, %message, "citadel refused the current certificate; renewing with the token");
                    }
                    other => return other,
                }
            }
        }
        self.fetch().await
    }

    fn request(&self, key: &csr::KeyAndCsr) -> tonic::Request<IstioCertificateRequest> {
        tonic::Request::new(IstioCertificateRequest {
            csr: key.csr_pem.clone(),
            validity_duration: i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX),
            metadata: None,
        })
    }

    async fn send(
        &self,
        mut client: IstioCertificateServiceClient<Channel>,
        request: tonic::Request<IstioCertificateRequest>,
        key: csr::KeyAndCsr,
    ) -> Result<Issued, IdentityError> {
        let response = client.create_certificate(request).await?.into_inner();
        let mut ders = Vec::new();
        for pem in &response.cert_chain {
            let mut reader = pem.as_bytes();
            for cert in rustls_pemfile::certs(&mut reader) {
                ders.push(cert.map_err(|e| IdentityError::BadChain(e.to_string()))?);
            }
        }
        self.accept(ders, key.private_key(), &key.public_key_raw)
    }

    /// Checks the chain Citadel returned and builds the TLS configurations from it: the leaf
    /// and intermediates are presented, the self-signed CA certificates after the leaf are the
    /// trust bundle (the one the chain leads to first).
    fn accept(
        &self,
        ders: Vec<CertificateDer<'static>>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
        public_key_raw: &[u8],
    ) -> Result<Issued, IdentityError> {
        if ders.len() < 2 {
            return Err(IdentityError::BadChain(format!(
                "{} certificate(s), expected leaf .. root",
                ders.len()
            )));
        }
        let mut chain = vec![ders[0].clone()];
        let mut roots = Vec::new();
        for der in &ders[1..] {
            if is_root(der)? {
                if !roots.contains(der) {
                    roots.push(der.clone());
                }
            } else {
                chain.push(der.clone());
            }
        }
        let leaf = &chain[0];
        let (_, parsed) = X509Certificate::from_der(leaf)
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
        // The root the chain leads to: the one that signed its top certificate.
        let top = chain
            .last()
            .ok_or_else(|| IdentityError::BadChain("empty".into()))?;
        let (_, top) = X509Certificate::from_der(top)
            .map_err(|e| IdentityError::BadChain(format!("certificate does not parse: {e}")))?;
        let signing = roots
            .iter()
            .position(|r| {
                X509Certificate::from_der(r)
                    .is_ok_and(|(_, r)| top.verify_signature(Some(r.public_key())).is_ok())
            })
            .ok_or_else(|| {
                IdentityError::BadChain(format!(
                    "{} is not signed by any of the {} root(s) sent",
                    top.issuer(),
                    roots.len()
                ))
            })?;
        let root = roots.remove(signing);
        let validity = parsed.validity();
        let valid_from = to_system_time(validity.not_before.timestamp()).max(SystemTime::now());
        let not_after = to_system_time(validity.not_after.timestamp());
        let tls = MeshTls::with_trust_bundle(
            TlsMaterial {
                chain,
                key,
                root,
                trust_domain: self.trust_domain.clone(),
            },
            roots,
        )?;
        Ok(Issued {
            id,
            valid_from,
            not_after,
            tls,
            client_configs: Mutex::new(HashMap::new()),
        })
    }
}

/// Whether `der` is a self-signed CA certificate (a root).
fn is_root(der: &CertificateDer<'_>) -> Result<bool, IdentityError> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| IdentityError::BadChain(format!("certificate does not parse: {e}")))?;
    let ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    Ok(ca && cert.subject() == cert.issuer() && cert.verify_signature(None).is_ok())
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
    consecutive_failures: AtomicU64,
    renewals: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn current(&self) -> Arc<Issued> {
        self.current.read().clone()
    }

    fn replace(&self, issued: Issued) {
        *self.current.write() = Arc::new(issued);
        self.renewals.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        *self.last_error.lock() = None;
        self.generation.send_modify(|g| *g += 1);
    }

    fn failed(&self, error: &IdentityError) {
        self.renewal_failures.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = Some(error_chain(error));
    }
}

/// An error with its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Stops the renewal task when the last handle goes away.
struct Inner {
    shared: Arc<Shared>,
    fetcher: Fetcher,
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
    /// means no certificate) and starts the background renewal, renewing with the token. Must
    /// run inside a tokio runtime.
    pub async fn start(config: IdentityConfig) -> Result<WorkloadIdentity, IdentityError> {
        Self::start_with(config, RenewalConfig::default()).await
    }

    /// Like [`WorkloadIdentity::start`], renewing as `renewal` says (by the current certificate
    /// on Citadel's TLS listener when `renewal.tls_addr` is set).
    pub async fn start_with(
        config: IdentityConfig,
        renewal: RenewalConfig,
    ) -> Result<WorkloadIdentity, IdentityError> {
        let fetcher = Fetcher::new(&config, &renewal)?;
        let issued = fetcher.fetch().await?;
        tracing::info!(
            spiffe_id = %issued.id,
            not_after = %humanize(issued.not_after),
            roots = issued.tls.trust_bundle().len(),
            "workload certificate issued"
        );
        let (generation, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            current: RwLock::new(Arc::new(issued)),
            generation,
            renewal_failures: AtomicU64::new(0),
            consecutive_failures: AtomicU64::new(0),
            renewals: AtomicU64::new(0),
            last_error: Mutex::new(None),
        });
        let renewer =
            tokio::spawn(renew_loop(shared.clone(), fetcher.clone(), renewal)).abort_handle();
        Ok(WorkloadIdentity {
            inner: Arc::new(Inner {
                shared,
                fetcher,
                renewer,
            }),
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

    /// Seconds until the current certificate expires (negative once it has).
    pub fn seconds_to_expiry(&self) -> f64 {
        let not_after = self.cert_not_after();
        match not_after.duration_since(SystemTime::now()) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        }
    }

    /// The current certificate chain (leaf first, then intermediates, without roots).
    pub fn cert_chain(&self) -> Vec<CertificateDer<'static>> {
        self.inner.shared.current().tls.material().chain.clone()
    }

    /// The root the current certificate chains to.
    pub fn root_cert(&self) -> CertificateDer<'static> {
        self.inner.shared.current().tls.material().root.clone()
    }

    /// Every root peers may chain to (Citadel's signing root first, then the other roots it
    /// serves during a rotation).
    pub fn trust_bundle(&self) -> Vec<CertificateDer<'static>> {
        self.inner.shared.current().tls.trust_bundle().to_vec()
    }

    /// How many renewal attempts have failed since start.
    pub fn renewal_failures(&self) -> u64 {
        self.inner.shared.renewal_failures.load(Ordering::Relaxed)
    }

    /// How many renewal attempts have failed since the last success (0 when healthy).
    pub fn consecutive_renewal_failures(&self) -> u64 {
        self.inner
            .shared
            .consecutive_failures
            .load(Ordering::Relaxed)
    }

    /// The last renewal error, until the next success.
    pub fn last_renewal_error(&self) -> Option<String> {
        self.inner.shared.last_error.lock().clone()
    }

    /// How many times the certificate has been renewed since start.
    pub fn renewals(&self) -> u64 {
        self.inner.shared.renewals.load(Ordering::Relaxed)
    }

    /// Renews now (as the background task would) and switches to the new certificate; the
    /// background task then times the next renewal from it. On error the current certificate
    /// is kept and the failure counted.
    pub async fn renew_now(&self) -> Result<(), IdentityError> {
        let cur = self.inner.shared.current();
        match self.inner.fetcher.renew(&cur).await {
            Ok(issued) => {
                tracing::info!(spiffe_id = %issued.id, not_after = %humanize(issued.not_after), "workload certificate renewed on request");
                self.inner.shared.replace(issued);
                Ok(())
            }
            Err(e) => {
                self.inner.shared.failed(&e);
                Err(e)
            }
        }
    }

    /// A receiver that changes each time the certificate is replaced.
    pub fn rotations(&self) -> watch::Receiver<u64> {
        self.inner.shared.generation.subscribe()
    }

    /// Server configuration for inbound mTLS with the current certificate: client certificate
    /// required and verified to the trust bundle; ALPN `istio`, `http/1.1`. Call it for each
    /// new connection to pick up rotated certificates.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.inner.shared.current().tls.server_config()
    }

    /// Client configuration for outbound mTLS with the current certificate, accepting servers
    /// whose SPIFFE URI SAN is in `expected_sans` (empty: any identity of the trust domain)
    /// and whose chain leads to the trust bundle. Cached per SAN list until the certificate
    /// rotates.
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

async fn renew_loop(shared: Arc<Shared>, fetcher: Fetcher, renewal: RenewalConfig) {
    let mut rotations = shared.generation.subscribe();
    'planned: loop {
        rotations.mark_unchanged();
        let cur = shared.current();
        let jitter = rand::rng().random_range(0.9..=1.1);
        let at = renewal_time(cur.valid_from, cur.not_after, jitter);
        let wait = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tracing::debug!(spiffe_id = %cur.id, in_secs = wait.as_secs(), "next certificate renewal");
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            // Renewed meanwhile (renew_now): plan from the new certificate.
            _ = rotations.changed() => continue 'planned,
        }

        let mut backoff = renewal.min_backoff.max(Duration::from_millis(1));
        loop {
            let cur = shared.current();
            match fetcher.renew(&cur).await {
                Ok(issued) => {
                    tracing::info!(
                        spiffe_id = %issued.id,
                        not_after = %humanize(issued.not_after),
                        roots = issued.tls.trust_bundle().len(),
                        "workload certificate renewed"
                    );
                    shared.replace(issued);
                    break;
                }
                Err(error) => {
                    shared.failed(&error);
                    let error = error_chain(&error);
                    let remaining = cur
                        .not_after
                        .duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO);
                    if remaining.is_zero() {
                        tracing::error!(%error, spiffe_id = %cur.id, retry_in_ms = backoff.as_millis() as u64, "certificate renewal failed and the certificate has expired; retrying");
                    } else if remaining < cur.lifetime() / 5 {
                        tracing::warn!(%error, spiffe_id = %cur.id, expires_in_secs = remaining.as_secs(), retry_in_ms = backoff.as_millis() as u64, "certificate renewal failed and expiry is near; keeping the current certificate and retrying");
                    } else {
                        tracing::warn!(%error, spiffe_id = %cur.id, expires_in_secs = remaining.as_secs(), retry_in_ms = backoff.as_millis() as u64, "certificate renewal failed; keeping the current certificate and retrying");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = rotations.changed() => continue 'planned,
                    }
                    backoff = (backoff * 2).min(renewal.max_backoff.max(renewal.min_backoff));
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

    fn ca(
        name: &str,
    ) -> (
        rcgen::Issuer<'static, rcgen::KeyPair>,
        CertificateDer<'static>,
    ) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap().der().clone();
        (rcgen::Issuer::new(params, key), cert)
    }

    #[tokio::test]
    async fn the_trust_bundle_is_every_root_of_the_chain() {
        let fetcher = Fetcher {
            client: citadel::plaintext("http://127.0.0.1:1").unwrap(),
            tls: None,
            token: String::new(),
            ttl: Duration::from_secs(60),
            trust_domain: "cluster.local".into(),
        };
        let (root, root_der) = ca("new root");
        let (_, old_der) = ca("old root");
        // An intermediate under the new root.
        let ikey = rcgen::KeyPair::generate().unwrap();
        let mut ip = rcgen::CertificateParams::default();
        ip.distinguished_name = rcgen::DistinguishedName::new();
        ip.distinguished_name
            .push(rcgen::DnType::CommonName, "intermediate");
        ip.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let inter_der = ip.signed_by(&ikey, &root).unwrap().der().clone();
        let inter = rcgen::Issuer::new(ip, ikey);

        let key = csr::generate(None).unwrap();
        let csr = rcgen::CertificateSigningRequestParams::from_pem(&key.csr_pem).unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://cluster.local/ns/a/sa/b".try_into().unwrap(),
        )];
        let leaf = p.signed_by(&csr.public_key, &inter).unwrap().der().clone();
        // Citadel's order: leaf, intermediates, extra roots, signing root.
        let issued = fetcher
            .accept(
                vec![
                    leaf.clone(),
                    inter_der.clone(),
                    old_der.clone(),
                    root_der.clone(),
                ],
                key.private_key(),
                &key.public_key_raw,
            )
            .unwrap();
        let m = issued.tls.material();
        assert_eq!(m.chain, vec![leaf.clone(), inter_der.clone()]);
        assert_eq!(m.root, root_der);
        assert_eq!(
            issued.tls.trust_bundle(),
            &[root_der.clone(), old_der.clone()]
        );

        // A chain that leads to none of the roots sent is refused.
        let err = fetcher
            .accept(
                vec![leaf, inter_der, old_der],
                key.private_key(),
                &key.public_key_raw,
            )
            .err()
            .unwrap();
        assert!(err.to_string().contains("not signed by any"), "{err}");
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
            client: citadel::plaintext("http://127.0.0.1:1").unwrap(),
            tls: None,
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
