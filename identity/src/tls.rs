//! rustls configurations for mutual TLS between workloads identified by SPIFFE certificates.
//!
//! Both sides use the ring provider with TLS 1.3 and 1.2 and rustls's default (modern) suites.
//! The server requires a client certificate chaining to the mesh root. The client verifies the
//! server's chain to the root *without* the DNS-name check (SPIFFE certificates carry a URI SAN
//! and no DNS name) and then checks that the URI SAN is one it expects. The server offers no
//! session resumption, so every connection verifies the certificates in force at that moment.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, ServerConfig,
    SignatureScheme,
};

use crate::spiffe::{SpiffeId, spiffe_id_of};

/// ALPN protocols offered and accepted on mesh mTLS connections, in preference order.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"istio", b"http/1.1"];

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid root certificate: {0}")]
    Root(rustls::Error),
    #[error("cannot build client certificate verifier: {0}")]
    Verifier(rustls::server::VerifierBuilderError),
    #[error("invalid workload certificate or key: {0}")]
    Config(rustls::Error),
    #[error("the workload certificate chain is empty")]
    EmptyChain,
}

/// A workload's certificate chain, private key and the mesh root it trusts.
#[derive(Debug)]
pub struct TlsMaterial {
    /// Leaf first, then any intermediates; the root is not included.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The trust anchor peers must chain to.
    pub root: CertificateDer<'static>,
    /// Trust domain accepted when a client expects no particular identity.
    pub trust_domain: String,
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        TlsMaterial {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            root: self.root.clone(),
            trust_domain: self.trust_domain.clone(),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn alpn() -> Vec<Vec<u8>> {
    ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect()
}

/// The TLS configurations of one workload certificate: built once per certificate, then
/// handed out to every new connection.
#[derive(Debug, Clone)]
pub struct MeshTls {
    material: TlsMaterial,
    /// Every trusted root: the material's root first, then the others (root rotation).
    bundle: Vec<CertificateDer<'static>>,
    roots: Arc<RootCertStore>,
    server: Arc<ServerConfig>,
    client_base: Arc<ClientConfig>,
}

impl MeshTls {
    /// Checks the material and builds the server configuration and the base client one,
    /// trusting the material's root only.
    pub fn new(material: TlsMaterial) -> Result<Self, TlsError> {
        Self::with_trust_bundle(material, Vec::new())
    }

    /// Like [`MeshTls::new`], trusting `other_roots` beside the material's root: a peer whose
    /// chain leads to any of them is accepted (during a root rotation, both the old and the new
    /// root).
    pub fn with_trust_bundle(
        material: TlsMaterial,
        other_roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, TlsError> {
        if material.chain.is_empty() {
            return Err(TlsError::EmptyChain);
        }
        let mut bundle = vec![material.root.clone()];
        for r in other_roots {
            if !bundle.contains(&r) {
                bundle.push(r);
            }
        }
        let mut store = RootCertStore::empty();
        for r in &bundle {
            store.add(r.clone()).map_err(TlsError::Root)?;
        }
        let roots = Arc::new(store);
        let provider = provider();

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(TlsError::Verifier)?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(VERSIONS)
            .map_err(TlsError::Config)?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(material.chain.clone(), material.key.clone_key())
            .map_err(TlsError::Config)?;
        server.alpn_protocols = alpn();
        // No session resumption: a resumed session skips certificate verification, so it would
        // let an expired (or no longer trusted) client certificate back in and show a peer its
        // old certificate after a rotation. Every connection is a full handshake.
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;

        let server_verifier = SpiffeServerVerifier {
            roots: roots.clone(),
            expected: Vec::new(),
            trust_domain: material.trust_domain.clone(),
            algorithms: provider.signature_verification_algorithms,
        };
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(VERSIONS)
            .map_err(TlsError::Config)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(server_verifier))
            .with_client_auth_cert(material.chain.clone(), material.key.clone_key())
            .map_err(TlsError::Config)?;
        client.alpn_protocols = alpn();

        Ok(MeshTls {
            material,
            bundle,
            roots,
            server: Arc::new(server),
            client_base: Arc::new(client),
        })
    }

    /// The material these configurations were built from.
    pub fn material(&self) -> &TlsMaterial {
        &self.material
    }

    /// Every root peers may chain to, the material's root first.
    pub fn trust_bundle(&self) -> &[CertificateDer<'static>] {
        &self.bundle
    }

    /// Presents the workload certificate and requires a client certificate that chains to a
    /// trusted root. ALPN `istio`, `http/1.1`.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// Presents the workload certificate and accepts a server whose chain leads to the root and
    /// whose SPIFFE URI SAN is in `expected_sans` (an empty list accepts any identity of the
    /// trust domain). The server name given to rustls is not checked.
    pub fn client_config(&self, expected_sans: &[String]) -> Arc<ClientConfig> {
        if expected_sans.is_empty() {
            return self.client_base.clone();
        }
        let mut config = (*self.client_base).clone();
        let verifier = SpiffeServerVerifier {
            roots: self.roots.clone(),
            expected: expected_sans.to_vec(),
            trust_domain: self.material.trust_domain.clone(),
            algorithms: config.crypto_provider().signature_verification_algorithms,
        };
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(verifier));
        Arc::new(config)
    }
}

/// [`MeshTls::server_config`] for one piece of material.
pub fn server_config(material: &TlsMaterial) -> Result<Arc<ServerConfig>, TlsError> {
    Ok(MeshTls::new(material.clone())?.server_config())
}

/// [`MeshTls::client_config`] for one piece of material.
pub fn client_config(
    material: &TlsMaterial,
    expected_sans: &[String],
) -> Result<Arc<ClientConfig>, TlsError> {
    Ok(MeshTls::new(material.clone())?.client_config(expected_sans))
}

/// Verifies a server's chain to the mesh root with webpki (no name check), then its SPIFFE id.
#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: Vec<String>,
    trust_domain: String,
    algorithms: WebPkiSupportedAlgorithms,
}

/// The server's identity is not one the client expects.
#[derive(Debug, thiserror::Error)]
enum IdentityMismatch {
    #[error("server certificate has no single SPIFFE URI SAN")]
    NoSpiffeId,
    #[error("server identity {presented} is not one of the expected {expected:?}")]
    Unexpected {
        presented: String,
        expected: Vec<String>,
    },
    #[error("server identity {presented} is outside trust domain {trust_domain}")]
    ForeignTrustDomain {
        presented: String,
        trust_domain: String,
    },
}

fn mismatch(e: IdentityMismatch) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let id = spiffe_id_of(end_entity).ok_or_else(|| mismatch(IdentityMismatch::NoSpiffeId))?;
        let presented = id.to_string();
        if self.expected.is_empty() {
            if id.trust_domain != self.trust_domain {
                return Err(mismatch(IdentityMismatch::ForeignTrustDomain {
                    presented,
                    trust_domain: self.trust_domain.clone(),
                }));
            }
        } else if !self.expected.contains(&presented) {
            return Err(mismatch(IdentityMismatch::Unexpected {
                presented,
                expected: self.expected.clone(),
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Something that carries the peer's certificate chain: a slice of certificates, or a rustls
/// server or client connection after the handshake.
pub trait PeerCertificates {
    /// The peer's chain, leaf first, if it presented one.
    fn peer_chain(&self) -> Option<&[CertificateDer<'_>]>;
}

impl PeerCertificates for [CertificateDer<'_>] {
    fn peer_chain(&self) -> Option<&[CertificateDer<'_>]> {
        Some(self)
    }
}

impl PeerCertificates for Vec<CertificateDer<'_>> {
    fn peer_chain(&self) -> Option<&[CertificateDer<'_>]> {
        Some(self.as_slice())
    }
}

impl PeerCertificates for rustls::ServerConnection {
    fn peer_chain(&self) -> Option<&[CertificateDer<'_>]> {
        self.peer_certificates()
    }
}

impl PeerCertificates for rustls::ClientConnection {
    fn peer_chain(&self) -> Option<&[CertificateDer<'_>]> {
        self.peer_certificates()
    }
}

/// The SPIFFE id of the peer's leaf certificate.
pub fn peer_identity<P: PeerCertificates + ?Sized>(peer: &P) -> Option<SpiffeId> {
    spiffe_id_of(peer.peer_chain()?.first()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivatePkcs8KeyDer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    struct TestCa {
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
        cert: CertificateDer<'static>,
    }

    fn test_ca() -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).unwrap().der().clone();
        TestCa {
            issuer: rcgen::Issuer::new(params, key),
            cert,
        }
    }

    fn material_with_validity(
        ca: &TestCa,
        san: &str,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> TlsMaterial {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![rcgen::SanType::URI(san.try_into().unwrap())];
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &ca.issuer).unwrap().der().clone();
        TlsMaterial {
            chain: vec![cert],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            root: ca.cert.clone(),
            trust_domain: "cluster.local".into(),
        }
    }

    fn material(ca: &TestCa, san: &str) -> TlsMaterial {
        let now = time::OffsetDateTime::now_utc();
        material_with_validity(
            ca,
            san,
            now - time::Duration::minutes(1),
            now + time::Duration::hours(1),
        )
    }

    const SERVER: &str = "spiffe://cluster.local/ns/default/sa/reviews";
    const CLIENT: &str = "spiffe://cluster.local/ns/default/sa/productpage";

    struct Outcome {
        server: Result<(Option<SpiffeId>, Option<Vec<u8>>), String>,
        client: Result<Option<SpiffeId>, String>,
    }

    /// Runs one handshake over loopback; each side exchanges a byte so that late alerts
    /// (TLS 1.3 client-certificate rejection) surface on the client too.
    async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Outcome {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = tokio_rustls::TlsAcceptor::from(server)
                .accept(tcp)
                .await
                .map_err(|e| e.to_string())?;
            let (_, conn) = tls.get_ref();
            let seen = (
                peer_identity(conn),
                conn.alpn_protocol().map(|p| p.to_vec()),
            );
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
            tls.write_all(b"y").await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(seen)
        });
        let client = async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("reviews.default.svc.cluster.local").unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(client)
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            let seen = peer_identity(tls.get_ref().1);
            tls.write_all(b"x").await.map_err(|e| e.to_string())?;
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(seen)
        }
        .await;
        Outcome {
            server: accept.await.unwrap(),
            client,
        }
    }

    #[tokio::test]
    async fn mutual_tls_between_spiffe_identities() {
        let ca = test_ca();
        let server = MeshTls::new(material(&ca, SERVER)).unwrap();
        let client = MeshTls::new(material(&ca, CLIENT)).unwrap();
        let out = handshake(
            server.server_config(),
            client.client_config(&[SERVER.to_string()]),
        )
        .await;
        let (seen_by_server, alpn) = out.server.unwrap();
        assert_eq!(seen_by_server.unwrap().to_string(), CLIENT);
        assert_eq!(alpn.as_deref(), Some(&b"istio"[..]));
        assert_eq!(out.client.unwrap().unwrap().to_string(), SERVER);
    }

    #[tokio::test]
    async fn client_refuses_unexpected_identity() {
        let ca = test_ca();
        let server = MeshTls::new(material(&ca, SERVER)).unwrap();
        let client = MeshTls::new(material(&ca, CLIENT)).unwrap();
        let expected = ["spiffe://cluster.local/ns/default/sa/ratings".to_string()];
        let out = handshake(server.server_config(), client.client_config(&expected)).await;
        let err = out.client.unwrap_err();
        assert!(
            err.contains("Unexpected") && err.contains("sa/ratings"),
            "{err}"
        );
        assert!(out.server.is_err());
    }

    #[tokio::test]
    async fn empty_expectation_accepts_trust_domain_only() {
        let ca = test_ca();
        let client = MeshTls::new(material(&ca, CLIENT)).unwrap();
        let server = MeshTls::new(material(&ca, SERVER)).unwrap();
        let out = handshake(server.server_config(), client.client_config(&[])).await;
        assert_eq!(out.client.unwrap().unwrap().to_string(), SERVER);

        let foreign = MeshTls::new(material(&ca, "spiffe://other.org/ns/default/sa/x")).unwrap();
        let out = handshake(foreign.server_config(), client.client_config(&[])).await;
        let err = out.client.unwrap_err();
        assert!(err.contains("ForeignTrustDomain"), "{err}");
    }

    #[tokio::test]
    async fn certificates_from_another_root_are_refused() {
        let ca = test_ca();
        let rogue = test_ca();
        let server = MeshTls::new(material(&ca, SERVER)).unwrap();
        let client = MeshTls::new(material(&ca, CLIENT)).unwrap();
        let rogue_server = MeshTls::new(material(&rogue, SERVER)).unwrap();
        // A client whose own certificate comes from another root but which trusts the real one.
        let mut rogue_client = material(&rogue, CLIENT);
        rogue_client.root = ca.cert.clone();
        let rogue_client = MeshTls::new(rogue_client).unwrap();

        // The client refuses a server from another root, even with the expected SAN.
        let out = handshake(
            rogue_server.server_config(),
            client.client_config(&[SERVER.to_string()]),
        )
        .await;
        // Same issuer name, other key: BadSignature (UnknownIssuer if the names differed).
        let err = out.client.unwrap_err();
        assert!(
            err.contains("BadSignature") || err.contains("UnknownIssuer"),
            "{err}"
        );

        // The server refuses a client from another root.
        let out = handshake(
            server.server_config(),
            rogue_client.client_config(&[SERVER.to_string()]),
        )
        .await;
        let err = out.server.unwrap_err();
        assert!(
            err.contains("BadSignature") || err.contains("UnknownIssuer"),
            "{err}"
        );
        assert!(out.client.is_err());
    }

    #[tokio::test]
    async fn a_bundle_of_two_roots_accepts_peers_of_either() {
        let old = test_ca();
        let new = test_ca();
        let third = test_ca();
        let mut both = material(&new, SERVER);
        both.root = new.cert.clone();
        let server = MeshTls::with_trust_bundle(both, vec![old.cert.clone()]).unwrap();
        assert_eq!(server.trust_bundle().len(), 2);
        for (ca, ok) in [(&old, true), (&new, true), (&third, false)] {
            // The client trusts the root of its own issuer and the new root.
            let client =
                MeshTls::with_trust_bundle(material(ca, CLIENT), vec![new.cert.clone()]).unwrap();
            let out = handshake(
                server.server_config(),
                client.client_config(&[SERVER.to_string()]),
            )
            .await;
            if ok {
                assert_eq!(out.server.unwrap().0.unwrap().to_string(), CLIENT);
                assert_eq!(out.client.unwrap().unwrap().to_string(), SERVER);
            } else {
                let err = out.server.unwrap_err();
                assert!(
                    err.contains("BadSignature") || err.contains("UnknownIssuer"),
                    "{err}"
                );
            }
        }
        // A client trusting only the old root refuses a server from the new one.
        let old_only = MeshTls::new(material(&old, CLIENT)).unwrap();
        let out = handshake(
            server.server_config(),
            old_only.client_config(&[SERVER.to_string()]),
        )
        .await;
        assert!(out.client.is_err());
    }

    #[tokio::test]
    async fn expired_certificates_are_refused() {
        let ca = test_ca();
        let now = time::OffsetDateTime::now_utc();
        let expired = |san| {
            material_with_validity(
                &ca,
                san,
                now - time::Duration::days(2),
                now - time::Duration::days(1),
            )
        };
        let server = MeshTls::new(material(&ca, SERVER)).unwrap();
        let client = MeshTls::new(material(&ca, CLIENT)).unwrap();
        let old_server = MeshTls::new(expired(SERVER)).unwrap();
        let old_client = MeshTls::new(expired(CLIENT)).unwrap();

        let out = handshake(
            old_server.server_config(),
            client.client_config(&[SERVER.to_string()]),
        )
        .await;
        let err = out.client.unwrap_err();
        assert!(err.to_lowercase().contains("expired"), "{err}");

        let out = handshake(
            server.server_config(),
            old_client.client_config(&[SERVER.to_string()]),
        )
        .await;
        let err = out.server.unwrap_err();
        assert!(err.to_lowercase().contains("expired"), "{err}");
    }

    #[tokio::test]
    async fn every_connection_is_a_full_handshake() {
        let ca = test_ca();
        let server = MeshTls::new(material(&ca, SERVER)).unwrap();
        let client = MeshTls::new(material(&ca, CLIENT)).unwrap();
        let client_config = client.client_config(&[SERVER.to_string()]);
        for _ in 0..2 {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server_config = server.server_config();
            let accept = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut tls = tokio_rustls::TlsAcceptor::from(server_config)
                    .accept(tcp)
                    .await
                    .unwrap();
                let mut b = [0u8; 1];
                tls.read_exact(&mut b).await.unwrap();
                tls.write_all(b"y").await.unwrap();
                tls.flush().await.unwrap();
                tls.get_ref().1.handshake_kind()
            });
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("reviews").unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(client_config.clone())
                .connect(name, tcp)
                .await
                .unwrap();
            tls.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await.unwrap();
            // Resumption would skip verifying the certificates (expired, rotated, untrusted).
            assert_eq!(accept.await.unwrap(), Some(rustls::HandshakeKind::Full));
        }
    }

    #[test]
    fn peer_identity_reads_the_leaf() {
        let ca = test_ca();
        let m = material(&ca, SERVER);
        assert_eq!(
            peer_identity(m.chain.as_slice()).unwrap().to_string(),
            SERVER
        );
        assert_eq!(peer_identity(&m.chain).unwrap().to_string(), SERVER);
        assert_eq!(peer_identity(&Vec::<CertificateDer<'_>>::new()), None);
    }

    #[test]
    fn empty_chain_is_an_error() {
        let ca = test_ca();
        let mut m = material(&ca, SERVER);
        m.chain.clear();
        assert!(matches!(MeshTls::new(m), Err(TlsError::EmptyChain)));
    }
}
