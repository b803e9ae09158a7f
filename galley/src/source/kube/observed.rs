//! What this replica's watches have delivered into its store, by `resourceVersion`, so a write
//! through the apply API can wait until its own watch brought the object in (read-your-write).
//!
//! Kubernetes delivers a resource's watch events in `resourceVersion` order, and a list at
//! version L holds every change up to L. So once the kind's watch handled any object of
//! version ≥ X (numeric, as etcd-backed API servers hand them out), a write answered with X is
//! in the store. Versions that are not numbers are matched per object, exactly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mesh_proto::config::Kind;
use tokio::sync::watch;

#[derive(Debug, Default)]
struct State {
    /// Per kind: the highest numeric resourceVersion handled.
    newest: HashMap<Kind, u64>,
    /// Per kind and `namespace/name`: the last resourceVersion handled.
    objects: HashMap<(Kind, String), String>,
}

impl State {
    fn has(&self, kind: Kind, key: &str, version: &str) -> bool {
        if let Ok(v) = version.parse::<u64>()
            && self.newest.get(&kind).is_some_and(|n| *n >= v)
        {
            return true;
        }
        self.objects
            .get(&(kind, key.to_string()))
            .is_some_and(|r| r == version)
    }
}

/// Shared between the watches (writers) and the apply API (waiters).
#[derive(Debug, Clone, Default)]
pub struct Observed {
    state: Arc<watch::Sender<State>>,
}

impl Observed {
    pub fn new() -> Observed {
        Observed::default()
    }

    /// The watch of `kind` handled `key` (`namespace/name`) at `version` (stored, replaced or
    /// rejected); `deleted`: the object is gone.
    pub fn handled(&self, kind: Kind, key: &str, version: Option<&str>, deleted: bool) {
        let Some(version) = version.filter(|v| !v.is_empty()) else {
            return;
        };
        self.state.send_modify(|s| {
            if let Ok(v) = version.parse::<u64>() {
                let n = s.newest.entry(kind).or_default();
                *n = (*n).max(v);
            }
            if deleted {
                s.objects.remove(&(kind, key.to_string()));
            } else {
                s.objects
                    .insert((kind, key.to_string()), version.to_string());
            }
        });
    }

    /// A full list of one kind: what it holds replaces what was known of the kind's objects.
    pub fn handled_all<'a>(
        &self,
        kind: Kind,
        objects: impl IntoIterator<Item = (String, Option<&'a str>)>,
    ) {
        let objects: Vec<_> = objects.into_iter().collect();
        self.state.send_modify(|s| {
            s.objects.retain(|(k, _), _| *k != kind);
            for (key, version) in objects {
                let Some(version) = version.filter(|v| !v.is_empty()) else {
                    continue;
                };
                if let Ok(v) = version.parse::<u64>() {
                    let n = s.newest.entry(kind).or_default();
                    *n = (*n).max(v);
                }
                s.objects.insert((kind, key), version.to_string());
            }
        });
    }

    /// Whether the watch of `kind` has delivered `key` at `version` (or later).
    pub fn has(&self, kind: Kind, key: &str, version: &str) -> bool {
        self.state.borrow().has(kind, key, version)
    }

    /// Waits until [`Observed::has`] holds, at most `timeout`; whether it did.
    pub async fn wait(&self, kind: Kind, key: &str, version: &str, timeout: Duration) -> bool {
        let mut rx = self.state.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|s| s.has(kind, key, version)))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn numeric_versions_are_ordered_per_kind_others_matched_exactly() {
        let o = Observed::new();
        assert!(!o.has(Kind::VirtualService, "prod/a", "5"));
        o.handled(Kind::VirtualService, "prod/b", Some("7"), false);
        // A later event of another object of the kind: the watch is past 5.
        assert!(o.has(Kind::VirtualService, "prod/a", "5"));
        assert!(!o.has(Kind::VirtualService, "prod/a", "8"));
        assert!(!o.has(Kind::DestinationRule, "prod/a", "5"));
        o.handled(Kind::Gateway, "prod/g", Some("x1"), false);
        assert!(o.has(Kind::Gateway, "prod/g", "x1"));
        assert!(!o.has(Kind::Gateway, "prod/g", "x2"));
        o.handled_all(
            Kind::DestinationRule,
            vec![("prod/r".to_string(), Some("12"))],
        );
        assert!(o.has(Kind::DestinationRule, "prod/other", "11"));
        // A relist forgets objects it no longer holds.
        o.handled(Kind::Gateway, "prod/h", Some("x2"), false);
        o.handled_all(Kind::Gateway, vec![("prod/h".to_string(), Some("x2"))]);
        assert!(!o.has(Kind::Gateway, "prod/g", "x1"));
        assert!(o.has(Kind::Gateway, "prod/h", "x2"));

        let waiter = {
            let o = o.clone();
            tokio::spawn(async move {
                o.wait(Kind::VirtualService, "prod/a", "9", Duration::from_secs(5))
                    .await
            })
        };
        o.handled(Kind::VirtualService, "prod/a", Some("9"), false);
        assert!(waiter.await.unwrap());
        assert!(
            !o.wait(
                Kind::VirtualService,
                "prod/a",
                "10",
                Duration::from_millis(20)
            )
            .await
        );
    }
}
