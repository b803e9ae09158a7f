//! The MCP sink: one `EstablishResourceStream` to Galley, one `RequestResources` per collection,
//! every full collection state decoded, ACKed (or NACKed) and published as a new [`Snapshot`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use mesh_proto::config::{ConfigObject, Kind};
use mesh_proto::google::rpc::Status;
use mesh_proto::istio::mcp::v1alpha1::resource_source_client::ResourceSourceClient;
use mesh_proto::istio::mcp::v1alpha1::{RequestResources, Resources, SinkNode};
use mesh_proto::mcp::from_resource;
use mesh_runtime::Readiness;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::snapshot::{Collection, Snapshot};
use crate::metrics::{CollectionLabel, PilotMetrics};

/// The readiness condition this client sets once every collection has had a first response.
pub const READY_CONDITION: &str = "galley-synced";

/// The collections Pilot subscribes to.
pub const COLLECTIONS: [Kind; 6] = [
    Kind::Service,
    Kind::Endpoints,
    Kind::Pod,
    Kind::VirtualService,
    Kind::DestinationRule,
    Kind::Gateway,
];

const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why one MCP stream ended.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("invalid galley address {addr:?}: {source}")]
    Address {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot connect to galley: {0}")]
    Connect(#[source] tonic::transport::Error),
    #[error("galley stream failed: {0}")]
    Stream(#[from] tonic::Status),
    #[error("galley closed the stream")]
    Closed,
    #[error("request channel closed")]
    RequestChannel,
}

/// Subscribes to Galley and keeps the snapshot watch current.
#[derive(Debug, Clone)]
pub struct GalleyClient {
    addr: String,
    sink_id: String,
    snapshot: watch::Sender<Arc<Snapshot>>,
    readiness: Readiness,
    metrics: PilotMetrics,
}

/// What applying one `Resources` message did.
#[derive(Debug, PartialEq)]
pub enum Applied {
    /// The state was applied; ACK it.
    Ack,
    /// A resource could not be decoded; NACK with this message and keep the old state.
    Nack(String),
    /// The collection is not one this sink asked for.
    Unknown,
}

impl GalleyClient {
    /// A client for Galley at `addr` (e.g. `http://127.0.0.1:9901`) publishing on `snapshot`.
    pub fn new(
        addr: String,
        snapshot: watch::Sender<Arc<Snapshot>>,
        readiness: Readiness,
        metrics: PilotMetrics,
    ) -> GalleyClient {
        GalleyClient {
            addr,
            sink_id: format!("pilot-{}", std::process::id()),
            snapshot,
            readiness,
            metrics,
        }
    }

    /// Runs until `shutdown` resolves: connects, streams, and reconnects with backoff when Galley
    /// goes away (the last snapshot keeps being served meanwhile).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = INITIAL_BACKOFF;
        loop {
            let mut got_data = false;
            let result = tokio::select! {
                _ = &mut shutdown => return,
                r = self.stream_once(&mut got_data) => r,
            };
            if got_data {
                backoff = INITIAL_BACKOFF;
            }
            match result {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(galley = %self.addr, error = %e, retry_in_ms = backoff.as_millis() as u64, "galley stream ended")
                }
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn stream_once(&self, got_data: &mut bool) -> Result<(), SinkError> {
        let endpoint =
            tonic::transport::Endpoint::from_shared(self.addr.clone()).map_err(|source| {
                SinkError::Address {
                    addr: self.addr.clone(),
                    source,
                }
            })?;
        let channel = endpoint.connect().await.map_err(SinkError::Connect)?;
        let mut client = ResourceSourceClient::new(channel);
        let (tx, rx) = mpsc::channel::<RequestResources>(COLLECTIONS.len() * 2 + 4);
        for kind in COLLECTIONS {
            tx.send(self.request(kind.info().collection, String::new(), None))
                .await
                .map_err(|_| SinkError::RequestChannel)?;
        }
        let mut inbound = client
            .establish_resource_stream(ReceiverStream::new(rx))
            .await?
            .into_inner();
        self.metrics.galley_connects.inc();
        tracing::info!(galley = %self.addr, collections = COLLECTIONS.len(), "subscribed to galley");
        let mut synced: BTreeSet<Kind> = BTreeSet::new();
        while let Some(msg) = inbound.message().await? {
            *got_data = true;
            let label = CollectionLabel {
                collection: msg.collection.clone(),
            };
            let reply = match self.apply(&msg) {
                Applied::Ack => {
                    self.metrics.galley_updates.get_or_create(&label).inc();
                    if let Some(kind) = Kind::from_collection(&msg.collection) {
                        synced.insert(kind);
                    }
                    if COLLECTIONS.iter().all(|k| synced.contains(k)) {
                        self.readiness.set(READY_CONDITION, true);
                    }
                    self.request(&msg.collection, msg.nonce.clone(), None)
                }
                Applied::Nack(err) => {
                    self.metrics.galley_nacks.get_or_create(&label).inc();
                    tracing::warn!(collection = %msg.collection, version = %msg.system_version_info, error = %err, "rejecting collection state");
                    self.request(&msg.collection, msg.nonce.clone(), Some(err))
                }
                Applied::Unknown => {
                    tracing::warn!(collection = %msg.collection, "galley sent a collection pilot did not ask for; ignored");
                    continue;
                }
            };
            tx.send(reply)
                .await
                .map_err(|_| SinkError::RequestChannel)?;
        }
        Err(SinkError::Closed)
    }

    fn request(&self, collection: &str, nonce: String, error: Option<String>) -> RequestResources {
        RequestResources {
            sink_node: Some(SinkNode {
                id: self.sink_id.clone(),
                annotations: Default::default(),
            }),
            collection: collection.to_string(),
            initial_resource_versions: Default::default(),
            response_nonce: nonce,
            error_detail: error.map(|message| Status {
                code: tonic::Code::InvalidArgument as i32,
                message,
                details: Vec::new(),
            }),
            incremental: false,
        }
    }

    /// Decodes `msg` and, when every resource decodes, publishes the new snapshot.
    pub fn apply(&self, msg: &Resources) -> Applied {
        let current = self.snapshot.borrow().clone();
        match next_snapshot(&current, msg) {
            Ok(Some(next)) => {
                tracing::info!(collection = %msg.collection, version = %msg.system_version_info, resources = msg.resources.len(), incremental = msg.incremental, "collection updated");
                self.snapshot.send_replace(Arc::new(next));
                Applied::Ack
            }
            Ok(None) => Applied::Unknown,
            Err(e) => Applied::Nack(e),
        }
    }
}

/// The snapshot after applying `msg` to `current`: `Ok(None)` for a collection Pilot does not
/// subscribe to, `Err` naming the first resource that cannot be decoded.
pub fn next_snapshot(current: &Snapshot, msg: &Resources) -> Result<Option<Snapshot>, String> {
    let Some(kind) = Kind::from_collection(&msg.collection).filter(|k| COLLECTIONS.contains(k))
    else {
        return Ok(None);
    };
    let mut objects: BTreeMap<String, ConfigObject> = if msg.incremental {
        current
            .collections
            .get(&kind)
            .map(|c| c.objects.clone())
            .unwrap_or_default()
    } else {
        BTreeMap::new()
    };
    for removed in &msg.removed_resources {
        objects.remove(removed);
    }
    for res in &msg.resources {
        let mut obj = from_resource(&msg.collection, res).map_err(|e| e.to_string())?;
        if obj.metadata.namespace.is_empty() && kind.info().namespaced {
            obj.metadata.namespace = "default".to_string();
        }
        objects.insert(obj.key(), obj);
    }
    Ok(Some(current.with_collection(
        kind,
        Collection {
            version: msg.system_version_info.clone(),
            objects,
        },
    )))
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

    #[test]
    fn full_state_replaces_collection() {
        let snap = Snapshot::default();
        let next = next_snapshot(
            &snap,
            &resources("k8s/core/v1/services", vec![service("a"), service("b")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(next.objects(Kind::Service).count(), 2);
        let again = next_snapshot(
            &next,
            &resources("k8s/core/v1/services", vec![service("b")]),
        )
        .unwrap()
        .unwrap();
        let names: Vec<_> = again
            .objects(Kind::Service)
            .map(|o| o.metadata.name.clone())
            .collect();
        assert_eq!(names, vec!["b"]);
        assert_eq!(again.collections[&Kind::Service].version, "3");
    }

    #[test]
    fn bad_resource_is_an_error_and_unknown_collection_ignored() {
        let mut bad = service("a");
        bad.body = Some(prost_types::Any {
            type_url: "type.googleapis.com/google.protobuf.Struct".into(),
            value: vec![0xff, 0xff, 0xff],
        });
        let err = next_snapshot(
            &Snapshot::default(),
            &resources("k8s/core/v1/services", vec![bad]),
        )
        .unwrap_err();
        assert!(err.contains("default/a"), "{err}");
        assert_eq!(
            next_snapshot(
                &Snapshot::default(),
                &resources("istio/policy/v1beta1/rules", vec![])
            )
            .unwrap(),
            None
        );
    }

    #[test]
    fn apply_publishes_and_nacks() {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        let client = GalleyClient::new(
            "http://127.0.0.1:1".into(),
            tx,
            Readiness::new(&[READY_CONDITION]),
            PilotMetrics::default(),
        );
        assert_eq!(
            client.apply(&resources("k8s/core/v1/services", vec![service("a")])),
            Applied::Ack
        );
        assert_eq!(rx.borrow().objects(Kind::Service).count(), 1);
        let mut bad = service("z");
        bad.body = Some(prost_types::Any {
            type_url: "nope".into(),
            value: vec![],
        });
        assert!(matches!(
            client.apply(&resources("k8s/core/v1/services", vec![bad])),
            Applied::Nack(_)
        ));
        assert_eq!(
            rx.borrow().objects(Kind::Service).count(),
            1,
            "old state kept"
        );
    }
}
