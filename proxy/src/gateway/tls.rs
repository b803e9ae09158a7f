//! [`GatewayTls`]: the rustls server configurations of a gateway listener, one per filter
//! chain, chosen by the ClientHello's server name, rebuilt when their files change.
//!
//! One configuration per chain (rather than one configuration with a certificate resolver)
//! because chains differ in more than the certificate: a MUTUAL server verifies client
//! certificates to its own CA while a SIMPLE one on the same port asks for none, and rustls
//! fixes the client verifier per configuration. The listener reads the ClientHello first
//! (`tokio_rustls::LazyConfigAcceptor`), then hands it the chain's configuration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use serde::Serialize;

use super::decode::{ChainSpec, GatewayTlsSpec, PemSource};
use super::secret::{Secrets, pem_certs, pem_key};

/// How often the certificate files are looked at (modification time and size).
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Why a chain's TLS configuration cannot be built.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("tls chain {chain} ({names}): {reason}")]
pub struct GatewayTlsError {
    /// Index among the listener's TLS chains.
    pub chain: usize,
    /// The chain's server names (`*` when none).
    pub names: String,
    pub reason: String,
}

/// The chain picked for a connection.
#[derive(Clone)]
pub struct Selected {
    /// Index among the listener's TLS chains.
    pub chain: usize,
    pub config: Arc<ServerConfig>,
    /// Names one of which the client certificate must carry (empty: any).
    pub client_sans: Arc<[ServerName<'static>]>,
    /// URI SANs one of which the client certificate must carry (with `client_sans`: either).
    pub client_uris: Arc<[String]>,
}

impl Selected {
    /// Whether the verified client chain (`peer`, leaf first) satisfies the chain's SAN list.
    pub fn client_allowed(&self, peer: Option<&[CertificateDer<'_>]>) -> bool {
        if self.client_sans.is_empty() && self.client_uris.is_empty() {
            return true;
        }
        let Some(leaf) = peer.and_then(|p| p.first()) else {
            return false;
        };
        if !self.client_uris.is_empty()
            && mesh_identity::uri_sans(leaf)
                .iter()
                .any(|u| self.client_uris.contains(u))
        {
            return true;
        }
        let Ok(parsed) = ParsedCertificate::try_from(leaf) else {
            return false;
        };
        self.client_sans
            .iter()
            .any(|name| rustls::client::verify_server_name(&parsed, name).is_ok())
    }
}

struct Built {
    config: Arc<ServerConfig>,
    client_sans: Arc<[ServerName<'static>]>,
    client_uris: Arc<[String]>,
}

/// A file's modification time and size (`None`: unreadable).
type Stamp = Option<(SystemTime, u64)>;

struct Loaded {
    /// Per chain; `None` while it waits for an SDS secret (or its fallback file).
    chains: Vec<Option<Built>>,
    stamps: Vec<Stamp>,
    checked: Instant,
    /// Stamps of the last reload that failed (not retried until the files change again).
    failed: Option<Vec<Stamp>>,
}

/// A gateway listener's TLS termination.
pub struct GatewayTls {
    spec: GatewayTlsSpec,
    /// The SDS secrets the spec names that were held when built.
    secrets: Secrets,
    files: Vec<PathBuf>,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for GatewayTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.spec.fmt(f)
    }
}

impl PartialEq for GatewayTls {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl Serialize for GatewayTls {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.spec.serialize(s)
    }
}

fn stamp(path: &PathBuf) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The PEM of `src` (`None`: an SDS secret neither sent nor on disk yet).
fn read(src: &PemSource, secrets: &Secrets) -> Result<Option<Vec<u8>>, String> {
    match src {
        PemSource::Inline(b) => Ok(Some(b.clone())),
        PemSource::File(p) => crate::tls::read_pem_file(p)
            .map(Some)
            .map_err(|e| format!("cannot read {}: {e}", p.display())),
        PemSource::Secret {
            name,
            part,
            fallback,
        } => match secrets.get(name) {
            Some(s) => s
                .part(*part)
                .map(|b| Some(b.to_vec()))
                .ok_or_else(|| format!("secret {name} has no {}", part.file_name())),
            None => match crate::tls::read_pem_file(fallback) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(format!("cannot read {}: {e}", fallback.display())),
            },
        },
    }
}

fn what(src: &PemSource, secrets: &Secrets) -> String {
    match src {
        PemSource::File(p) => p.display().to_string(),
        PemSource::Inline(_) => "inline data".to_string(),
        PemSource::Secret { name, .. } if secrets.contains_key(name) => format!("secret {name}"),
        PemSource::Secret { fallback, .. } => fallback.display().to_string(),
    }
}

fn certs(
    src: &PemSource,
    secrets: &Secrets,
) -> Result<Option<Vec<CertificateDer<'static>>>, String> {
    let Some(pem) = read(src, secrets)? else {
        return Ok(None);
    };
    pem_certs(&what(src, secrets), &pem)
        .map(Some)
        .map_err(|(field, reason)| format!("{field}: {reason}"))
}

fn key(src: &PemSource, secrets: &Secrets) -> Result<Option<PrivateKeyDer<'static>>, String> {
    let Some(pem) = read(src, secrets)? else {
        return Ok(None);
    };
    pem_key(&what(src, secrets), &pem)
        .map(Some)
        .map_err(|(field, reason)| format!("{field}: {reason}"))
}

/// The chain's configuration (`None`: waiting for a secret).
fn build_chain(c: &ChainSpec, secrets: &Secrets) -> Result<Option<Built>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut versions: Vec<&'static SupportedProtocolVersion> = Vec::new();
    if c.tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if c.tls12 {
        versions.push(&rustls::version::TLS12);
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| e.to_string())?;
    let builder = match &c.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            let Some(ca_certs) = certs(ca, secrets)? else {
                return Ok(None);
            };
            for cert in ca_certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: bad CA certificate: {e}", what(ca, secrets)))?;
            }
            let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if !c.require_client_certificate {
                v = v.allow_unauthenticated();
            }
            builder.with_client_cert_verifier(v.build().map_err(|e| e.to_string())?)
        }
        None => builder.with_no_client_auth(),
    };
    let (Some(chain), Some(key)) = (
        certs(&c.cert_chain, secrets)?,
        key(&c.private_key, secrets)?,
    ) else {
        return Ok(None);
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate {}: {e}", what(&c.cert_chain, secrets)))?;
    config.alpn_protocols = c.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let mut sans = Vec::with_capacity(c.client_sans.len());
    let mut uris = Vec::new();
    for s in &c.client_sans {
        if s.contains("://") {
            uris.push(s.clone());
            continue;
        }
        sans.push(
            ServerName::try_from(s.clone()).map_err(|e| format!("subject alt name {s:?}: {e}"))?,
        );
    }
    Ok(Some(Built {
        config: Arc::new(config),
        client_sans: sans.into(),
        client_uris: uris.into(),
    }))
}

fn build_all(
    spec: &GatewayTlsSpec,
    secrets: &Secrets,
) -> Result<Vec<Option<Built>>, GatewayTlsError> {
    spec.chains
        .iter()
        .enumerate()
        .map(|(i, c)| {
            build_chain(c, secrets).map_err(|reason| GatewayTlsError {
                chain: i,
                names: if c.server_names.is_empty() {
                    "*".to_string()
                } else {
                    c.server_names.join(",")
                },
                reason,
            })
        })
        .collect()
}

/// Whether `pattern` (`example.com`, `*.example.com`) names `sni`: the length of the match
/// (longer is more specific; exact names beat every wildcard).
pub(super) fn name_match(pattern: &str, sni: &str) -> Option<usize> {
    if pattern.eq_ignore_ascii_case(sni) {
        return Some(usize::MAX);
    }
    let suffix = pattern.strip_prefix('*')?;
    (suffix.starts_with('.')
        && sni.len() > suffix.len()
        && sni
            .get(sni.len() - suffix.len()..)
            .is_some_and(|s| s.eq_ignore_ascii_case(suffix)))
    .then_some(suffix.len())
}

/// The chain for `sni`: exact name, else the longest `*.suffix`, else a chain without names.
/// Without SNI only a chain without names.
pub fn pick(spec: &GatewayTlsSpec, sni: Option<&str>) -> Option<usize> {
    let catch_all = spec.chains.iter().position(|c| c.server_names.is_empty());
    let Some(sni) = sni else {
        return catch_all;
    };
    spec.chains
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            c.server_names
                .iter()
                .filter_map(|p| name_match(p, sni))
                .max()
                .map(|score| (score, i))
        })
        // Highest score; the first chain among equals.
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, i)| i)
        .or(catch_all)
}

impl GatewayTls {
    /// Reads every file and builds every chain's configuration (no SDS secrets held: SDS
    /// names read their fallback files).
    pub fn build(spec: GatewayTlsSpec) -> Result<GatewayTls, GatewayTlsError> {
        GatewayTls::build_with(spec, &Secrets::new())
    }

    /// [`GatewayTls::build`] with the SDS secrets held (`all`; the ones the spec names are
    /// kept). A chain whose secret is neither held nor on disk waits (refuses handshakes).
    pub fn build_with(spec: GatewayTlsSpec, all: &Secrets) -> Result<GatewayTls, GatewayTlsError> {
        let secrets = GatewayTls::secrets_of(&spec, all);
        let mut files: Vec<PathBuf> = Vec::new();
        for c in &spec.chains {
            for src in [
                Some(&c.cert_chain),
                Some(&c.private_key),
                c.client_ca.as_ref(),
            ]
            .into_iter()
            .flatten()
            {
                let path = match src {
                    PemSource::File(p) => p,
                    PemSource::Secret { name, fallback, .. } if !secrets.contains_key(name) => {
                        fallback
                    }
                    _ => continue,
                };
                if !files.contains(path) {
                    files.push(path.clone());
                }
            }
        }
        let stamps = files.iter().map(stamp).collect();
        let chains = build_all(&spec, &secrets)?;
        for (c, built) in spec.chains.iter().zip(&chains) {
            if built.is_none() {
                tracing::info!(server_names = ?c.server_names, secrets = ?spec.secret_names(),
                    "gateway tls chain waits for its secret (handshakes refused until it comes)");
            }
        }
        Ok(GatewayTls {
            spec,
            secrets,
            files,
            loaded: Mutex::new(Loaded {
                chains,
                stamps,
                checked: Instant::now(),
                failed: None,
            }),
        })
    }

    /// Looks at the files now and rebuilds when they changed (a failure keeps the last good
    /// configurations). Returns whether the configurations were rebuilt.
    pub fn reload_if_changed(&self) -> bool {
        self.reload_locked(&mut self.loaded.lock())
    }

    fn reload_locked(&self, loaded: &mut Loaded) -> bool {
        loaded.checked = Instant::now();
        let now: Vec<Stamp> = self.files.iter().map(stamp).collect();
        if now == loaded.stamps || loaded.failed.as_ref() == Some(&now) {
            return false;
        }
        match build_all(&self.spec, &self.secrets) {
            Ok(chains) => {
                tracing::info!(files = ?self.files, "gateway certificates reloaded");
                loaded.chains = chains;
                loaded.stamps = now;
                loaded.failed = None;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "gateway certificates changed but cannot be loaded; keeping the previous ones");
                loaded.failed = Some(now);
                false
            }
        }
    }

    /// What Pilot asked for.
    pub fn spec(&self) -> &GatewayTlsSpec {
        &self.spec
    }

    /// The secrets of `all` that `spec` names.
    pub fn secrets_of(spec: &GatewayTlsSpec, all: &Secrets) -> Secrets {
        spec.secret_names()
            .into_iter()
            .filter_map(|n| all.get(&n).map(|s| (n, s.clone())))
            .collect()
    }

    /// The SDS secrets it was built with.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// Whether a chain still waits for its secret.
    pub fn waiting(&self) -> bool {
        self.loaded.lock().chains.iter().any(Option::is_none)
    }

    /// The configuration for a ClientHello naming `sni` (`None`: no chain takes it, the
    /// connection is refused). Rebuilds first when a file changed since the last look (at
    /// most once a second); a rebuild that fails keeps the last good configurations.
    pub fn select(&self, sni: Option<&str>) -> Option<Selected> {
        let i = pick(&self.spec, sni)?;
        let mut loaded = self.loaded.lock();
        if loaded.checked.elapsed() >= RELOAD_CHECK {
            self.reload_locked(&mut loaded);
        }
        let b = loaded.chains.get(i)?.as_ref()?;
        Some(Selected {
            chain: i,
            config: b.config.clone(),
            client_sans: b.client_sans.clone(),
            client_uris: b.client_uris.clone(),
        })
    }
}
