//! The config snapshot Pilot holds: the last full state of every subscribed MCP collection.

use std::collections::BTreeMap;

use mesh_proto::config::{ConfigObject, Kind};

/// One collection's state as last received from Galley.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Collection {
    /// Galley's `system_version_info` for this state.
    pub version: String,
    /// Objects by `namespace/name`.
    pub objects: BTreeMap<String, ConfigObject>,
}

/// An immutable view of every collection. Published as `Arc<Snapshot>` on a watch channel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub collections: BTreeMap<Kind, Collection>,
}

impl Snapshot {
    /// A snapshot holding `objects`, each filed under its kind (objects of unknown kinds are
    /// dropped). Used by tests and tools that build a snapshot without Galley.
    pub fn from_objects(objects: impl IntoIterator<Item = ConfigObject>) -> Snapshot {
        let mut snap = Snapshot::default();
        for obj in objects {
            let Some(kind) = obj.kind_info() else {
                continue;
            };
            snap.collections
                .entry(kind)
                .or_default()
                .objects
                .insert(obj.key(), obj);
        }
        snap
    }

    /// The objects of `kind`, in `namespace/name` order.
    pub fn objects(&self, kind: Kind) -> impl Iterator<Item = &ConfigObject> {
        self.collections
            .get(&kind)
            .into_iter()
            .flat_map(|c| c.objects.values())
    }

    /// The object of `kind` named `namespace/name`.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&ConfigObject> {
        self.collections
            .get(&kind)?
            .objects
            .get(&format!("{namespace}/{name}"))
    }

    /// A copy of this snapshot with `kind`'s collection replaced.
    pub fn with_collection(&self, kind: Kind, collection: Collection) -> Snapshot {
        let mut next = self.clone();
        next.collections.insert(kind, collection);
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(kind: &str, api: &str, ns: &str, name: &str) -> ConfigObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": ns}
        }))
        .unwrap()
    }

    #[test]
    fn files_objects_by_kind_and_key() {
        let snap = Snapshot::from_objects([
            obj("Service", "v1", "default", "reviews"),
            obj("Pod", "v1", "default", "reviews-v1"),
            obj("Deployment", "apps/v1", "default", "x"),
        ]);
        assert_eq!(snap.objects(Kind::Service).count(), 1);
        assert!(snap.get(Kind::Pod, "default", "reviews-v1").is_some());
        assert!(snap.get(Kind::Pod, "other", "reviews-v1").is_none());
        assert_eq!(snap.collections.len(), 2);
        let next = snap.with_collection(Kind::Service, Collection::default());
        assert_eq!(next.objects(Kind::Service).count(), 0);
        assert_eq!(snap.objects(Kind::Service).count(), 1);
    }
}
