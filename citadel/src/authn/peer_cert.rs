//! Renewal: a caller presenting its current mesh certificate on the TLS listener is the
//! identity that certificate names, and only that one.
//!
//! The chain was verified to the trust bundle (signature, validity, client-auth usage) during
//! the TLS handshake; here the leaf is checked again for expiry (an HTTP/2 connection can
//! outlive its certificate) and its single SPIFFE URI SAN must be in Citadel's trust domain.

use std::time::SystemTime;

use mesh_identity::SpiffeId;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::caller::{Authenticated, Authenticator, AuthnError, CallerInfo};

const NAME: &str = "mtls";

/// Accepts a caller by the SPIFFE identity of its verified client certificate.
#[derive(Debug)]
pub struct PeerCertificateAuthenticator {
    trust_domain: String,
}

impl PeerCertificateAuthenticator {
    pub fn new(trust_domain: impl Into<String>) -> Self {
        PeerCertificateAuthenticator {
            trust_domain: trust_domain.into(),
        }
    }
}

fn rejected(reason: impl Into<String>) -> AuthnError {
    AuthnError::Rejected {
        authenticator: NAME,
        reason: reason.into(),
    }
}

#[tonic::async_trait]
impl Authenticator for PeerCertificateAuthenticator {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn authenticate(&self, caller: &CallerInfo) -> Result<Authenticated, AuthnError> {
        let leaf = caller
            .peer_chain
            .first()
            .ok_or(AuthnError::NotApplicable(NAME))?;
        let (_, cert) = X509Certificate::from_der(leaf)
            .map_err(|e| rejected(format!("client certificate does not parse: {e}")))?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        if cert.validity().not_after.timestamp() <= now {
            return Err(rejected("client certificate has expired"));
        }
        let sans = mesh_identity::uri_sans(leaf);
        let [san] = sans.as_slice() else {
            return Err(rejected(format!(
                "client certificate carries {} URI SANs, expected one SPIFFE id",
                sans.len()
            )));
        };
        let id: SpiffeId = san
            .parse()
            .map_err(|_| rejected(format!("{san} is not a workload SPIFFE id")))?;
        if id.trust_domain != self.trust_domain {
            return Err(rejected(format!(
                "{id} is not in trust domain {}",
                self.trust_domain
            )));
        }
        Ok(Authenticated {
            namespace: id.namespace,
            service_account: id.service_account,
            by: NAME,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rcgen::{CertificateParams, KeyPair, SanType};

    use super::*;

    fn cert(sans: &[&str], days_left: i64) -> rustls_pki_types::CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.subject_alt_names = sans
            .iter()
            .map(|s| SanType::URI((*s).try_into().unwrap()))
            .collect();
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(2);
        p.not_after = now + time::Duration::days(days_left);
        p.self_signed(&key).unwrap().der().clone()
    }

    async fn auth(
        chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    ) -> Result<Authenticated, AuthnError> {
        PeerCertificateAuthenticator::new("cluster.local")
            .authenticate(&CallerInfo::default().with_peer_chain(Arc::new(chain)))
            .await
    }

    #[tokio::test]
    async fn identity_is_the_certificates_and_only_a_valid_one() {
        assert!(matches!(
            auth(vec![]).await,
            Err(AuthnError::NotApplicable(_))
        ));
        let ok = auth(vec![cert(&["spiffe://cluster.local/ns/shop/sa/cart"], 1)])
            .await
            .unwrap();
        assert_eq!(
            (ok.namespace.as_str(), ok.service_account.as_str(), ok.by),
            ("shop", "cart", "mtls")
        );
        for (sans, days, why) in [
            (
                &["spiffe://cluster.local/ns/shop/sa/cart"][..],
                -1,
                "expired",
            ),
            (
                &["spiffe://other.domain/ns/shop/sa/cart"][..],
                1,
                "trust domain",
            ),
            (&["https://example.com/"][..], 1, "SPIFFE"),
            (&[][..], 1, "0 URI SANs"),
            (
                &[
                    "spiffe://cluster.local/ns/a/sa/b",
                    "spiffe://cluster.local/ns/c/sa/d",
                ][..],
                1,
                "2 URI SANs",
            ),
        ] {
            let err = auth(vec![cert(sans, days)]).await.unwrap_err();
            assert!(err.to_string().contains(why), "{why}: {err}");
        }
    }
}
