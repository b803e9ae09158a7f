//! One watched kind: watcher events in, store changes out. A full list (Init ... InitDone)
//! replaces the kind's Kubernetes-origin objects in one batch; Apply and Delete change one
//! object. Invalid objects are not stored (the last valid version stays) and are reported.

use std::collections::{BTreeMap, HashMap};

use kube::api::DynamicObject;
use kube::runtime::watcher;
use mesh_proto::config::ConfigObject;

use super::convert::{Judged, changed_at, is_from_kubernetes, judge, object_key};
use super::kinds::WatchedKind;
use super::metrics::{KubeMetrics, kind_and, kind_label};
use super::observed::Observed;
use super::report::{Reporter, has_galley_messages};
use crate::store::{Change, Store, StoreError};
use crate::validate::ValidationError;

/// What one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Handled {
    /// Store changes applied.
    pub changes: usize,
    /// Objects rejected.
    pub rejected: usize,
    /// This event completed the kind's first full list.
    pub first_sync: bool,
}

/// The state of one watched kind.
#[derive(Debug)]
pub struct KindSync {
    wk: WatchedKind,
    namespace: Option<String>,
    store: Store,
    reporter: Option<Reporter>,
    metrics: KubeMetrics,
    /// Objects of the list in progress (between Init and InitDone).
    listing: Option<Vec<DynamicObject>>,
    lists: u64,
    synced: bool,
    /// What was last reported per rejected object, so relists do not repeat it.
    reported: HashMap<String, String>,
    /// Told of every object handled (read-your-write of the apply API).
    observed: Option<Observed>,
}

fn delete_of(kind: mesh_proto::config::Kind, o: &ConfigObject) -> Change {
    Change::Delete {
        kind,
        namespace: o.metadata.namespace.clone(),
        name: o.metadata.name.clone(),
    }
}

impl KindSync {
    /// `namespace` limits the kind to one namespace (as the watch does); `reporter` writes
    /// status and Events (none: only logs and metrics).
    pub fn new(
        wk: WatchedKind,
        namespace: Option<String>,
        store: Store,
        reporter: Option<Reporter>,
        metrics: KubeMetrics,
    ) -> KindSync {
        KindSync {
            wk,
            namespace,
            store,
            reporter,
            metrics,
            listing: None,
            lists: 0,
            synced: false,
            reported: HashMap::new(),
            observed: None,
        }
    }

    /// Tells `observed` the resourceVersion of every object once it is handled.
    pub fn with_observed(mut self, observed: Observed) -> KindSync {
        self.observed = Some(observed);
        self
    }

    pub fn kind(&self) -> &WatchedKind {
        &self.wk
    }

    /// Whether the kind's first full list is in the store.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Applies one watcher event.
    pub async fn handle(
        &mut self,
        event: watcher::Event<DynamicObject>,
    ) -> Result<Handled, StoreError> {
        let name = self.wk.name();
        let now = k8s_openapi::jiff::Timestamp::now();
        self.metrics
            .last_event
            .get_or_create(&kind_label(name))
            .set(now.as_second());
        match event {
            watcher::Event::Init => {
                if self.lists > 0 {
                    self.metrics
                        .restarts
                        .get_or_create(&kind_and(name, "reason", "relist"))
                        .inc();
                }
                self.lists += 1;
                self.listing = Some(Vec::new());
                Ok(Handled::default())
            }
            watcher::Event::InitApply(obj) => {
                self.listing.get_or_insert_with(Vec::new).push(obj);
                Ok(Handled::default())
            }
            watcher::Event::InitDone => {
                let objects = self.listing.take().unwrap_or_default();
                let versions: Vec<(String, Option<String>)> = objects
                    .iter()
                    .map(|o| (object_key(o), o.metadata.resource_version.clone()))
                    .collect();
                let handled = self.replace_all(objects).await?;
                if let Some(observed) = &self.observed {
                    observed.handled_all(
                        self.wk.kind,
                        versions.iter().map(|(k, v)| (k.clone(), v.as_deref())),
                    );
                }
                Ok(handled)
            }
            watcher::Event::Apply(obj) => {
                if let Some(at) = changed_at(&obj) {
                    let lag = now.duration_since(at).as_secs_f64().max(0.0);
                    self.metrics
                        .lag
                        .get_or_create(&kind_label(name))
                        .observe(lag);
                }
                let handled = self.apply_one(&obj).await?;
                self.observe(&obj, false);
                Ok(handled)
            }
            watcher::Event::Delete(obj) => {
                let handled = self.delete_one(&obj).await?;
                self.observe(&obj, true);
                Ok(handled)
            }
        }
    }

    fn observe(&self, obj: &DynamicObject, deleted: bool) {
        if let Some(observed) = &self.observed {
            observed.handled(
                self.wk.kind,
                &object_key(obj),
                obj.metadata.resource_version.as_deref(),
                deleted,
            );
        }
    }

    /// The stored Kubernetes-origin objects of the kind (in the watched namespace).
    fn stored(&self) -> Result<BTreeMap<String, ConfigObject>, StoreError> {
        let ns = self.namespace.as_deref().filter(|_| self.wk.namespaced);
        Ok(self
            .store
            .list(self.wk.kind, ns)?
            .into_iter()
            .filter(is_from_kubernetes)
            .map(|o| (o.key(), o))
            .collect())
    }

    async fn replace_all(&mut self, objects: Vec<DynamicObject>) -> Result<Handled, StoreError> {
        let stored = self.stored()?;
        let mut desired: BTreeMap<String, ConfigObject> = BTreeMap::new();
        let mut handled = Handled::default();
        let mut listed = Vec::with_capacity(objects.len());
        for obj in &objects {
            let key = object_key(obj);
            listed.push(key.clone());
            match judge(&self.wk, obj) {
                Judged::Valid(o) => {
                    desired.insert(key.clone(), *o);
                    self.accepted(&key, obj).await;
                }
                Judged::Invalid(errors) => {
                    handled.rejected += 1;
                    if let Some(prev) = stored.get(&key) {
                        desired.insert(key.clone(), prev.clone());
                    }
                    self.rejected(&key, obj, &errors).await;
                }
            }
        }
        self.reported.retain(|k, _| listed.contains(k));
        let mut changes: Vec<Change> = desired
            .values()
            .map(|o| Change::Put(self.wk.kind, o.clone()))
            .collect();
        changes.extend(
            stored
                .iter()
                .filter(|(k, _)| !desired.contains_key(*k))
                .map(|(_, o)| delete_of(self.wk.kind, o)),
        );
        let res = self.store.apply(changes).await?;
        handled.changes = res.applied.iter().filter(|a| a.changed).count();
        tracing::info!(
            kind = self.wk.name(),
            listed = objects.len(),
            stored = desired.len(),
            rejected = handled.rejected,
            changes = handled.changes,
            revision = res.revision,
            "kubernetes list applied"
        );
        if !self.synced {
            self.synced = true;
            handled.first_sync = true;
            self.metrics
                .synced
                .get_or_create(&kind_label(self.wk.name()))
                .set(1);
        }
        Ok(handled)
    }

    async fn apply_one(&mut self, obj: &DynamicObject) -> Result<Handled, StoreError> {
        let key = object_key(obj);
        match judge(&self.wk, obj) {
            Judged::Valid(o) => {
                let res = self
                    .store
                    .apply(vec![Change::Put(self.wk.kind, *o)])
                    .await?;
                let changes = res.applied.iter().filter(|a| a.changed).count();
                if changes > 0 {
                    tracing::info!(kind = self.wk.name(), object = %key, revision = res.revision, "kubernetes object stored");
                }
                self.accepted(&key, obj).await;
                Ok(Handled {
                    changes,
                    ..Handled::default()
                })
            }
            Judged::Invalid(errors) => {
                self.rejected(&key, obj, &errors).await;
                Ok(Handled {
                    rejected: 1,
                    ..Handled::default()
                })
            }
        }
    }

    async fn delete_one(&mut self, obj: &DynamicObject) -> Result<Handled, StoreError> {
        let key = object_key(obj);
        self.reported.remove(&key);
        let Some(stored) = self.stored()?.remove(&key) else {
            return Ok(Handled::default());
        };
        let res = self
            .store
            .apply(vec![delete_of(self.wk.kind, &stored)])
            .await?;
        tracing::info!(kind = self.wk.name(), object = %key, revision = res.revision, "kubernetes object deleted");
        Ok(Handled {
            changes: res.applied.iter().filter(|a| a.changed).count(),
            ..Handled::default()
        })
    }

    /// A valid object: forget its rejection and clear the messages galley wrote on it.
    async fn accepted(&mut self, key: &str, obj: &DynamicObject) {
        self.reported.remove(key);
        if let Some(reporter) = &self.reporter
            && self.wk.writes_status
            && has_galley_messages(obj)
            && let Err(e) = reporter.accepted(&self.wk, obj).await
        {
            tracing::warn!(error = %e, "cannot clear the validation messages");
            self.metrics
                .report_errors
                .get_or_create(&kind_and(self.wk.name(), "what", e.what()))
                .inc();
        }
    }

    /// An invalid object: counted, logged, and (once per distinct verdict) reported.
    async fn rejected(&mut self, key: &str, obj: &DynamicObject, errors: &[ValidationError]) {
        self.metrics
            .rejected
            .get_or_create(&kind_label(self.wk.name()))
            .inc();
        let message = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        if self.reported.get(key) == Some(&message) {
            return;
        }
        for e in errors {
            tracing::warn!(error = %e, "invalid config in Kubernetes; keeping the object's last valid version");
        }
        if let Some(reporter) = &self.reporter {
            for e in reporter.rejected(&self.wk, obj, errors).await {
                tracing::warn!(error = %e, "cannot report a rejected object");
                self.metrics
                    .report_errors
                    .get_or_create(&kind_and(self.wk.name(), "what", e.what()))
                    .inc();
            }
        }
        self.reported.insert(key.to_string(), message);
    }
}
