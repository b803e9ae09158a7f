//! The Kubernetes credential source: gateway credentials read from Secrets through the API
//! server (`--credential-kube`), as istiod serves `credentialName`.
//!
//! One [`kube::runtime::watcher`] per watched namespace (or one for the whole cluster) lists
//! the Secrets and then watches them; the Secrets that are credentials
//! ([`credential_from_secret`]) are kept and published as [`Credentials`] on the same channel
//! as the directory source, so pushes, NACK handling and the SDS sync status are the same.
//!
//! - A list (the first one, and every relist after a `410 Gone` or a broken watch) is
//!   buffered and replaces that watcher's credentials in one change when complete; until
//!   then, and while the watcher retries with backoff after an error, the last good
//!   credentials stay published.
//! - A malformed Secret (half of a certificate/key pair) is skipped with a warning naming the
//!   namespace, name and missing key, and counted (`pilot_sds_credentials_rejected_total`);
//!   the Secret's last good version, if any, stays. Key material is never logged.
//! - The field selector leaves out Secret types that never hold a credential (service
//!   account tokens, image pull secrets, Helm releases).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use super::metrics::SdsMetrics;
use super::secret::{Secret, credential_from_secret, secret_key};
use super::store::{Credential, CredentialSource, Credentials};

/// Secret types never read as credentials (left out by the API server).
pub const SECRET_FIELD_SELECTOR: &str = "type!=kubernetes.io/service-account-token,\
type!=kubernetes.io/dockercfg,type!=kubernetes.io/dockerconfigjson,type!=helm.sh/release.v1";

type Key = (String, String);

/// What one Secret is to the credential source.
enum Judged {
    /// Unnamed: nothing to do.
    Ignore,
    /// No credential keys at all.
    NotCredential(Key),
    Valid(Key, Credential),
    /// Malformed (logged and counted): its last good version stays.
    Invalid(Key),
}

fn judge(secret: &Secret, metrics: &SdsMetrics) -> Judged {
    let key = match secret_key(secret) {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!(error = %e, "kubernetes secret skipped");
            return Judged::Ignore;
        }
    };
    match credential_from_secret(secret) {
        Ok(Some(cred)) => Judged::Valid(key, cred),
        Ok(None) => Judged::NotCredential(key),
        Err(e) => {
            metrics.rejected.inc();
            tracing::warn!(namespace = %key.0, name = %key.1, error = %e,
                "kubernetes secret is not a valid gateway credential; skipped (its last valid version, if any, stays)");
            Judged::Invalid(key)
        }
    }
}

/// The credentials one watcher has delivered, and its list in progress.
#[derive(Debug, Default)]
pub struct SecretSync {
    current: BTreeMap<Key, Credential>,
    /// Credentials of the list in progress (between `Init` and `InitDone`).
    listing: Option<BTreeMap<Key, Credential>>,
    lists: u64,
}

impl SecretSync {
    /// The credentials of the last complete list plus the changes watched since.
    pub fn credentials(&self) -> &BTreeMap<Key, Credential> {
        &self.current
    }

    /// Whether a full list has been applied.
    pub fn is_synced(&self) -> bool {
        self.lists > 0
    }

    /// Applies one watcher event; `true` when the credentials changed.
    pub fn handle(&mut self, event: watcher::Event<Secret>, metrics: &SdsMetrics) -> bool {
        match event {
            watcher::Event::Init => {
                self.listing = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(secret) => {
                let entry = match judge(&secret, metrics) {
                    Judged::Valid(key, cred) => Some((key, cred)),
                    Judged::Invalid(key) => self.current.get(&key).cloned().map(|c| (key, c)),
                    Judged::NotCredential(_) | Judged::Ignore => None,
                };
                if let Some((key, cred)) = entry {
                    self.listing
                        .get_or_insert_with(BTreeMap::new)
                        .insert(key, cred);
                }
                false
            }
            watcher::Event::InitDone => {
                let listed = self.listing.take().unwrap_or_default();
                self.lists += 1;
                tracing::info!(
                    credentials = listed.len(),
                    relist = self.lists > 1,
                    "kubernetes secrets listed"
                );
                let changed = listed != self.current;
                self.current = listed;
                changed
            }
            watcher::Event::Apply(secret) => match judge(&secret, metrics) {
                Judged::Valid(key, cred) => {
                    if self.current.get(&key) == Some(&cred) {
                        return false;
                    }
                    tracing::info!(namespace = %key.0, name = %key.1, "gateway credential updated from kubernetes");
                    self.current.insert(key, cred);
                    true
                }
                Judged::NotCredential(key) => {
                    let removed = self.current.remove(&key).is_some();
                    if removed {
                        tracing::info!(namespace = %key.0, name = %key.1, "kubernetes secret no longer holds a gateway credential");
                    }
                    removed
                }
                Judged::Invalid(_) | Judged::Ignore => false,
            },
            watcher::Event::Delete(secret) => {
                let Ok(key) = secret_key(&secret) else {
                    return false;
                };
                let removed = self.current.remove(&key).is_some();
                if removed {
                    tracing::info!(namespace = %key.0, name = %key.1, "gateway credential deleted in kubernetes");
                }
                removed
            }
        }
    }
}

/// No client for the API server could be made.
#[derive(Debug, thiserror::Error)]
pub enum KubeClientError {
    #[error("cannot read kubeconfig {path}: {cause}")]
    Kubeconfig {
        path: String,
        cause: kube::config::KubeconfigError,
    },
    #[error("cannot configure the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// A client from `kubeconfig`, else in-cluster config, else `KUBECONFIG` / `~/.kube/config`.
pub async fn kube_client(
    kubeconfig: Option<&std::path::Path>,
) -> Result<kube::Client, KubeClientError> {
    let Some(path) = kubeconfig else {
        return kube::Client::try_default()
            .await
            .map_err(KubeClientError::Client);
    };
    let shown = path.display().to_string();
    let file =
        kube::config::Kubeconfig::read_from(path).map_err(|cause| KubeClientError::Kubeconfig {
            path: shown.clone(),
            cause,
        })?;
    let config =
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|cause| KubeClientError::Kubeconfig { path: shown, cause })?;
    kube::Client::try_from(config).map_err(KubeClientError::Client)
}

/// Where the Kubernetes source looks.
#[derive(Debug, Clone, Default)]
pub struct KubeCredentialOptions {
    /// Watch only these namespaces (one watcher each); every namespace when empty.
    pub namespaces: Vec<String>,
    /// Serve secrets on plaintext xDS streams too (see [`CredentialSource`]).
    pub allow_plaintext: bool,
}

/// The union of every watcher's credentials.
fn merged(syncs: &[SecretSync]) -> Credentials {
    Credentials::from_entries(
        syncs
            .iter()
            .flat_map(|s| s.credentials().iter().map(|(k, c)| (k.clone(), c.clone()))),
    )
}

/// Watches the Secrets (on the current Tokio runtime) until `shutdown` flips, publishing each
/// change of the credentials. The second value becomes `true` once every watcher's first list
/// is published.
pub fn watch_kube(
    client: kube::Client,
    options: KubeCredentialOptions,
    metrics: SdsMetrics,
    mut shutdown: watch::Receiver<bool>,
) -> (CredentialSource, watch::Receiver<bool>) {
    let (source, tx) = CredentialSource::channel(
        Credentials::default(),
        options.allow_plaintext,
        metrics.clone(),
    );
    let (synced_tx, synced_rx) = watch::channel(false);
    let config = watcher::Config::default().fields(SECRET_FIELD_SELECTOR);
    let mut scopes: Vec<Option<String>> = options
        .namespaces
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
        .map(|n| Some(n.to_string()))
        .collect();
    scopes.sort();
    scopes.dedup();
    if scopes.is_empty() {
        scopes.push(None);
    }
    let streams = scopes.iter().enumerate().map(|(i, ns)| {
        let api: Api<Secret> = match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        watcher(api, config.clone())
            .default_backoff()
            .map(move |e| (i, e))
            .boxed()
    });
    let mut events = futures::stream::select_all(streams);
    tracing::info!(namespaces = ?options.namespaces, "watching kubernetes secrets for gateway credentials");
    tokio::spawn(async move {
        let mut syncs: Vec<SecretSync> = scopes.iter().map(|_| SecretSync::default()).collect();
        loop {
            let next = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                next = events.next() => next,
            };
            let Some((i, event)) = next else { break };
            let Some(sync) = syncs.get_mut(i) else {
                continue;
            };
            match event {
                Ok(event) => {
                    let was_synced = sync.is_synced();
                    let changed = sync.handle(event, &metrics);
                    let first_sync = !was_synced && sync.is_synced();
                    if changed {
                        let now = merged(&syncs);
                        tracing::info!(credentials = now.len(), "gateway credentials changed");
                        metrics.changes.inc();
                        metrics.credentials.set(now.len() as i64);
                        if tx.send(Arc::new(now)).is_err() {
                            break;
                        }
                    }
                    if first_sync && syncs.iter().all(SecretSync::is_synced) {
                        synced_tx.send_replace(true);
                    }
                }
                Err(e) => {
                    metrics.kube_watch_errors.inc();
                    tracing::warn!(namespace = ?scopes.get(i).cloned().flatten(), error = %e,
                        "kubernetes secret watch failed; retrying with backoff (the last credentials stay)");
                }
            }
        }
    });
    (source, synced_rx)
}

#[cfg(test)]
mod tests {
    use watcher::Event;

    use super::*;

    fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
        let data: Vec<(&str, &[u8])> = data.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        Secret::new("istio-system", name, &data)
    }

    fn cert_of(sync: &SecretSync, name: &str) -> Option<String> {
        sync.credentials()
            .get(&("istio-system".to_string(), name.to_string()))
            .and_then(|c| c.cert_chain.clone())
            .map(|c| String::from_utf8(c).unwrap())
    }

    fn list(sync: &mut SecretSync, m: &SdsMetrics, secrets: Vec<Secret>) -> bool {
        assert!(!sync.handle(Event::Init, m));
        for s in secrets {
            assert!(
                !sync.handle(Event::InitApply(s), m),
                "no change before InitDone"
            );
        }
        sync.handle(Event::InitDone, m)
    }

    #[test]
    fn lists_replace_watch_events_change_and_malformed_secrets_keep_the_last_good_version() {
        let m = SdsMetrics::default();
        let mut sync = SecretSync::default();
        assert!(!sync.is_synced());
        let good = secret("gw", &[("tls.crt", "C1"), ("tls.key", "K1")]);
        let other = secret("db-password", &[("password", "p")]);
        assert!(list(&mut sync, &m, vec![good, other.clone()]));
        assert!(sync.is_synced());
        assert_eq!(sync.credentials().len(), 1);
        assert_eq!(cert_of(&sync, "gw").as_deref(), Some("C1"));

        // Rotation.
        assert!(sync.handle(
            Event::Apply(secret("gw", &[("tls.crt", "C2"), ("tls.key", "K2")])),
            &m
        ));
        assert_eq!(cert_of(&sync, "gw").as_deref(), Some("C2"));
        // The same content again: no change. An unrelated Secret: no change.
        assert!(!sync.handle(
            Event::Apply(secret("gw", &[("tls.crt", "C2"), ("tls.key", "K2")])),
            &m
        ));
        assert!(!sync.handle(Event::Apply(other), &m));
        // A malformed update: skipped, counted, the last good version stays.
        assert!(!sync.handle(Event::Apply(secret("gw", &[("tls.crt", "C3")])), &m));
        assert_eq!(m.rejected.get(), 1);
        assert_eq!(cert_of(&sync, "gw").as_deref(), Some("C2"));
        // A CA companion is added.
        assert!(sync.handle(Event::Apply(secret("gw-cacert", &[("cacert", "CA")])), &m));
        // A relist where `gw` is malformed and the companion is gone: `gw` keeps its last
        // good version, the companion is dropped.
        assert!(list(
            &mut sync,
            &m,
            vec![secret("gw", &[("tls.key", "K4")])]
        ));
        assert_eq!(m.rejected.get(), 2);
        assert_eq!(sync.credentials().len(), 1);
        assert_eq!(cert_of(&sync, "gw").as_deref(), Some("C2"));
        // The keys are removed from the Secret: no longer a credential.
        assert!(sync.handle(Event::Apply(secret("gw", &[("x", "y")])), &m));
        assert!(sync.credentials().is_empty());
        // Delete.
        assert!(sync.handle(
            Event::Apply(secret("gw", &[("cert", "G"), ("key", "K")])),
            &m
        ));
        assert!(sync.handle(Event::Delete(secret("gw", &[])), &m));
        assert!(!sync.handle(Event::Delete(secret("gw", &[])), &m));
        assert!(sync.credentials().is_empty());
    }

    #[test]
    fn the_union_of_every_watcher_is_published() {
        let m = SdsMetrics::default();
        let mut a = SecretSync::default();
        let mut b = SecretSync::default();
        list(
            &mut a,
            &m,
            vec![secret("a", &[("tls.crt", "A"), ("tls.key", "K")])],
        );
        list(
            &mut b,
            &m,
            vec![secret("b", &[("cert", "B"), ("key", "K")])],
        );
        let all = merged(&[a, b]);
        assert_eq!(all.len(), 2);
        assert!(all.get("istio-system", "a").is_some());
        assert!(all.get("istio-system", "b").is_some());
    }
}
