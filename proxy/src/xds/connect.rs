//! The channel to Pilot: plaintext gRPC (`http://host:port`, Istio's 15010), or gRPC over
//! mutual TLS (`https://host:port`, Istio's 15012) with the workload certificate.
//!
//! Over mTLS the proxy presents its workload certificate (the one Citadel issued, read again
//! for every connection, so a reconnect after a rotation uses the new one; no session
//! resumption) and accepts Pilot's certificate when it chains to the mesh roots and carries a
//! SPIFFE id that is one of `expected_sans`, or, with none given, any SPIFFE id of the trust
//! domain. Istio checks istiod's identity the same way; pin it with `--xds-san`.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tonic::transport::{Channel, Endpoint};

use super::client::StreamError;
use crate::tls::IdentitySlot;

/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The mTLS side of the xDS connection.
#[derive(Debug, Clone, Default)]
pub struct XdsTlsConfig {
    /// The workload identity; connecting waits until it holds a certificate.
    pub identity: IdentitySlot,
    /// SPIFFE ids Pilot's certificate may carry; empty: any id of the trust domain.
    pub expected_sans: Vec<String>,
}

/// `host:port` of an xDS address (`http://`, `https://` or none).
fn authority(addr: &str) -> Result<&str, StreamError> {
    let a = addr.trim();
    let a = a
        .strip_prefix("https://")
        .or_else(|| a.strip_prefix("http://"))
        .unwrap_or(a)
        .trim_end_matches('/');
    match a.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(a),
        _ => Err(StreamError::Address(
            addr.to_string(),
            "expected host:port".into(),
        )),
    }
}

/// Connects to Pilot at `addr`, over mTLS when `tls` is given.
pub(super) async fn connect(
    addr: &str,
    tls: Option<&XdsTlsConfig>,
) -> Result<Channel, StreamError> {
    let Some(tls) = tls else {
        let endpoint = Endpoint::from_shared(addr.to_string())
            .map_err(|e| StreamError::Address(addr.to_string(), e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT);
        return Ok(endpoint.connect().await?);
    };
    let authority = authority(addr)?.to_string();
    let identity = tls.identity.get().ok_or(StreamError::NoIdentity)?;
    let mut config = (*identity.client_config(&tls.expected_sans)).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    // Every connection shows the certificate held now (a resumed session would not).
    config.resumption = rustls::client::Resumption::disabled();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    // The verifier checks the SPIFFE id, not a DNS name; the host is what SNI carries.
    let host = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let name = ServerName::try_from(host)
        .map_err(|e| StreamError::Address(addr.to_string(), e.to_string()))?;
    let endpoint = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| StreamError::Address(addr.to_string(), e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT);
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let (connector, authority, name) = (connector.clone(), authority.clone(), name.clone());
            async move {
                let tcp = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    tokio::net::TcpStream::connect(authority.as_str()),
                )
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect"))??;
                let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                    .await
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "tls"))??;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await?;
    Ok(channel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(
            authority("https://127.0.0.1:15012").unwrap(),
            "127.0.0.1:15012"
        );
        assert_eq!(
            authority("http://pilot.istio-system:15010/").unwrap(),
            "pilot.istio-system:15010"
        );
        assert_eq!(authority("[::1]:15012").unwrap(), "[::1]:15012");
        for bad in ["", "https://pilot", "https://:15012", "pilot:port"] {
            assert!(authority(bad).is_err(), "{bad}");
        }
    }
}
