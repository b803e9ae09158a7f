//! The credential source: a directory `<dir>/<namespace>/<name>/` per credential, holding
//! `tls.crt` (or `cert`), `tls.key` (or `key`) and `ca.crt` (or `cacert`), the keys of a
//! Kubernetes TLS (or Istio generic) Secret, as a mounted Secret volume lays them out.
//! Entries whose name starts with `.` (a volume's `..data` links) are skipped.
//!
//! [`watch_dir`] reads it now and then every poll interval, and publishes a new
//! [`Credentials`] whenever any file's content changed (content, not modification times:
//! a rotation within the same second, or a file replaced by a link swap, is still seen).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::metrics::SdsMetrics;

/// How often the credential directory is read unless configured otherwise.
pub const CREDENTIAL_POLL: Duration = Duration::from_millis(500);

/// The file names read for each part, first found wins.
const CERT_FILES: [&str; 2] = ["tls.crt", "cert"];
const KEY_FILES: [&str; 2] = ["tls.key", "key"];
const CA_FILES: [&str; 2] = ["ca.crt", "cacert"];

/// One credential's PEM files (each `None` when absent).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credential {
    pub cert_chain: Option<Vec<u8>>,
    pub private_key: Option<Vec<u8>>,
    pub ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Sizes only: key material never reaches a log.
        f.debug_struct("Credential")
            .field("cert_chain", &self.cert_chain.as_ref().map(Vec::len))
            .field("private_key", &self.private_key.is_some())
            .field("ca", &self.ca.as_ref().map(Vec::len))
            .finish()
    }
}

/// Every credential read, by (namespace, name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    by_name: BTreeMap<(String, String), Credential>,
}

fn visible_dirs(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let path = e.path();
            // `is_dir` follows links (a Secret volume's entries are links).
            (!name.starts_with('.') && path.is_dir()).then_some((name, path))
        })
        .collect();
    out.sort();
    out
}

fn first_file(dir: &Path, names: &[&str]) -> Option<Vec<u8>> {
    names.iter().find_map(|n| std::fs::read(dir.join(n)).ok())
}

impl Credentials {
    /// Reads `dir` (missing or unreadable: no credentials).
    pub fn read(dir: &Path) -> Credentials {
        let mut by_name = BTreeMap::new();
        for (namespace, ns_dir) in visible_dirs(dir) {
            for (name, cred_dir) in visible_dirs(&ns_dir) {
                let c = Credential {
                    cert_chain: first_file(&cred_dir, &CERT_FILES),
                    private_key: first_file(&cred_dir, &KEY_FILES),
                    ca: first_file(&cred_dir, &CA_FILES),
                };
                if c != Credential::default() {
                    by_name.insert((namespace.clone(), name), c);
                }
            }
        }
        Credentials { by_name }
    }

    /// Credentials from a list (tests, other sources).
    pub fn from_entries(
        entries: impl IntoIterator<Item = ((String, String), Credential)>,
    ) -> Credentials {
        Credentials {
            by_name: entries.into_iter().collect(),
        }
    }

    /// The credential `name` of `namespace`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Credential> {
        self.by_name.get(&(namespace.to_string(), name.to_string()))
    }

    /// Number of credentials.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// The current credentials (and their changes) and the rules for serving them; handed to
/// the ADS server.
#[derive(Debug, Clone)]
pub struct CredentialSource {
    credentials: watch::Receiver<Arc<Credentials>>,
    /// Serve secrets on plaintext xDS streams too (the node's namespace is then unverified).
    pub allow_plaintext: bool,
    pub metrics: SdsMetrics,
}

impl CredentialSource {
    /// A source publishing what is sent on the returned sender.
    pub fn channel(
        initial: Credentials,
        allow_plaintext: bool,
        metrics: SdsMetrics,
    ) -> (CredentialSource, watch::Sender<Arc<Credentials>>) {
        metrics.credentials.set(initial.len() as i64);
        let (tx, rx) = watch::channel(Arc::new(initial));
        (
            CredentialSource {
                credentials: rx,
                allow_plaintext,
                metrics,
            },
            tx,
        )
    }

    /// The credentials now.
    pub fn current(&self) -> Arc<Credentials> {
        self.credentials.borrow().clone()
    }

    /// A receiver told of every change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Credentials>> {
        self.credentials.clone()
    }
}

/// Reads `dir` now and every `poll` (on the current Tokio runtime) until `shutdown` flips,
/// publishing each change of content.
pub fn watch_dir(
    dir: PathBuf,
    poll: Duration,
    allow_plaintext: bool,
    metrics: SdsMetrics,
    mut shutdown: watch::Receiver<bool>,
) -> CredentialSource {
    if !dir.is_dir() {
        tracing::warn!(dir = %dir.display(), "credential directory does not exist (yet); no gateway secrets until it does");
    }
    let first = Credentials::read(&dir);
    tracing::info!(dir = %dir.display(), credentials = first.len(), "gateway credentials read");
    let (source, tx) = CredentialSource::channel(first, allow_plaintext, metrics.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            let d = dir.clone();
            let Ok(now) = tokio::task::spawn_blocking(move || Credentials::read(&d)).await else {
                continue;
            };
            if **tx.borrow() == now {
                continue;
            }
            tracing::info!(dir = %dir.display(), credentials = now.len(), "gateway credentials changed");
            metrics.changes.inc();
            metrics.credentials.set(now.len() as i64);
            if tx.send(Arc::new(now)).is_err() {
                break;
            }
        }
    });
    source
}
