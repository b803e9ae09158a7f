//! Pilot's side of the MCP sink ([`mesh_proto::mcp::sink`]): every collection state Galley sends
//! becomes a new [`Snapshot`]; connects, ACKs and NACKs are counted; readiness is set once every
//! collection has answered.

use std::collections::BTreeMap;
use std::sync::Arc;

use mesh_proto::config::{ConfigObject, Kind};
use mesh_proto::istio::mcp::v1alpha1::{RequestResources, Resources};
use mesh_proto::mcp::sink::{Event, Handler, Sink, Update};
use mesh_runtime::Readiness;
use tokio::sync::watch;

use super::snapshot::{Collection, Snapshot, read_mesh_config};
use crate::metrics::{CollectionLabel, PilotMetrics};

pub use mesh_proto::mcp::sink::SinkError;

/// The readiness condition this client sets once every collection has had a first response.
pub const READY_CONDITION: &str = "galley-synced";

/// The collections Pilot subscribes to.
pub const COLLECTIONS: [Kind; 15] = [
    Kind::Service,
    Kind::Endpoints,
    Kind::Pod,
    Kind::VirtualService,
    Kind::DestinationRule,
    Kind::Gateway,
    Kind::PeerAuthentication,
    Kind::AuthorizationPolicy,
    Kind::RequestAuthentication,
    Kind::MeshConfig,
    Kind::QuotaSpec,
    Kind::QuotaSpecBinding,
    Kind::ServiceEntry,
    Kind::WorkloadEntry,
    Kind::Sidecar,
];

/// Publishes each update as a new snapshot and records the sink's events in Pilot's metrics
/// and readiness.
#[derive(Debug, Clone)]
pub struct SnapshotHandler {
    snapshot: watch::Sender<Arc<Snapshot>>,
    readiness: Readiness,
    metrics: PilotMetrics,
}

impl Handler for SnapshotHandler {
    fn apply(&mut self, update: Update) -> Result<(), String> {
        let current = self.snapshot.borrow().clone();
        let kind = update.kind;
        let next = next_snapshot(&current, update);
        // NACK a mesh config that cannot be read; the previous one stays.
        if kind == Kind::MeshConfig
            && let Some(c) = next.collections.get(&Kind::MeshConfig)
        {
            read_mesh_config(c).map_err(|e| format!("mesh config: {e}"))?;
        }
        self.snapshot.send_replace(Arc::new(next));
        Ok(())
    }

    fn on_event(&mut self, event: &Event<'_>) {
        let label = |collection: &str| CollectionLabel {
            collection: collection.to_string(),
        };
        match event {
            Event::Connected => {
                self.metrics.galley_connects.inc();
            }
            Event::Acked { collection, .. } => {
                self.metrics
                    .galley_updates
                    .get_or_create(&label(collection))
                    .inc();
            }
            Event::Nacked { collection, .. } => {
                self.metrics
                    .galley_nacks
                    .get_or_create(&label(collection))
                    .inc();
            }
            Event::Synced => self.readiness.set(READY_CONDITION, true),
        }
    }
}

/// Subscribes to Galley and keeps the snapshot watch current.
#[derive(Debug)]
pub struct GalleyClient {
    sink: Sink<SnapshotHandler>,
}

impl GalleyClient {
    /// A client for Galley at `addr` (e.g. `http://127.0.0.1:9901`) publishing on `snapshot`.
    pub fn new(
        addr: String,
        snapshot: watch::Sender<Arc<Snapshot>>,
        readiness: Readiness,
        metrics: PilotMetrics,
    ) -> GalleyClient {
        let handler = SnapshotHandler {
            snapshot,
            readiness,
            metrics,
        };
        GalleyClient {
            sink: Sink::new(
                addr,
                format!("pilot-{}", std::process::id()),
                COLLECTIONS,
                handler,
            ),
        }
    }

    /// Applies one response from Galley and returns the ACK or NACK to send back.
    pub fn on_response(&mut self, msg: &Resources) -> RequestResources {
        self.sink.on_response(msg)
    }

    /// Runs until `shutdown` resolves: connects, streams, and reconnects with backoff when Galley
    /// goes away (the last snapshot keeps being served meanwhile).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        self.sink.run(shutdown).await
    }
}

/// The snapshot after applying `update` to `current`: a full state replaces the collection, an
/// incremental one adds and removes. Namespaced objects sent without a namespace go to `default`.
pub fn next_snapshot(current: &Snapshot, update: Update) -> Snapshot {
    let kind = update.kind;
    let mut objects: BTreeMap<String, ConfigObject> = if update.incremental {
        current
            .collections
            .get(&kind)
            .map(|c| c.objects.clone())
            .unwrap_or_default()
    } else {
        BTreeMap::new()
    };
    for removed in &update.removed {
        objects.remove(removed);
    }
    for mut obj in update.objects {
        if obj.metadata.namespace.is_empty() && kind.info().namespaced {
            obj.metadata.namespace = "default".to_string();
        }
        objects.insert(obj.key(), obj);
    }
    current.with_collection(
        kind,
        Collection {
            version: update.version,
            objects,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::istio::mcp::v1alpha1::Resource;
    use mesh_proto::mcp::to_resource;

    fn service(name: &str) -> Resource {
        to_resource(
            &serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"ports": [{"port": 9080, "name": "http"}]}
            }))
            .unwrap(),
        )
    }

    fn resources(collection: &str, res: Vec<Resource>) -> Resources {
        Resources {
            system_version_info: "3".into(),
            collection: collection.into(),
            resources: res,
            removed_resources: vec![],
            nonce: "n1".into(),
            incremental: false,
        }
    }

    fn update(collection: &str, res: Vec<Resource>) -> Update {
        Update::decode(&resources(collection, res)).unwrap()
    }

    #[test]
    fn full_state_replaces_collection() {
        let snap = Snapshot::default();
        let next = next_snapshot(
            &snap,
            update("k8s/core/v1/services", vec![service("a"), service("b")]),
        );
        assert_eq!(next.objects(Kind::Service).count(), 2);
        let again = next_snapshot(&next, update("k8s/core/v1/services", vec![service("b")]));
        let names: Vec<_> = again
            .objects(Kind::Service)
            .map(|o| o.metadata.name.clone())
            .collect();
        assert_eq!(names, vec!["b"]);
        assert_eq!(again.collections[&Kind::Service].version, "3");
    }

    #[test]
    fn incremental_adds_removes_and_defaults_namespace() {
        let snap = next_snapshot(
            &Snapshot::default(),
            update("k8s/core/v1/services", vec![service("a"), service("b")]),
        );
        let mut unqualified = service("c");
        unqualified.metadata.as_mut().unwrap().name = "c".into();
        let mut inc = update("k8s/core/v1/services", vec![unqualified]);
        inc.incremental = true;
        inc.removed = vec!["default/a".into()];
        let next = next_snapshot(&snap, inc);
        let keys: Vec<_> = next.collections[&Kind::Service]
            .objects
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, ["default/b", "default/c"]);
    }

    #[test]
    fn on_response_publishes_counts_and_nacks() {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        let metrics = PilotMetrics::default();
        let readiness = Readiness::new(&[READY_CONDITION]);
        let mut client = GalleyClient::new(
            "http://127.0.0.1:1".into(),
            tx,
            readiness.clone(),
            metrics.clone(),
        );
        let services = CollectionLabel {
            collection: "k8s/core/v1/services".into(),
        };
        let ack = client.on_response(&resources("k8s/core/v1/services", vec![service("a")]));
        assert!(ack.error_detail.is_none());
        assert_eq!(ack.response_nonce, "n1");
        assert_eq!(rx.borrow().objects(Kind::Service).count(), 1);
        assert_eq!(metrics.galley_updates.get_or_create(&services).get(), 1);
        let mut bad = service("z");
        bad.body = Some(prost_types::Any {
            type_url: "nope".into(),
            value: vec![],
        });
        let nack = client.on_response(&resources("k8s/core/v1/services", vec![bad]));
        assert!(nack.error_detail.is_some());
        assert_eq!(
            rx.borrow().objects(Kind::Service).count(),
            1,
            "old state kept"
        );
        assert_eq!(metrics.galley_nacks.get_or_create(&services).get(), 1);
        assert!(!readiness.is_ready());
        for kind in COLLECTIONS {
            client.on_response(&resources(kind.info().collection, vec![]));
        }
        assert!(readiness.is_ready());
    }
}
