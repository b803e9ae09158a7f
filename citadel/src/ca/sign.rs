//! Signing: a CSR contributes only its public key; the certificate names the identity the
//! caller authenticated as, nothing else.

use std::time::{Duration, SystemTime};

use mesh_identity::SpiffeId;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, ExtendedKeyUsagePurpose,
    IsCa, KeyUsagePurpose, SanType, SerialNumber,
};

use super::authority::CertificateAuthority;

/// Backdating of `notBefore`, for clocks slightly behind ours.
pub const BACKDATE: Duration = Duration::from_secs(60);

/// Why a CSR was not signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("invalid CSR: {0}")]
    Csr(rcgen::Error),
    #[error("invalid identity {0}: {1}")]
    Identity(String, rcgen::Error),
    #[error("cannot sign: {0}")]
    Sign(rcgen::Error),
}

/// A positive random 159-bit serial number.
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 20];
    rand::fill(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

impl CertificateAuthority {
    /// Issues a leaf certificate for `id`, valid `ttl` from now (backdated a minute), with the
    /// CSR's public key. Everything else in the CSR (subject, SANs, extensions) is ignored. The
    /// result is the chain in PEM, one certificate per element: leaf, any intermediates, any
    /// extra roots of the trust bundle, the signing root.
    pub fn sign(
        &self,
        csr_pem: &str,
        id: &SpiffeId,
        ttl: Duration,
    ) -> Result<Vec<String>, SignError> {
        // Parsing verifies the CSR's self-signature (proof of possession of the key).
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(SignError::Csr)?;

        let now = SystemTime::now();
        let not_before = now - BACKDATE;
        let mut not_after = now + ttl;
        if not_after > self.signing_not_after {
            tracing::debug!(spiffe_id = %id, "leaf lifetime clipped to the CA's");
            not_after = self.signing_not_after;
        }

        let mut params = CertificateParams::default();
        // Empty subject: the identity is the (then critical) URI SAN, as Istio issues it.
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(
            id.to_string()
                .try_into()
                .map_err(|e| SignError::Identity(id.to_string(), e))?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;

        let leaf = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(SignError::Sign)?;
        Ok(self.response_chain(leaf.pem()))
    }

    /// The chain returned for `leaf_pem`: the leaf, the intermediates, the extra roots of the
    /// trust bundle, and the signing root last (so a client taking the last certificate as its
    /// root still gets the one its leaf chains to).
    fn response_chain(&self, leaf_pem: String) -> Vec<String> {
        let (root, intermediates) = match self.chain_after_leaf.split_last() {
            Some((root, rest)) => (Some(root), rest),
            None => (None, &[][..]),
        };
        let mut chain =
            Vec::with_capacity(1 + self.chain_after_leaf.len() + self.extra_roots().len());
        chain.push(leaf_pem);
        chain.extend(intermediates.iter().cloned());
        chain.extend(self.extra_roots().iter().cloned());
        chain.extend(root.cloned());
        chain
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CaError;
    use crate::ca::authority::{CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, ROOT_CERT_FILE};
    use std::os::unix::fs::PermissionsExt;
    use x509_parser::prelude::{FromDer, X509Certificate};

    fn der_of(pem: &str) -> Vec<u8> {
        let mut r = pem.as_bytes();
        rustls_pemfile::certs(&mut r)
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }

    fn csr_claiming(sans: &[&str], cn: &str) -> (rcgen::KeyPair, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.subject_alt_names = sans
            .iter()
            .map(|s| SanType::URI((*s).try_into().unwrap()))
            .chain([SanType::DnsName("evil.example.com".try_into().unwrap())])
            .collect();
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let csr = p.serialize_request(&key).unwrap().pem().unwrap();
        (key, csr)
    }

    fn reviews() -> SpiffeId {
        SpiffeId::new("cluster.local", "default", "reviews").unwrap()
    }

    #[test]
    fn leaf_carries_only_the_callers_identity() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), "cluster.local").unwrap();
        let (key, csr) = csr_claiming(
            &["spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway"],
            "admin",
        );
        let chain = ca
            .sign(&csr, &reviews(), Duration::from_secs(3600))
            .unwrap();
        assert_eq!(chain.len(), 2, "leaf and root");
        let leaf_der = der_of(&chain[0]);
        assert_eq!(
            mesh_identity::uri_sans(&leaf_der),
            vec!["spiffe://cluster.local/ns/default/sa/reviews".to_string()]
        );
        let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
        // No DNS name, no subject, not a CA, the CSR's key.
        let san = leaf.subject_alternative_name().unwrap().unwrap();
        assert_eq!(san.value.general_names.len(), 1);
        assert!(san.critical);
        assert_eq!(leaf.subject().iter().count(), 0);
        assert!(!leaf.is_ca());
        assert_eq!(
            leaf.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
        let ku = leaf.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        // Lifetime: the requested hour, backdated a minute.
        let v = leaf.validity();
        let span = v.not_after.timestamp() - v.not_before.timestamp();
        assert!((3659..=3661).contains(&span), "{span}");
        // Signed by the root, which is the chain's last element.
        let root_der = der_of(&chain[1]);
        let (_, root) = X509Certificate::from_der(&root_der).unwrap();
        leaf.verify_signature(Some(root.public_key())).unwrap();
        assert_eq!(chain[1], ca.root_cert_pem());
    }

    #[test]
    fn root_is_persisted_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("nested/state");
        let first = CertificateAuthority::load_or_create(&state, "cluster.local").unwrap();
        let mode = std::fs::metadata(state.join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = CertificateAuthority::load_or_create(&state, "cluster.local").unwrap();
        assert_eq!(first.root_cert_pem(), second.root_cert_pem());
        assert!(!second.is_plugged_in());

        let root_der = der_of(first.root_cert_pem());
        let (_, root) = X509Certificate::from_der(&root_der).unwrap();
        assert!(root.is_ca());
        assert!(root.key_usage().unwrap().unwrap().value.key_cert_sign());
        let years = (root.validity().not_after.timestamp()
            - root.validity().not_before.timestamp())
            / (365 * 24 * 3600);
        assert_eq!(years, 10);
        root.verify_signature(None).unwrap();
    }

    #[test]
    fn invalid_csrs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), "cluster.local").unwrap();
        let ttl = Duration::from_secs(60);
        assert!(matches!(
            ca.sign("not a csr", &reviews(), ttl),
            Err(SignError::Csr(_))
        ));
        // A CSR whose signature does not match (tampered body).
        let (_, csr) = csr_claiming(&[], "x");
        let der = {
            let mut r = csr.as_bytes();
            let item = rustls_pemfile::read_one(&mut r).unwrap().unwrap();
            match item {
                rustls_pemfile::Item::Csr(d) => d.to_vec(),
                other => panic!("{other:?}"),
            }
        };
        let mut tampered = der.clone();
        let at = tampered.len() / 3;
        tampered[at] ^= 0x01;
        let pem =
            crate::ca::authority::to_pem(&tampered).replace("CERTIFICATE", "CERTIFICATE REQUEST");
        assert!(ca.sign(&pem, &reviews(), ttl).is_err());
    }

    #[test]
    fn incomplete_state_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        CertificateAuthority::load_or_create(dir.path(), "cluster.local").unwrap();
        std::fs::remove_file(dir.path().join(CA_KEY_FILE)).unwrap();
        assert!(matches!(
            CertificateAuthority::load_or_create(dir.path(), "cluster.local"),
            Err(CaError::Incomplete { .. })
        ));
    }

    /// Writes an Istio `cacerts`-style plug-in: a root and an intermediate signed by it.
    fn plug_in(dir: &std::path::Path) -> String {
        let root_key = rcgen::KeyPair::generate().unwrap();
        let mut root_params = CertificateParams::default();
        root_params.distinguished_name = DistinguishedName::new();
        root_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Corp Root");
        root_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = rcgen::Issuer::new(root_params, root_key);

        let int_key = rcgen::KeyPair::generate().unwrap();
        let mut int_params = CertificateParams::default();
        int_params.distinguished_name = DistinguishedName::new();
        int_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Mesh Intermediate");
        int_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        int_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let int = int_params.signed_by(&int_key, &root_issuer).unwrap();

        std::fs::write(dir.join(CA_CERT_FILE), int.pem()).unwrap();
        std::fs::write(dir.join(CA_KEY_FILE), int_key.serialize_pem()).unwrap();
        std::fs::write(dir.join(CERT_CHAIN_FILE), int.pem() + &root.pem()).unwrap();
        std::fs::write(dir.join(ROOT_CERT_FILE), root.pem()).unwrap();
        root.pem()
    }

    #[test]
    fn plugged_in_intermediate_signs_with_full_chain() {
        let dir = tempfile::tempdir().unwrap();
        let root_pem = plug_in(dir.path());
        let ca = CertificateAuthority::load_or_create(dir.path(), "cluster.local").unwrap();
        assert!(ca.is_plugged_in());
        let (_, csr) = csr_claiming(&[], "x");
        let chain = ca.sign(&csr, &reviews(), Duration::from_secs(60)).unwrap();
        assert_eq!(chain.len(), 3, "leaf, intermediate, root");
        assert_eq!(chain[2], root_pem);
        let ders: Vec<Vec<u8>> = chain.iter().map(|p| der_of(p)).collect();
        let certs: Vec<X509Certificate<'_>> = ders
            .iter()
            .map(|d| X509Certificate::from_der(d).unwrap().1)
            .collect();
        certs[0]
            .verify_signature(Some(certs[1].public_key()))
            .unwrap();
        certs[1]
            .verify_signature(Some(certs[2].public_key()))
            .unwrap();
        assert!(certs[0].issuer().to_string().contains("Mesh Intermediate"));
    }

    #[test]
    fn combined_root_file_and_extra_roots_form_the_trust_bundle() {
        // Istio's rotation layout: root-cert.pem holds the old and the new root.
        let dir = tempfile::tempdir().unwrap();
        let root_pem = plug_in(dir.path());
        let other = tempfile::tempdir().unwrap();
        let next_root = plug_in(other.path());
        std::fs::write(
            dir.path().join(ROOT_CERT_FILE),
            next_root.clone() + &root_pem,
        )
        .unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), "cluster.local").unwrap();
        assert_eq!(
            ca.root_cert_pem(),
            root_pem,
            "the root the chain leads to signs"
        );
        assert_eq!(ca.trust_bundle(), vec![root_pem.clone(), next_root.clone()]);
        assert_eq!(ca.trust_bundle_der().len(), 2);
        let (_, csr) = csr_claiming(&[], "x");
        let chain = ca.sign(&csr, &reviews(), Duration::from_secs(60)).unwrap();
        assert_eq!(chain.len(), 4);
        assert_eq!(chain[2], next_root);
        assert_eq!(chain[3], root_pem);

        // The same root twice is trusted once; a non-CA or non-root certificate is refused.
        let mut ca = ca;
        let again = dir.path().join("again.pem");
        std::fs::write(&again, next_root.clone() + &root_pem).unwrap();
        ca.add_extra_roots_file(&again).unwrap();
        assert_eq!(ca.trust_bundle().len(), 2);
        let leaf = dir.path().join("leaf.pem");
        std::fs::write(&leaf, &chain[0]).unwrap();
        let err = ca.add_extra_roots_file(&leaf).unwrap_err();
        assert!(err.to_string().contains("not a CA"), "{err}");
        let intermediate = dir.path().join("int.pem");
        std::fs::write(&intermediate, &chain[1]).unwrap();
        let err = ca.add_extra_roots_file(&intermediate).unwrap_err();
        assert!(err.to_string().contains("not a self-signed root"), "{err}");
    }

    #[test]
    fn plug_in_with_a_foreign_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        plug_in(dir.path());
        let other = tempfile::tempdir().unwrap();
        let other_root = plug_in(other.path());
        std::fs::write(dir.path().join(ROOT_CERT_FILE), other_root).unwrap();
        let err = CertificateAuthority::load_or_create(dir.path(), "cluster.local").unwrap_err();
        assert!(err.to_string().contains("is not signed by"), "{err}");

        // Half a plug-in is an error too.
        let half = tempfile::tempdir().unwrap();
        plug_in(half.path());
        std::fs::remove_file(half.path().join(CERT_CHAIN_FILE)).unwrap();
        assert!(matches!(
            CertificateAuthority::load_or_create(half.path(), "cluster.local"),
            Err(CaError::Incomplete { .. })
        ));
    }
}
