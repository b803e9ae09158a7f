//! TLS origination to servers outside the mesh identity (DestinationRule `tls.mode` SIMPLE
//! and MUTUAL): rustls with the ring provider, TLS 1.2 and 1.3, ring's default suites (AEAD
//! with ECDHE only). The server chain is verified with webpki against the cluster's
//! `trusted_ca` file, or, when none is given, the operating system's roots
//! (`rustls-native-certs`: the same bundle `curl` and Envoy's images use, kept current by the
//! OS rather than frozen into the binary as `webpki-roots` would be). Names: the cluster's SAN
//! matchers when it has some, else the SNI. `insecureSkipVerify` skips both.
//!
//! The HTTP upstream code dials with a bare `ClientConfig`; [`server_name_of`] gives the
//! SNI that configuration was built for (keyed by its client-certificate resolver, which
//! every copy of the configuration shares), so the dialler needs no other parameter.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Weak};

use parking_lot::Mutex;
use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Serialize;

/// Which subject alternative name a matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SanKind {
    Dns,
    Uri,
    Ip,
}

/// One accepted server name (exact; DNS names also match a wildcard certificate).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct SanMatch {
    pub kind: SanKind,
    pub value: String,
}

/// What Pilot asked for, as decoded from the cluster's `UpstreamTlsContext`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct OriginationSpec {
    /// `tls_certificates[0]`: (certificate chain file, private key file); MUTUAL only.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// `validation_context.trusted_ca` file; `None`: the system roots.
    pub trusted_ca: Option<PathBuf>,
    pub sans: Vec<SanMatch>,
    /// Server name sent (empty: none, the endpoint's IP is dialled).
    pub sni: String,
    /// `trust_chain_verification: ACCEPT_UNTRUSTED` (Istio's `insecureSkipVerify`).
    pub insecure_skip_verify: bool,
}

/// Why a cluster's TLS origination cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum OriginationError {
    #[error("cannot read {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0}")]
    Tls(String),
}

/// A built TLS origination: the spec and the client configuration made from it.
#[derive(Clone)]
pub struct Origination {
    pub spec: OriginationSpec,
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for Origination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.spec.fmt(f)
    }
}
impl PartialEq for Origination {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}
impl Eq for Origination {}
impl std::hash::Hash for Origination {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.spec.hash(state)
    }
}
impl Serialize for Origination {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.spec.serialize(s)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The operating system's trust anchors, loaded once. Unreadable entries are skipped (and
/// logged); none at all leaves an empty store, so every chain fails verification.
pub fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: LazyLock<Arc<RootCertStore>> = LazyLock::new(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "cannot load a system trust anchor");
        }
        let mut store = RootCertStore::empty();
        let (added, ignored) = store.add_parsable_certificates(found.certs);
        tracing::debug!(added, ignored, "system trust anchors loaded");
        Arc::new(store)
    });
    ROOTS.clone()
}

fn read(path: &Path) -> Result<Vec<u8>, OriginationError> {
    super::read_pem_file(path).map_err(|e| OriginationError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Every certificate of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, OriginationError> {
    let pem = read(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| OriginationError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(OriginationError::File {
            path: path.display().to_string(),
            reason: "no PEM certificate".into(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, OriginationError> {
    let pem = read(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| e.to_string())
        .and_then(|k| k.ok_or_else(|| "no PEM private key".to_string()))
        .map_err(|reason| OriginationError::File {
            path: path.display().to_string(),
            reason,
        })
}

impl Origination {
    /// Reads the files and builds the client configuration.
    pub fn build(spec: OriginationSpec) -> Result<Origination, OriginationError> {
        let provider = provider();
        let roots = match (&spec.trusted_ca, spec.insecure_skip_verify) {
            (_, true) => None,
            (Some(ca), false) => {
                let mut store = RootCertStore::empty();
                for c in load_certs(ca)? {
                    store.add(c).map_err(|e| OriginationError::File {
                        path: ca.display().to_string(),
                        reason: format!("not a CA certificate: {e}"),
                    })?;
                }
                Some(Arc::new(store))
            }
            (None, false) => Some(system_roots()),
        };
        let verifier = Arc::new(Verifier {
            roots,
            sans: spec.sans.clone(),
            provider: provider.clone(),
        });
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| OriginationError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &spec.client_cert {
            Some((chain, key)) => builder
                .with_client_auth_cert(load_certs(chain)?, load_key(key)?)
                .map_err(|e| OriginationError::Tls(format!("client certificate: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        config.resumption = rustls::client::Resumption::disabled();
        let name = match spec.sni.as_str() {
            "" => None,
            sni => Some(ServerName::try_from(sni.to_string()).map_err(|e| {
                OriginationError::Tls(format!("sni {sni:?} is not a server name: {e}"))
            })?),
        };
        if let Some(name) = name {
            remember_name(&config.client_auth_cert_resolver, name);
        }
        Ok(Origination {
            spec,
            config: Arc::new(config),
        })
    }

    /// The client configuration (ALPN is added per hop by the caller).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }
}

/// Server names by the address of the client-certificate resolver of the configuration they
/// were built for. The `Weak` keeps that address from being reused while the entry exists.
type Names = HashMap<usize, (Weak<dyn ResolvesClientCert>, ServerName<'static>)>;

static NAMES: LazyLock<Mutex<Names>> = LazyLock::new(Default::default);

fn key_of(resolver: &Arc<dyn ResolvesClientCert>) -> usize {
    Arc::as_ptr(resolver) as *const () as usize
}

fn remember_name(resolver: &Arc<dyn ResolvesClientCert>, name: ServerName<'static>) {
    let mut names = NAMES.lock();
    names.retain(|_, (w, _)| w.strong_count() > 0);
    names.insert(key_of(resolver), (Arc::downgrade(resolver), name));
}

/// The SNI a TLS origination configuration (or a copy of it with other ALPN) was built
/// for; `None` for mesh mTLS configurations and originations without an SNI.
pub fn server_name_of(config: &ClientConfig) -> Option<ServerName<'static>> {
    let names = NAMES.lock();
    names
        .get(&key_of(&config.client_auth_cert_resolver))
        .filter(|(w, _)| w.strong_count() > 0)
        .map(|(_, name)| name.clone())
}

/// Chain to `roots` (none: insecure, anything goes), then the names.
#[derive(Debug)]
struct Verifier {
    roots: Option<Arc<RootCertStore>>,
    sans: Vec<SanMatch>,
    provider: Arc<CryptoProvider>,
}

impl Verifier {
    fn names_match(
        &self,
        cert: &ParsedCertificate<'_>,
        der: &CertificateDer<'_>,
        dialled: &ServerName<'_>,
    ) -> Result<(), rustls::Error> {
        if self.sans.is_empty() {
            // The SNI names the server; an endpoint dialled by IP (no SNI) is checked by its
            // chain only, as Envoy does without SAN matchers.
            return match dialled {
                ServerName::DnsName(_) => rustls::client::verify_server_name(cert, dialled),
                _ => Ok(()),
            };
        }
        let uris = mesh_identity::uri_sans(der);
        let found = self.sans.iter().any(|m| match m.kind {
            SanKind::Uri => uris.iter().any(|u| u == &m.value),
            SanKind::Dns => ServerName::try_from(m.value.as_str())
                .is_ok_and(|n| rustls::client::verify_server_name(cert, &n).is_ok()),
            SanKind::Ip => m
                .value
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| rustls::client::verify_server_name(cert, &ip.into()).is_ok()),
        });
        if found {
            Ok(())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        self.names_match(&cert, end_entity, server_name)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
#[path = "origination_tests.rs"]
mod tests;
