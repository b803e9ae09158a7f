//! The webhook's TLS (as galley's webhook): certificate and key from PEM files, rustls (ring)
//! with TLS 1.2 and 1.3, and an accept loop serving a router over HTTP/1.1 and HTTP/2.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

/// A handshake that takes longer is dropped.
pub use mesh_runtime::https::HANDSHAKE_TIMEOUT;

/// A PEM file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {what} {path}: {message}")]
    Read {
        what: &'static str,
        path: String,
        message: String,
    },
    #[error("{what} {path} holds no CERTIFICATE block")]
    Empty { what: &'static str, path: String },
    #[error("{what} do not make a TLS config: {message}")]
    Config { what: &'static str, message: String },
}

/// Every certificate in the PEM file at `path` (at least one).
pub fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let err = |e: rustls::pki_types::pem::Error| PemError::Read {
        what,
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(err)?
        .collect::<Result<_, _>>()
        .map_err(err)?;
    if certs.is_empty() {
        return Err(PemError::Empty {
            what,
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// The private key in the PEM file at `path`.
pub fn read_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| PemError::Read {
        what,
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// A rustls server config (ring, TLS 1.2 and 1.3, ALPN h2 and http/1.1, no client
/// certificate) from the PEM chain at `cert` and the PEM key at `key`.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, PemError> {
    let chain = read_certs("inject certificate", cert)?;
    let key = read_key("inject key", key)?;
    mesh_runtime::https::server_config(chain, key).map_err(|e| PemError::Config {
        what: "inject certificate and key",
        message: e.to_string(),
    })
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves
/// ([`mesh_runtime::https::serve_tls`]).
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    mesh_runtime::https::serve_tls(listener, config, router, "inject webhook", shutdown).await;
}
