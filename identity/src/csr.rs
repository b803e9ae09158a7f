//! A fresh P-256 key and a certificate signing request for it.
//!
//! Citadel trusts nothing in the request but the public key: the identity in the issued
//! certificate comes from the caller's credentials. The request still names the identity the
//! workload expects, as Istio's agent does, so it reads well in logs.

use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::spiffe::SpiffeId;

/// Why a key or request could not be generated.
#[derive(Debug, thiserror::Error)]
#[error("cannot generate key and CSR: {0}")]
pub struct CsrError(rcgen::Error);

impl From<rcgen::Error> for CsrError {
    fn from(e: rcgen::Error) -> Self {
        CsrError(e)
    }
}

/// A private key and the PEM CSR carrying its public key.
pub struct KeyAndCsr {
    key_pkcs8_der: Vec<u8>,
    /// The raw public key (for EC keys, the uncompressed point), as it appears in the
    /// certificate's subjectPublicKey bit string.
    pub public_key_raw: Vec<u8>,
    /// The PEM-encoded PKCS#10 request.
    pub csr_pem: String,
}

impl std::fmt::Debug for KeyAndCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is never printed.
        f.debug_struct("KeyAndCsr")
            .field("csr_pem", &self.csr_pem)
            .finish_non_exhaustive()
    }
}

impl KeyAndCsr {
    /// The private key, PKCS#8 DER, for rustls.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8_der.clone()))
    }
}

/// Generates an ECDSA P-256 key and a CSR for it, with `expected` as URI SAN when given.
pub fn generate(expected: Option<&SpiffeId>) -> Result<KeyAndCsr, CsrError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(id) = expected {
        params.subject_alt_names = vec![rcgen::SanType::URI(id.to_string().try_into()?)];
    }
    let csr = params.serialize_request(&key)?;
    Ok(KeyAndCsr {
        key_pkcs8_der: key.serialize_der(),
        public_key_raw: key.public_key_raw().to_vec(),
        csr_pem: csr.pem()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_verifies_and_carries_p256_key() {
        let id = SpiffeId::new("cluster.local", "default", "reviews").unwrap();
        let k = generate(Some(&id)).unwrap();
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&k.csr_pem).unwrap();
        assert_eq!(
            parsed.params.subject_alt_names,
            vec![rcgen::SanType::URI(id.to_string().try_into().unwrap())]
        );
        // The private key matches the CSR's public key.
        let key = rcgen::KeyPair::try_from(k.key_pkcs8_der.as_slice()).unwrap();
        assert!(key.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256));
        use rcgen::PublicKeyData;
        assert_eq!(key.der_bytes(), parsed.public_key.der_bytes());
        assert_eq!(k.public_key_raw, parsed.public_key.der_bytes());
        // Two calls give two different keys.
        let other = generate(None).unwrap();
        assert_ne!(other.key_pkcs8_der, k.key_pkcs8_der);
    }
}
