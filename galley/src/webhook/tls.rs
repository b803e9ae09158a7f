//! The webhook's TLS: certificate and key from PEM files, rustls (ring) with TLS 1.2 and 1.3,
//! and an accept loop serving a router over HTTP/1.1 and HTTP/2.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

/// The certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read webhook certificate {path}: {message}")]
    Cert { path: String, message: String },
    #[error("cannot read webhook key {path}: {message}")]
    Key { path: String, message: String },
    #[error("webhook certificate and key do not make a TLS config: {0}")]
    Config(String),
}

/// A rustls server config (ring provider, TLS 1.2 and 1.3, ALPN h2 and http/1.1) from the PEM
/// certificate chain at `cert` and the PEM private key at `key`.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_err = |message: String| TlsError::Cert {
        path: cert.display().to_string(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        message: e.to_string(),
    })?;
    mesh_runtime::https::server_config(chain, key).map_err(|e| TlsError::Config(e.to_string()))
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves
/// ([`mesh_runtime::https::serve_tls`]).
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    mesh_runtime::https::serve_tls(listener, config, router, "webhook", shutdown).await;
}
