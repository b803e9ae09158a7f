//! The TLS listener: Citadel's own server certificate (signed by its CA, key in memory only),
//! an optional client certificate verified to the trust bundle, and the verified client chain
//! handed to the gRPC service as connection info (for renewal by the current certificate).
//!
//! TLS 1.3 and 1.2 only, ECDHE with AEAD suites only (ring provider).

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::ca::CertificateAuthority;

/// DNS names in Citadel's server certificate.
pub const SERVER_NAMES: &[&str] = &[
    "istio-citadel",
    "istio-citadel.istio-system",
    "istio-citadel.istio-system.svc",
    "localhost",
];

/// Lifetime of Citadel's server certificate (made at each start; clipped to the CA's).
pub const SERVER_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Longest a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot issue Citadel's server certificate: {0}")]
    Issue(rcgen::Error),
    #[error("invalid trust bundle: {0}")]
    Roots(String),
    #[error("TLS configuration: {0}")]
    Rustls(rustls::Error),
}

/// The ring provider restricted to modern suites (ECDHE + AEAD; TLS 1.3 and 1.2).
pub fn modern_provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

/// A server certificate for Citadel itself (DNS names [`SERVER_NAMES`] and 127.0.0.1, server
/// auth only, so it can never be used as a workload identity), with a fresh P-256 key that is
/// never written anywhere. Returns the chain (leaf, intermediates) and the key.
pub fn server_identity(
    ca: &CertificateAuthority,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsSetupError> {
    let key =
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(TlsSetupError::Issue)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "istio-citadel");
    let mut sans = Vec::new();
    for name in SERVER_NAMES {
        sans.push(SanType::DnsName(
            (*name).try_into().map_err(TlsSetupError::Issue)?,
        ));
    }
    sans.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = SystemTime::now();
    params.not_before = (now - crate::ca::sign::BACKDATE).into();
    params.not_after = (now + SERVER_CERT_LIFETIME)
        .min(ca.signing_not_after)
        .into();
    params.serial_number = Some(crate::ca::sign::random_serial());
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, &ca.issuer)
        .map_err(TlsSetupError::Issue)?;
    let mut chain = vec![cert.der().clone()];
    let after = ca.chain_after_leaf();
    for pem in after.iter().take(after.len().saturating_sub(1)) {
        let mut r = pem.as_bytes();
        for der in rustls_pemfile::certs(&mut r).flatten() {
            chain.push(der);
        }
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((chain, key))
}

/// The server configuration: Citadel's certificate, client certificates optional and verified
/// to every root of the trust bundle, ALPN `h2`.
pub fn server_config(ca: &CertificateAuthority) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = modern_provider();
    let mut roots = RootCertStore::empty();
    for der in ca.trust_bundle_der() {
        roots
            .add(der)
            .map_err(|e| TlsSetupError::Roots(e.to_string()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsSetupError::Roots(e.to_string()))?;
    let (chain, key) = server_identity(ca)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsSetupError::Rustls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(TlsSetupError::Rustls)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// What the gRPC service learns about a TLS connection.
#[derive(Debug, Clone)]
pub struct MtlsConnectInfo {
    pub remote_addr: Option<SocketAddr>,
    /// The client's verified chain, leaf first; empty when it presented none.
    pub peer_chain: Arc<Vec<CertificateDer<'static>>>,
}

/// One accepted TLS connection.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: MtlsConnectInfo,
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = MtlsConnectInfo;
    fn connect_info(&self) -> MtlsConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts TCP connections and completes TLS handshakes concurrently (a slow or failing client
/// holds up nobody), until `shutdown` resolves; the stream ends then.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> ReceiverStream<Result<TlsConn, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                a = listener.accept() => a,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "tls accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        tracing::debug!(%remote, %error, "tls handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "tls handshake timed out");
                        return;
                    }
                };
                let peer_chain = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
                    .unwrap_or_default();
                let conn = TlsConn {
                    inner: tls,
                    info: MtlsConnectInfo {
                        remote_addr: Some(remote),
                        peer_chain: Arc::new(peer_chain),
                    },
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_modern_suites_and_versions() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), "cluster.local").unwrap();
        let config = server_config(&ca).unwrap();
        for suite in &config.crypto_provider().cipher_suites {
            let name = format!("{:?}", suite.suite());
            assert!(
                name.starts_with("TLS13_") || name.starts_with("TLS_ECDHE_"),
                "{name}"
            );
            assert!(
                name.contains("GCM") || name.contains("CHACHA20_POLY1305"),
                "{name}"
            );
            assert!(
                suite.version() == &rustls::version::TLS13
                    || suite.version() == &rustls::version::TLS12
            );
        }
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);

        // The server certificate chains to the root and names no workload.
        let (chain, _) = server_identity(&ca).unwrap();
        assert!(mesh_identity::uri_sans(&chain[0]).is_empty());
        let root = ca.trust_bundle_der().remove(0);
        let (_, root) = x509_parser::prelude::X509Certificate::from_der(&root).unwrap();
        let (_, leaf) = x509_parser::prelude::X509Certificate::from_der(&chain[0]).unwrap();
        leaf.verify_signature(Some(root.public_key())).unwrap();
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
    }

    use x509_parser::prelude::FromDer;
}
