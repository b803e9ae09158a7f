//! One registry per snapshot, shared by every ADS stream and the debug endpoints.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::registry::Registry;
use crate::galley_client::Snapshot;

/// The last snapshot seen and the registry built from it.
type Built = Option<(Arc<Snapshot>, Arc<Registry>)>;

/// Builds the registry of the current snapshot once and hands out the shared copy.
#[derive(Debug, Clone)]
pub struct RegistryCache {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    domain_suffix: Arc<str>,
    last: Arc<Mutex<Built>>,
}

impl RegistryCache {
    /// A cache over `snapshots`, naming services under `domain_suffix`.
    pub fn new(snapshots: watch::Receiver<Arc<Snapshot>>, domain_suffix: &str) -> RegistryCache {
        RegistryCache {
            snapshots,
            domain_suffix: domain_suffix.into(),
            last: Arc::new(Mutex::new(None)),
        }
    }

    /// The registry of the current snapshot.
    pub fn current(&self) -> Arc<Registry> {
        let snap = self.snapshots.borrow().clone();
        let mut last = self.last.lock();
        if let Some((s, r)) = last.as_ref()
            && Arc::ptr_eq(s, &snap)
        {
            return r.clone();
        }
        let reg = Arc::new(Registry::from_snapshot(&snap, &self.domain_suffix));
        *last = Some((snap, reg.clone()));
        reg
    }

    /// A registry built elsewhere (by a push) from `snapshot`: kept as the current one, so that
    /// the same snapshot is not built twice (nor held twice in memory).
    pub fn offer(&self, snapshot: &Arc<Snapshot>, registry: &Arc<Registry>) {
        let mut last = self.last.lock();
        if last.as_ref().is_some_and(|(s, _)| Arc::ptr_eq(s, snapshot)) {
            return;
        }
        *last = Some((snapshot.clone(), registry.clone()));
    }

    /// The DNS suffix services are named under.
    pub fn domain_suffix(&self) -> &str {
        &self.domain_suffix
    }

    /// A receiver that wakes on every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuilds_only_on_new_snapshot() {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        let cache = RegistryCache::new(rx, "cluster.local");
        let a = cache.current();
        assert!(Arc::ptr_eq(&a, &cache.current()));
        let obj = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"ports": [{"port": 9080}]}
        }))
        .unwrap();
        tx.send_replace(Arc::new(Snapshot::from_objects([obj])));
        let b = cache.current();
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(b.services.contains_key("reviews.default.svc.cluster.local"));
        // A registry offered for a newer snapshot is handed out without a rebuild.
        let snap = Arc::new(Snapshot::default());
        tx.send_replace(snap.clone());
        let built = Arc::new(Registry::from_snapshot(&snap, "cluster.local"));
        cache.offer(&snap, &built);
        assert!(Arc::ptr_eq(&cache.current(), &built));
    }
}
