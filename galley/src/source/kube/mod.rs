//! The Kubernetes source: galley watches every Istio config kind (one CRD of
//! `charts/mesh/crds/` each) and the context kinds (Namespace, Service, Endpoints,
//! EndpointSlice, Pod, ServiceAccount) with `kube::runtime::watcher`, which lists, watches,
//! re-lists after `410 Gone` and re-connects with backoff.
//!
//! ```text
//!  API server ─► watcher (per kind) ─► KindSync ─► validate ─► store ─► MCP
//!                 Init..InitDone         │ invalid: status.validationMessages + Event "Rejected"
//!                 Apply / Delete         └ full list replaces the kind's Kubernetes objects
//! ```
//!
//! - [`kinds`]: which resources are watched.
//! - [`convert`]: an API object through galley's validation.
//! - [`sync`]: watcher events into store changes.
//! - [`report`]: status patches and Events about rejected objects.
//! - [`metrics`]: watch lag, restarts, rejections.
//! - [`observed`]: the resourceVersions the watches delivered (read-your-write of the apply
//!   API, which in this mode writes to the API server: `crate::api`).

pub mod convert;
pub mod kinds;
pub mod metrics;
pub mod observed;
pub mod report;
pub mod sync;

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{mpsc, watch};

pub use convert::{ORIGIN_ANNOTATION, ORIGIN_KUBERNETES, is_from_kubernetes};
pub use kinds::{CONTEXT_KINDS, WatchedKind, watched_kinds};
pub use metrics::KubeMetrics;
pub use observed::Observed;
pub use report::{EVENT_REASON, Reporter, VALIDATION_CODE};
pub use sync::{Handled, KindSync};

use crate::store::Store;

/// How the Kubernetes source runs.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// Watch only this namespace (cluster-scoped kinds: only the Namespace of that name).
    pub namespace: Option<String>,
    /// Patch the status of rejected objects and create Events about them.
    pub write_status: bool,
    /// A kubeconfig file; `None`: in-cluster config or `KUBECONFIG` (`Client::try_default`).
    pub kubeconfig: Option<PathBuf>,
    /// `reportingInstance` of the Events galley creates (the pod name in a cluster).
    pub instance: String,
}

/// No client for the API server could be made.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot read kubeconfig {path}: {cause}")]
    Kubeconfig {
        path: String,
        cause: kube::config::KubeconfigError,
    },
    #[error("cannot configure the Kubernetes client: {0}")]
    Client(kube::Error),
    #[error("cannot configure the Kubernetes client from {path}: {cause}")]
    Config {
        path: String,
        cause: kube::config::KubeconfigError,
    },
}

/// A client from `kubeconfig`, or in-cluster config / `KUBECONFIG` when `None`.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, KubeError> {
    let Some(path) = kubeconfig else {
        return kube::Client::try_default().await.map_err(KubeError::Client);
    };
    let shown = path.display().to_string();
    let file =
        kube::config::Kubeconfig::read_from(path).map_err(|cause| KubeError::Kubeconfig {
            path: shown.clone(),
            cause,
        })?;
    let config =
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|cause| KubeError::Config { path: shown, cause })?;
    kube::Client::try_from(config).map_err(KubeError::Client)
}

/// Every watched kind of one cluster, feeding one store.
pub struct KubeSource {
    client: kube::Client,
    store: Store,
    options: KubeOptions,
    metrics: KubeMetrics,
    kinds: Vec<WatchedKind>,
    synced: watch::Sender<bool>,
    observed: Observed,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("options", &self.options)
            .field("kinds", &self.kinds.len())
            .finish_non_exhaustive()
    }
}

impl KubeSource {
    pub fn new(
        client: kube::Client,
        store: Store,
        options: KubeOptions,
        metrics: KubeMetrics,
    ) -> KubeSource {
        KubeSource {
            client,
            store,
            options,
            metrics,
            kinds: watched_kinds(),
            synced: watch::Sender::new(false),
            observed: Observed::new(),
        }
    }

    /// The resources watched.
    pub fn kinds(&self) -> &[WatchedKind] {
        &self.kinds
    }

    /// The resourceVersions the watches have delivered into the store.
    pub fn observed(&self) -> Observed {
        self.observed.clone()
    }

    /// Becomes `true` once the first full list of every kind is in the store.
    pub fn synced(&self) -> watch::Receiver<bool> {
        self.synced.subscribe()
    }

    /// Watches every kind until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<&'static str>();
        let reporter = self
            .options
            .write_status
            .then(|| Reporter::new(self.client.clone(), self.options.instance.clone()));
        let mut tasks = tokio::task::JoinSet::new();
        for wk in &self.kinds {
            let mut sync = KindSync::new(
                wk.clone(),
                self.options.namespace.clone(),
                self.store.clone(),
                reporter.clone(),
                self.metrics.clone(),
            );
            // Only the Istio kinds are written through the apply API, so only they are awaited.
            if wk.kind.info().group.ends_with("istio.io") {
                sync = sync.with_observed(self.observed.clone());
            }
            tasks.spawn(watch_kind(
                self.client.clone(),
                self.options.namespace.clone(),
                sync,
                self.metrics.clone(),
                done_tx.clone(),
                crate::stopped(stop_rx.clone()),
            ));
        }
        drop(done_tx);
        tracing::info!(kinds = self.kinds.len(), namespace = ?self.options.namespace, write_status = self.options.write_status, "watching kubernetes");
        let mut pending: std::collections::BTreeSet<&'static str> =
            self.kinds.iter().map(WatchedKind::name).collect();
        if pending.is_empty() {
            self.synced.send_replace(true);
        }
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                done = done_rx.recv() => match done {
                    Some(kind) => {
                        pending.remove(kind);
                        if pending.is_empty() && !*self.synced.borrow() {
                            tracing::info!(revision = self.store.revision(), "every kubernetes kind listed");
                            self.synced.send_replace(true);
                        }
                    }
                    None => break,
                },
            }
        }
        let _ = stop_tx.send(true);
        let all = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), all)
            .await
            .is_err()
        {
            tracing::warn!("kubernetes watches did not stop within 5s");
        }
    }
}

/// Runs one kind's watcher until `stop`; reports on `done` when its first list is stored.
async fn watch_kind(
    client: kube::Client,
    namespace: Option<String>,
    mut sync: KindSync,
    metrics: KubeMetrics,
    done: mpsc::UnboundedSender<&'static str>,
    stop: impl Future<Output = ()>,
) {
    let wk = sync.kind().clone();
    let mut config = watcher::Config::default();
    let api: Api<DynamicObject> = match (&namespace, wk.namespaced) {
        (Some(ns), true) => Api::namespaced_with(client, ns, &wk.resource),
        (Some(ns), false) => {
            config = config.fields(&format!("metadata.name={ns}"));
            Api::all_with(client, &wk.resource)
        }
        (None, _) => Api::all_with(client, &wk.resource),
    };
    let events = watcher(api, config).default_backoff();
    tokio::pin!(events);
    tokio::pin!(stop);
    loop {
        let next = tokio::select! {
            () = &mut stop => return,
            next = events.next() => next,
        };
        match next {
            None => return,
            Some(Ok(event)) => match sync.handle(event).await {
                Ok(h) if h.first_sync => {
                    let _ = done.send(wk.name());
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(kind = wk.name(), error = %e, "cannot store kubernetes objects")
                }
            },
            Some(Err(e)) => {
                metrics
                    .restarts
                    .get_or_create(&metrics::kind_and(wk.name(), "reason", "error"))
                    .inc();
                tracing::warn!(kind = wk.name(), resource = %wk.resource.plural, error = %e, "kubernetes watch failed; retrying with backoff");
            }
        }
    }
}
