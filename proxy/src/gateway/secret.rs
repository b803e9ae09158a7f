//! SDS secrets from Pilot (`envoy.extensions.transport_sockets.tls.v3.Secret`): a gateway
//! certificate (`tls_certificate`: chain and key) or a client CA (`validation_context`:
//! `trusted_ca`), named as the listeners' `DownstreamTlsContext`s reference them (Istio's
//! `<credentialName>` and `<credentialName>-cacert`).
//!
//! A secret is checked whole when it arrives: PEM that does not parse, a chain without a
//! certificate, a key that does not belong to the certificate, or a CA that is not a usable
//! certificate reject the response (NACK, with the reason) and the last good secrets stay.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::sync::Arc;

use mesh_proto::envoy::envoy::config::core::v3::{DataSource, data_source};
use mesh_proto::envoy::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use mesh_proto::envoy::google::protobuf::Any;
use mesh_proto::type_url;
use prost::Message;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// Secrets held, by name.
pub type Secrets = BTreeMap<String, Arc<SdsSecret>>;

/// One part of a secret a listener's TLS reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretPart {
    CertChain,
    PrivateKey,
    TrustedCa,
}

impl SecretPart {
    /// The file a credential directory holds this part in (`--gateway-credential-dir`).
    pub fn file_name(self) -> &'static str {
        match self {
            SecretPart::CertChain => "tls.crt",
            SecretPart::PrivateKey => "tls.key",
            SecretPart::TrustedCa => "ca.crt",
        }
    }
}

/// A secret received and checked: PEM bytes as sent.
#[derive(Clone, PartialEq, Eq)]
pub struct SdsSecret {
    pub name: String,
    pub cert_chain: Option<Vec<u8>>,
    pub private_key: Option<Vec<u8>>,
    pub trusted_ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for SdsSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SdsSecret")
            .field("name", &self.name)
            .field("cert_chain", &self.cert_chain.as_ref().map(Vec::len))
            .field("private_key", &self.private_key.is_some())
            .field("trusted_ca", &self.trusted_ca.as_ref().map(Vec::len))
            .finish()
    }
}

impl SdsSecret {
    /// The bytes of `part`, if the secret has it.
    pub fn part(&self, part: SecretPart) -> Option<&[u8]> {
        match part {
            SecretPart::CertChain => self.cert_chain.as_deref(),
            SecretPart::PrivateKey => self.private_key.as_deref(),
            SecretPart::TrustedCa => self.trusted_ca.as_deref(),
        }
    }
}

/// Why a secret is refused: (field, reason).
pub type SecretError = (String, String);

fn bytes(field: &str, d: &Option<DataSource>) -> Result<Vec<u8>, SecretError> {
    match d.as_ref().and_then(|d| d.specifier.as_ref()) {
        Some(data_source::Specifier::InlineBytes(b)) => Ok(b.clone()),
        Some(data_source::Specifier::InlineString(s)) => Ok(s.as_bytes().to_vec()),
        Some(data_source::Specifier::Filename(f)) if !f.is_empty() => {
            crate::tls::read_pem_file(std::path::Path::new(f))
                .map_err(|e| (field.to_string(), format!("cannot read {f}: {e}")))
        }
        Some(data_source::Specifier::EnvironmentVariable(_)) => Err((
            field.to_string(),
            "environment variable data sources are not supported".to_string(),
        )),
        _ => Err((field.to_string(), "missing".to_string())),
    }
}

/// The certificates of a PEM text (at least one).
pub fn pem_certs(field: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, SecretError> {
    let certs = rustls_pemfile::certs(&mut BufReader::new(pem))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| (field.to_string(), format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err((field.to_string(), "bad PEM: no certificate".to_string()));
    }
    Ok(certs)
}

/// The private key of a PEM text.
pub fn pem_key(field: &str, pem: &[u8]) -> Result<PrivateKeyDer<'static>, SecretError> {
    rustls_pemfile::private_key(&mut BufReader::new(pem))
        .map_err(|e| (field.to_string(), format!("bad PEM: {e}")))?
        .ok_or_else(|| (field.to_string(), "bad PEM: no private key".to_string()))
}

/// Decodes and checks one `Secret` resource.
pub fn decode_secret(any: &Any) -> Result<SdsSecret, SecretError> {
    if any.type_url != type_url::SECRET {
        return Err((
            "type_url".to_string(),
            format!("expected {}, got {}", type_url::SECRET, any.type_url),
        ));
    }
    let s = Secret::decode(any.value.as_slice())
        .map_err(|e| (String::new(), format!("cannot decode: {e}")))?;
    if s.name.is_empty() {
        return Err(("name".to_string(), "empty".to_string()));
    }
    let mut out = SdsSecret {
        name: s.name.clone(),
        cert_chain: None,
        private_key: None,
        trusted_ca: None,
    };
    match &s.r#type {
        Some(secret::Type::TlsCertificate(t)) => {
            let chain = bytes("tls_certificate.certificate_chain", &t.certificate_chain)?;
            let key = bytes("tls_certificate.private_key", &t.private_key)?;
            let certs = pem_certs("tls_certificate.certificate_chain", &chain)?;
            let der = pem_key("tls_certificate.private_key", &key)?;
            let provider = rustls::crypto::ring::default_provider();
            CertifiedKey::from_der(certs, der, &provider).map_err(|e| {
                (
                    "tls_certificate.private_key".to_string(),
                    format!("does not match the certificate or is unusable: {e}"),
                )
            })?;
            out.cert_chain = Some(chain);
            out.private_key = Some(key);
        }
        Some(secret::Type::ValidationContext(v)) => {
            let ca = bytes("validation_context.trusted_ca", &v.trusted_ca)?;
            let mut roots = RootCertStore::empty();
            for c in pem_certs("validation_context.trusted_ca", &ca)? {
                roots.add(c).map_err(|e| {
                    (
                        "validation_context.trusted_ca".to_string(),
                        format!("bad CA certificate: {e}"),
                    )
                })?;
            }
            out.trusted_ca = Some(ca);
        }
        Some(_) => {
            return Err((
                "type".to_string(),
                "only tls_certificate and validation_context secrets are supported".to_string(),
            ));
        }
        None => return Err(("type".to_string(), "missing".to_string())),
    }
    Ok(out)
}
