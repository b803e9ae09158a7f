//! Channels to Citadel: plaintext gRPC (the first certificate, asked for with the workload's
//! token) and gRPC over TLS to Citadel's `--tls-addr` listener, where the workload presents its
//! current certificate and Citadel renews that same identity.
//!
//! On the TLS channel Citadel's server certificate is verified like any HTTPS server's (chain
//! to the workload's trust bundle, DNS name or IP of the address, server-auth usage).

use std::sync::Arc;
use std::time::Duration;

use mesh_proto::istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tonic::transport::{Channel, Endpoint};

use crate::workload::IdentityError;

/// How long connecting to Citadel may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one certificate request may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A client for Citadel's plaintext gRPC address (`http://host:port`), connecting lazily.
pub(crate) fn plaintext(
    addr: &str,
) -> Result<IstioCertificateServiceClient<Channel>, IdentityError> {
    let endpoint = Endpoint::from_shared(addr.to_string())
        .map_err(|source| IdentityError::Address {
            addr: addr.to_string(),
            source,
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT);
    Ok(IstioCertificateServiceClient::new(endpoint.connect_lazy()))
}

/// Citadel's TLS listener: where to dial and which name its certificate must carry.
#[derive(Debug, Clone)]
pub(crate) struct TlsTarget {
    /// `host:port` to dial.
    pub(crate) authority: String,
    pub(crate) server_name: ServerName<'static>,
}

impl TlsTarget {
    /// `addr` is `host:port` or `https://host:port`; `server_name` overrides the host as the
    /// name verified in Citadel's certificate.
    pub(crate) fn parse(addr: &str, server_name: Option<&str>) -> Result<Self, IdentityError> {
        let bad = || IdentityError::TlsAddress(addr.to_string());
        let authority = addr
            .trim()
            .strip_prefix("https://")
            .unwrap_or(addr.trim())
            .trim_end_matches('/');
        let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = server_name.unwrap_or(host).to_string();
        let server_name = ServerName::try_from(name).map_err(|_| bad())?;
        Ok(TlsTarget {
            authority: authority.to_string(),
            server_name,
        })
    }

    /// Connects, presenting `chain`/`key` as the client certificate and trusting `roots` for
    /// Citadel's certificate.
    pub(crate) async fn connect(
        &self,
        roots: &[CertificateDer<'static>],
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<IstioCertificateServiceClient<Channel>, IdentityError> {
        let mut store = RootCertStore::empty();
        for r in roots {
            store
                .add(r.clone())
                .map_err(|e| IdentityError::CitadelTls(e.to_string()))?;
        }
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| IdentityError::CitadelTls(e.to_string()))?
                .with_root_certificates(store)
                .with_client_auth_cert(chain, key)
                .map_err(|e| IdentityError::CitadelTls(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let authority = self.authority.clone();
        let name = self.server_name.clone();
        let uri = format!("http://{}", self.authority);
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|source| IdentityError::Address {
                addr: self.authority.clone(),
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        let channel = endpoint
            .connect_with_connector(tower::service_fn(move |_: tonic::codegen::http::Uri| {
                let connector = connector.clone();
                let authority = authority.clone();
                let name = name.clone();
                async move {
                    let tcp = tokio::net::TcpStream::connect(authority.as_str()).await?;
                    let tls = connector.connect(name, tcp).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
                }
            }))
            .await
            .map_err(|source| IdentityError::Connect {
                addr: self.authority.clone(),
                source,
            })?;
        Ok(IstioCertificateServiceClient::new(channel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_addresses() {
        let t = TlsTarget::parse("https://127.0.0.1:8061/", None).unwrap();
        assert_eq!(t.authority, "127.0.0.1:8061");
        assert!(matches!(t.server_name, ServerName::IpAddress(_)));
        let t = TlsTarget::parse("istio-citadel.istio-system.svc:8061", None).unwrap();
        assert_eq!(
            t.server_name,
            ServerName::try_from("istio-citadel.istio-system.svc").unwrap()
        );
        let t = TlsTarget::parse("10.0.0.7:8061", Some("istio-citadel")).unwrap();
        assert_eq!(t.authority, "10.0.0.7:8061");
        assert_eq!(
            t.server_name,
            ServerName::try_from("istio-citadel").unwrap()
        );
        for bad in ["", "127.0.0.1", ":8061", "host:port", "host:99999"] {
            assert!(TlsTarget::parse(bad, None).is_err(), "{bad}");
        }
    }
}
