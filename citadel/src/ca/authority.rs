//! The CA's signing certificate and key.
//!
//! On first start Citadel generates a self-signed P-256 root (10 years) and writes
//! `ca-cert.pem` and `ca-key.pem` (0600) into the state directory; later starts load them.
//! Plug-in mode (Istio's `cacerts` layout): when `cert-chain.pem` and `root-cert.pem` sit beside
//! `ca-cert.pem`/`ca-key.pem`, `ca-cert.pem` is an intermediate and issued chains are
//! leaf → intermediate(s) → root.
//!
//! Trust bundle: the signing root plus extra roots, so a root can be rotated without an outage
//! (see docs/security.md): `extra-roots.pem` in the state directory (or a file named on the
//! command line), and any further roots in a plug-in's `root-cert.pem` (Istio's combined-root
//! layout). Issued chains end with the extra roots and then the signing root, one certificate
//! per element, as Istio appends its root bundle.

use std::path::{Path, PathBuf};

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::files::{self, FileError};

pub const CA_CERT_FILE: &str = "ca-cert.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";
pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
pub const EXTRA_ROOTS_FILE: &str = "extra-roots.pem";

/// Lifetime of a generated root.
pub const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Why the CA could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(transparent)]
    File(#[from] FileError),
    /// `at` names where the bad item is kept: a file path, or a Secret and its data key.
    #[error("{at}: {reason}")]
    Invalid { at: String, reason: String },
    #[error("cannot generate the root CA: {0}")]
    Generate(rcgen::Error),
    #[error("incomplete CA in {at}: {present} is present but {missing} is missing")]
    Incomplete {
        at: String,
        present: &'static str,
        missing: &'static str,
    },
    /// The Kubernetes API server refused or could not be reached (CA kept in a Secret).
    #[error("cannot {action} Secret {secret}: {source}")]
    Kube {
        action: &'static str,
        secret: String,
        #[source]
        source: kube::Error,
    },
}

fn invalid(at: impl std::fmt::Display, reason: impl Into<String>) -> CaError {
    CaError::Invalid {
        at: at.to_string(),
        reason: reason.into(),
    }
}

/// Where the CA's PEM documents are kept, to name them in errors and logs.
#[derive(Debug, Clone)]
pub enum CaOrigin {
    /// Files in a state directory.
    Dir(PathBuf),
    /// Data keys of a Kubernetes Secret.
    Secret { namespace: String, name: String },
}

impl CaOrigin {
    /// How to name item `key` (a file name / data key) of this origin.
    pub fn item(&self, key: &str) -> String {
        match self {
            CaOrigin::Dir(dir) => dir.join(key).display().to_string(),
            CaOrigin::Secret { namespace, name } => format!("Secret {namespace}/{name} key {key}"),
        }
    }
}

impl std::fmt::Display for CaOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaOrigin::Dir(dir) => write!(f, "{}", dir.display()),
            CaOrigin::Secret { namespace, name } => write!(f, "Secret {namespace}/{name}"),
        }
    }
}

/// The CA's PEM documents (Istio's `cacerts` / `istio-ca-secret` names), wherever they are kept.
#[derive(Debug, Clone, Default)]
pub struct CaPems {
    /// `ca-cert.pem`: the signing certificate.
    pub ca_cert: Vec<u8>,
    /// `ca-key.pem`: its private key.
    pub ca_key: Vec<u8>,
    /// `cert-chain.pem`: the signing certificate's chain (plug-in mode); none or empty if
    /// self-signed.
    pub cert_chain: Option<Vec<u8>>,
    /// `root-cert.pem`: the root(s); none, empty or the signing certificate itself if
    /// self-signed.
    pub root_cert: Option<Vec<u8>>,
}

/// A freshly generated self-signed root: (certificate PEM, private key PEM).
pub fn generate_root(trust_domain: &str) -> Result<(String, String), CaError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
    let now = time::OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    dn.push(DnType::CommonName, "Citadel Root CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + ROOT_LIFETIME;
    params.serial_number = Some(super::sign::random_serial());
    let cert = params.self_signed(&key).map_err(CaError::Generate)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The signing key and certificate, and the chain that follows a leaf up to the root.
pub struct CertificateAuthority {
    pub(crate) issuer: Issuer<'static, KeyPair>,
    /// PEM certificates after the leaf in an issued chain: intermediates, then the root.
    pub(crate) chain_after_leaf: Vec<String>,
    pub(crate) signing_not_after: SystemTime,
    root_pem: String,
    /// Roots trusted beside the signing root (PEM), distinct from it and from each other.
    extra_roots: Vec<String>,
    plugged_in: bool,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("plugged_in", &self.plugged_in)
            .field("chain_len", &self.chain_after_leaf.len())
            .field("extra_roots", &self.extra_roots.len())
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads the CA from `state_dir` (created if missing), generating a root on first start.
    pub fn load_or_create(state_dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        files::ensure_dir(state_dir)?;
        let cert_path = state_dir.join(CA_CERT_FILE);
        let key_path = state_dir.join(CA_KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Self::load(state_dir),
            (false, false) => Self::generate(state_dir, trust_domain),
            (true, false) => Err(CaError::Incomplete {
                at: state_dir.display().to_string(),
                present: CA_CERT_FILE,
                missing: CA_KEY_FILE,
            }),
            (false, true) => Err(CaError::Incomplete {
                at: state_dir.display().to_string(),
                present: CA_KEY_FILE,
                missing: CA_CERT_FILE,
            }),
        }
    }

    /// Whether an intermediate from the plug-in files is signing.
    pub fn is_plugged_in(&self) -> bool {
        self.plugged_in
    }

    /// The root certificate, PEM.
    pub fn root_cert_pem(&self) -> &str {
        &self.root_pem
    }

    /// The certificates following a leaf in an issued chain (intermediates, then the root).
    pub fn chain_after_leaf(&self) -> &[String] {
        &self.chain_after_leaf
    }

    /// Roots trusted beside the signing root (PEM).
    pub fn extra_roots(&self) -> &[String] {
        &self.extra_roots
    }

    /// Every trusted root, the signing root first (PEM, one certificate each).
    pub fn trust_bundle(&self) -> Vec<String> {
        std::iter::once(self.root_pem.clone())
            .chain(self.extra_roots.iter().cloned())
            .collect()
    }

    /// The trust bundle as one PEM document (what `/roots.pem` serves).
    pub fn trust_bundle_pem(&self) -> String {
        self.trust_bundle().concat()
    }

    /// Every trusted root, DER (for verifying callers' certificates).
    pub fn trust_bundle_der(&self) -> Vec<CertificateDer<'static>> {
        self.trust_bundle()
            .iter()
            .filter_map(|pem| {
                let mut r = pem.as_bytes();
                rustls_pemfile::certs(&mut r).next().and_then(Result::ok)
            })
            .collect()
    }

    /// Adds the self-signed CA certificates in `path` to the trust bundle (duplicates ignored).
    pub fn add_extra_roots_file(&mut self, path: &Path) -> Result<(), CaError> {
        for der in read_certs(path)? {
            self.add_extra_root(&path.display().to_string(), &der)?;
        }
        Ok(())
    }

    /// Adds one self-signed CA certificate (from `at`, for messages) to the trust bundle.
    pub fn add_extra_root(&mut self, at: &str, der: &CertificateDer<'_>) -> Result<(), CaError> {
        let path = at;
        let cert = parse(path, der)?;
        if !is_ca(&cert) {
            return Err(invalid(
                path,
                format!("{} is not a CA certificate", cert.subject()),
            ));
        }
        cert.verify_signature(None).map_err(|_| {
            invalid(
                path,
                format!("{} is not a self-signed root", cert.subject()),
            )
        })?;
        let pem = to_pem(der);
        if pem != self.root_pem && !self.extra_roots.contains(&pem) {
            tracing::info!(
                from = %path,
                subject = %cert.subject(),
                "trusting an extra root"
            );
            self.extra_roots.push(pem);
        }
        Ok(())
    }

    fn generate(state_dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        let (cert_pem, key_pem) = generate_root(trust_domain)?;

        // Key first: a crash in between leaves a key without a certificate, reported at the
        // next start rather than silently replaced.
        let key_path = state_dir.join(CA_KEY_FILE);
        let cert_path = state_dir.join(CA_CERT_FILE);
        let won = files::create_once(&key_path, key_pem.as_bytes(), 0o600)?;
        if !won {
            // Another process created the CA at the same moment: use theirs.
            return Self::load(state_dir);
        }
        files::create_once(&cert_path, cert_pem.as_bytes(), 0o644)?;
        tracing::info!(
            dir = %state_dir.display(),
            %trust_domain,
            "generated a self-signed root CA"
        );
        Self::load(state_dir)
    }

    fn load(state_dir: &Path) -> Result<Self, CaError> {
        let origin = CaOrigin::Dir(state_dir.to_path_buf());
        let chain_path = state_dir.join(CERT_CHAIN_FILE);
        let root_path = state_dir.join(ROOT_CERT_FILE);
        let incomplete = |present, missing| CaError::Incomplete {
            at: origin.to_string(),
            present,
            missing,
        };
        let (cert_chain, root_cert) = match (chain_path.exists(), root_path.exists()) {
            (true, true) => (
                Some(files::read(&chain_path)?),
                Some(files::read(&root_path)?),
            ),
            (false, false) => (None, None),
            (true, false) => return Err(incomplete(CERT_CHAIN_FILE, ROOT_CERT_FILE)),
            (false, true) => return Err(incomplete(ROOT_CERT_FILE, CERT_CHAIN_FILE)),
        };
        let pems = CaPems {
            ca_cert: files::read(&state_dir.join(CA_CERT_FILE))?,
            ca_key: files::read(&state_dir.join(CA_KEY_FILE))?,
            cert_chain,
            root_cert,
        };
        let mut ca = Self::from_pems(&pems, &origin)?;
        let extra_path = state_dir.join(EXTRA_ROOTS_FILE);
        if extra_path.exists() {
            ca.add_extra_roots_file(&extra_path)?;
        }
        Ok(ca)
    }

    /// Builds the CA from its PEM documents. Self-signed: `ca-cert.pem` is the root (a
    /// `root-cert.pem` may repeat it and add further roots). Plug-in: `ca-cert.pem` is an
    /// intermediate, `cert-chain.pem` leads from it towards `root-cert.pem`, which may hold
    /// several roots (the one the chain leads to signs; the others are extra roots). Empty
    /// documents count as absent (Istio's self-signed `istio-ca-secret` has them empty).
    pub fn from_pems(pems: &CaPems, origin: &CaOrigin) -> Result<Self, CaError> {
        let cert_at = origin.item(CA_CERT_FILE);
        let key_at = origin.item(CA_KEY_FILE);
        let chain_at = origin.item(CERT_CHAIN_FILE);
        let root_at = origin.item(ROOT_CERT_FILE);

        let signing = certs_in(&cert_at, &pems.ca_cert)?
            .into_iter()
            .next()
            .ok_or_else(|| invalid(&cert_at, "no certificate"))?;
        let key_pem =
            std::str::from_utf8(&pems.ca_key).map_err(|_| invalid(&key_at, "not PEM text"))?;
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| invalid(&key_at, format!("cannot load private key: {e}")))?;

        let signing_x509 = parse(&cert_at, &signing)?;
        if !is_ca(&signing_x509) {
            return Err(invalid(
                &cert_at,
                "not a CA certificate (basicConstraints CA:true)",
            ));
        }
        if signing_x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(invalid(&key_at, format!("does not match {CA_CERT_FILE}")));
        }
        let signing_not_after = to_system_time(signing_x509.validity().not_after.timestamp());

        let non_empty = |d: &Option<Vec<u8>>| {
            d.as_ref()
                .filter(|b| !b.iter().all(u8::is_ascii_whitespace))
                .cloned()
        };
        let chain_pem = non_empty(&pems.cert_chain);
        let roots = match non_empty(&pems.root_cert) {
            Some(b) => {
                let roots = certs_in(&root_at, &b)?;
                if roots.is_empty() {
                    return Err(invalid(&root_at, "no certificate"));
                }
                roots
            }
            None => Vec::new(),
        };
        let plugged_in = chain_pem.is_some() || (!roots.is_empty() && !roots.contains(&signing));
        if plugged_in && roots.is_empty() {
            return Err(CaError::Incomplete {
                at: origin.to_string(),
                present: CERT_CHAIN_FILE,
                missing: ROOT_CERT_FILE,
            });
        }

        let other_roots: Vec<CertificateDer<'static>>;
        let chain: Vec<CertificateDer<'static>> = if plugged_in {
            let listed = match &chain_pem {
                Some(b) => certs_in(&chain_at, b)?,
                None => Vec::new(),
            };
            let mut chain: Vec<CertificateDer<'static>> =
                listed.into_iter().filter(|c| !roots.contains(c)).collect();
            if chain.first() != Some(&signing) {
                chain.insert(0, signing.clone());
            }
            let top = chain
                .last()
                .cloned()
                .ok_or_else(|| invalid(&chain_at, "no certificate"))?;
            let top_x509 = parse(&chain_at, &top)?;
            let root = roots
                .iter()
                .find(|r| {
                    parse(&root_at, r)
                        .is_ok_and(|p| top_x509.verify_signature(Some(p.public_key())).is_ok())
                })
                .cloned()
                .ok_or_else(|| {
                    invalid(
                        &chain_at,
                        format!(
                            "{} is not signed by any certificate in {ROOT_CERT_FILE}",
                            top_x509.subject()
                        ),
                    )
                })?;
            other_roots = roots.iter().filter(|r| **r != root).cloned().collect();
            chain.push(root);
            // Each certificate must be signed by the next; the root by itself.
            for pair in chain.windows(2) {
                let child = parse(&chain_at, &pair[0])?;
                let parent = parse(&chain_at, &pair[1])?;
                child
                    .verify_signature(Some(parent.public_key()))
                    .map_err(|_| {
                        invalid(
                            &chain_at,
                            format!("{} is not signed by {}", child.subject(), parent.subject()),
                        )
                    })?;
            }
            chain
        } else {
            signing_x509.verify_signature(None).map_err(|_| {
                invalid(
                    &cert_at,
                    format!(
                        "not self-signed; an intermediate needs {CERT_CHAIN_FILE} and {ROOT_CERT_FILE}"
                    ),
                )
            })?;
            other_roots = roots.iter().filter(|r| **r != signing).cloned().collect();
            vec![signing.clone()]
        };

        let issuer = Issuer::from_ca_cert_der(&signing, key)
            .map_err(|e| invalid(&cert_at, format!("cannot use as issuer: {e}")))?;
        let chain_after_leaf: Vec<String> = chain.iter().map(|c| to_pem(c)).collect();
        let root_pem = chain_after_leaf.last().cloned().unwrap_or_default();
        tracing::info!(
            %origin,
            plugged_in,
            chain_len = chain_after_leaf.len(),
            "loaded CA"
        );
        let mut ca = CertificateAuthority {
            issuer,
            chain_after_leaf,
            signing_not_after,
            root_pem,
            extra_roots: Vec::new(),
            plugged_in,
        };
        for der in &other_roots {
            ca.add_extra_root(&root_at, der)?;
        }
        Ok(ca)
    }
}

fn certs_in(at: &str, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let mut reader = bytes;
    rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(at, format!("bad PEM: {e}")))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaError> {
    certs_in(&path.display().to_string(), &files::read(path)?)
}

fn parse<'a>(
    at: &(impl std::fmt::Display + ?Sized),
    der: &'a CertificateDer<'_>,
) -> Result<X509Certificate<'a>, CaError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| invalid(at, format!("cannot parse certificate: {e}")))
}

fn is_ca(cert: &X509Certificate<'_>) -> bool {
    matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca)
}

pub(crate) fn to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

pub(crate) fn to_system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}
