//! The config snapshot Pilot holds: the last full state of every subscribed MCP collection.

use std::collections::BTreeMap;

use std::sync::Arc;

use mesh_proto::config::{ConfigObject, Kind, MeshConfig, ModelError};

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
    /// The mesh config read from the `MeshConfig` collection (Istio's defaults when none).
    mesh_config: Arc<MeshConfig>,
}

/// The mesh config held by a `MeshConfig` collection state: its one object's spec, or the
/// default when the collection is empty.
pub fn read_mesh_config(collection: &Collection) -> Result<MeshConfig, ModelError> {
    match collection.objects.values().next() {
        None => Ok(MeshConfig::default()),
        Some(obj) => {
            let spec = obj.body.get("spec").cloned().unwrap_or_default();
            mesh_proto::config::from_value_at("spec", spec)
        }
    }
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
        if let Some(Ok(mesh)) = snap
            .collections
            .get(&Kind::MeshConfig)
            .map(read_mesh_config)
        {
            snap.mesh_config = Arc::new(mesh);
        }
        snap
    }

    /// The current mesh config (Istio's defaults when Galley sent none).
    pub fn mesh_config(&self) -> &MeshConfig {
        &self.mesh_config
    }

    /// A copy of this snapshot whose `MeshConfig` collection holds `mesh` (as Galley sends it).
    pub fn with_mesh_config(&self, mesh: &MeshConfig) -> Snapshot {
        let mut body = serde_json::Map::new();
        body.insert(
            "spec".to_string(),
            serde_json::to_value(mesh).unwrap_or_default(),
        );
        let (namespace, name) = mesh_proto::config::MESH_CONFIG_RESOURCE
            .split_once('/')
            .unwrap_or_default();
        let obj = ConfigObject {
            api_version: Kind::MeshConfig.api_version(),
            kind: Kind::MeshConfig.info().kind.to_string(),
            metadata: mesh_proto::config::ObjectMeta {
                name: name.to_string(),
                namespace: namespace.to_string(),
                ..Default::default()
            },
            body,
        };
        self.with_collection(
            Kind::MeshConfig,
            Collection {
                version: String::new(),
                objects: [(obj.key(), obj)].into(),
            },
        )
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
    /// A mesh config that cannot be read keeps the previous one.
    pub fn with_collection(&self, kind: Kind, collection: Collection) -> Snapshot {
        let mut next = self.clone();
        if kind == Kind::MeshConfig {
            match read_mesh_config(&collection) {
                Ok(mesh) => next.mesh_config = Arc::new(mesh),
                Err(e) => {
                    tracing::warn!(field = %e.field, error = %e.message, "invalid mesh config; keeping the previous one")
                }
            }
        }
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

    fn mesh(spec: serde_json::Value) -> Collection {
        let obj: ConfigObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "mesh.istio.io/v1alpha1", "kind": "MeshConfig",
            "metadata": {"name": "meshconfig", "namespace": "istio-system"},
            "spec": spec
        }))
        .unwrap();
        Collection {
            version: "1".into(),
            objects: [(obj.key(), obj)].into(),
        }
    }

    #[test]
    fn mesh_config_follows_its_collection() {
        let snap = Snapshot::default();
        assert_eq!(snap.mesh_config(), &MeshConfig::default());
        let on = snap.with_collection(
            Kind::MeshConfig,
            mesh(serde_json::json!({"accessLogFile": "/dev/stdout", "policyCheckFailOpen": true})),
        );
        assert_eq!(on.mesh_config().access_log_file, "/dev/stdout");
        assert!(on.mesh_config().policy_check_fail_open);
        let bad = on.with_collection(
            Kind::MeshConfig,
            mesh(serde_json::json!({"accessLogEncoding": "XML"})),
        );
        assert_eq!(bad.mesh_config(), on.mesh_config(), "previous kept");
        let again = snap.with_mesh_config(on.mesh_config());
        assert_eq!(again.mesh_config(), on.mesh_config());
        let gone = on.with_collection(Kind::MeshConfig, Collection::default());
        assert_eq!(gone.mesh_config(), &MeshConfig::default());
    }
}
