//! The MCP `ResourceSource` service: per stream and collection, the full state on subscribe,
//! then on every change either the full state again or, for a sink that asked for incremental
//! updates, only the resources added or changed and the names removed; ACK/NACK bookkeeping.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::pin::Pin;

use futures::Stream;
use mesh_proto::config::Kind;
use mesh_proto::discovery::{Request as Classified, TypeState};
use mesh_proto::istio::mcp::v1alpha1::resource_source_server::{
    ResourceSource, ResourceSourceServer,
};
use mesh_proto::istio::mcp::v1alpha1::{RequestResources, Resources};
use mesh_proto::mcp::to_resource;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use super::metrics::McpMetrics;
use crate::stopped;
use crate::store::Store;

/// The MCP source server.
#[derive(Debug, Clone)]
pub struct McpServer {
    store: Store,
    metrics: McpMetrics,
    /// Becomes true on shutdown; open streams end then.
    stop: watch::Receiver<bool>,
}

impl McpServer {
    pub fn new(store: Store, metrics: McpMetrics, stop: watch::Receiver<bool>) -> McpServer {
        McpServer {
            store,
            metrics,
            stop,
        }
    }

    /// Serves MCP on `listener` until `stop` becomes true.
    pub async fn serve(self, listener: TcpListener) -> Result<(), tonic::transport::Error> {
        let stop = stopped(self.stop.clone());
        tonic::transport::Server::builder()
            .add_service(ResourceSourceServer::new(self))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop)
            .await
    }
}

type ResourcesStream = Pin<Box<dyn Stream<Item = Result<Resources, Status>> + Send>>;

#[tonic::async_trait]
impl ResourceSource for McpServer {
    type EstablishResourceStreamStream = ResourcesStream;

    async fn establish_resource_stream(
        &self,
        request: Request<Streaming<RequestResources>>,
    ) -> Result<Response<Self::EstablishResourceStreamStream>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let (tx, rx) = mpsc::channel(16);
        let stream = SinkStream {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            tx,
            states: BTreeMap::new(),
            sent: BTreeMap::new(),
            sink: String::new(),
            peer,
        };
        tokio::spawn(stream.run(request.into_inner(), self.stop.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Counts the stream as a connected sink while it lives.
struct Connected(McpMetrics);

impl Connected {
    fn new(m: &McpMetrics) -> Connected {
        m.connected_sinks.inc();
        Connected(m.clone())
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.connected_sinks.dec();
    }
}

/// Whether the stream goes on.
enum Flow {
    Continue,
    End,
}

/// One sink's stream.
struct SinkStream {
    store: Store,
    metrics: McpMetrics,
    tx: mpsc::Sender<Result<Resources, Status>>,
    states: BTreeMap<Kind, TypeState>,
    /// Per collection, for a sink that asked for incremental updates: what it was last sent
    /// (resource name → hash of the encoded resource). Absent: the next push is the full state.
    sent: BTreeMap<Kind, Sent>,
    sink: String,
    peer: String,
}

/// What an incremental sink holds of one collection.
#[derive(Debug, Default)]
struct Sent {
    /// The sink asked for incremental updates (MCP `RequestResources.incremental`).
    incremental: bool,
    /// Resource name → hash of its encoding, as last sent; `None` until a full state was sent.
    resources: Option<BTreeMap<String, u64>>,
}

/// A hash of `bytes`, the same for the same bytes (std's `DefaultHasher::new()` has fixed keys).
fn digest(bytes: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl SinkStream {
    async fn run(mut self, mut requests: Streaming<RequestResources>, stop: watch::Receiver<bool>) {
        let _connected = Connected::new(&self.metrics);
        let stop = stopped(stop);
        tokio::pin!(stop);
        let mut revisions = self.store.subscribe();
        tracing::info!(peer = %self.peer, "mcp sink connected");
        loop {
            let flow = tokio::select! {
                () = &mut stop => Flow::End,
                msg = requests.message() => match msg {
                    Ok(Some(req)) => self.on_request(req).await,
                    Ok(None) => Flow::End,
                    Err(status) => {
                        tracing::debug!(sink = %self.sink, peer = %self.peer, error = %status, "mcp stream error");
                        Flow::End
                    }
                },
                changed = revisions.changed() => match changed {
                    Ok(()) => self.push_all().await,
                    Err(_) => Flow::End,
                },
            };
            if matches!(flow, Flow::End) {
                break;
            }
        }
        tracing::info!(sink = %self.sink, peer = %self.peer, "mcp sink disconnected");
    }

    async fn on_request(&mut self, req: RequestResources) -> Flow {
        if let Some(node) = &req.sink_node
            && self.sink != node.id
        {
            self.sink.clone_from(&node.id);
        }
        let Some(kind) = Kind::from_collection(&req.collection) else {
            tracing::warn!(sink = %self.sink, collection = %req.collection, "mcp request for an unknown collection");
            let _ = self
                .tx
                .send(Err(Status::not_found(format!(
                    "unknown collection {:?}",
                    req.collection
                ))))
                .await;
            return Flow::End;
        };
        let error = req.error_detail.as_ref().map(|s| s.message.as_str());
        let state = self.states.entry(kind).or_default();
        let classified = state.on_request(&req.response_nonce, error);
        let sent = self.sent.entry(kind).or_default();
        sent.incremental = req.incremental;
        match classified {
            Classified::Initial => {
                tracing::debug!(sink = %self.sink, collection = %req.collection, incremental = req.incremental, "mcp subscribe");
                state.reset();
                // A (re)subscription starts from the full state.
                sent.resources = None;
                self.push(kind).await
            }
            Classified::Ack { version } => {
                tracing::debug!(sink = %self.sink, collection = %req.collection, %version, "mcp ack");
                Flow::Continue
            }
            Classified::Nack { version, error } => {
                // The sink kept its previous state, which this stream no longer knows: the
                // next push is the full state.
                sent.resources = None;
                self.metrics.nacks.inc();
                tracing::warn!(sink = %self.sink, collection = %req.collection, %version, %error, "mcp nack: sink rejected the collection");
                Flow::Continue
            }
            Classified::Stale => {
                tracing::debug!(sink = %self.sink, collection = %req.collection, nonce = %req.response_nonce, "mcp stale nonce ignored");
                Flow::Continue
            }
        }
    }

    async fn push_all(&mut self) -> Flow {
        let kinds: Vec<Kind> = self.states.keys().copied().collect();
        for kind in kinds {
            if matches!(self.push(kind).await, Flow::End) {
                return Flow::End;
            }
        }
        Flow::Continue
    }

    /// Sends `kind`'s full state unless the sink already has (or rejected) this version.
    async fn push(&mut self, kind: Kind) -> Flow {
        let collection = kind.info().collection;
        // Version first, then content: content is never older than the version it carries.
        // Content is read (and encoded, one object at a time) only when it is to be sent.
        let read_error = |e: crate::store::StoreError| {
            tracing::error!(collection, error = %e, "cannot read the store for mcp");
            Status::internal(e.to_string())
        };
        let version = match self.store.collection_revision(kind) {
            Ok(v) => v.to_string(),
            Err(e) => {
                let _ = self.tx.send(Err(read_error(e))).await;
                return Flow::End;
            }
        };
        if !self.states.entry(kind).or_default().should_send(&version) {
            return Flow::Continue;
        }
        let resources = match self.store.list_map(kind, |o| to_resource(&o)) {
            Ok(r) => r,
            Err(e) => {
                let _ = self.tx.send(Err(read_error(e))).await;
                return Flow::End;
            }
        };
        let (resources, removed_resources, incremental) = self.delta(kind, resources);
        let state = self.states.entry(kind).or_default();
        let nonce = state.on_send(&version);
        let msg = Resources {
            system_version_info: version.clone(),
            collection: collection.to_string(),
            resources,
            removed_resources,
            nonce,
            incremental,
        };
        tracing::debug!(sink = %self.sink, collection, %version, resources = msg.resources.len(), removed = msg.removed_resources.len(), incremental, "mcp push");
        if self.tx.send(Ok(msg)).await.is_err() {
            return Flow::End;
        }
        self.metrics.pushes.inc();
        Flow::Continue
    }

    /// What to send of `kind` whose full state is `all`: for a sink that asked for incremental
    /// updates and holds an earlier state, the resources added or changed since and the names
    /// removed (`incremental` true); otherwise the full state. Records what the sink will hold.
    fn delta(
        &mut self,
        kind: Kind,
        all: Vec<mesh_proto::istio::mcp::v1alpha1::Resource>,
    ) -> (
        Vec<mesh_proto::istio::mcp::v1alpha1::Resource>,
        Vec<String>,
        bool,
    ) {
        let sent = self.sent.entry(kind).or_default();
        if !sent.incremental {
            sent.resources = None;
            return (all, Vec::new(), false);
        }
        let name = |r: &mesh_proto::istio::mcp::v1alpha1::Resource| {
            r.metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default()
        };
        let now: BTreeMap<String, u64> = all
            .iter()
            .map(|r| (name(r), digest(&r.encode_to_vec())))
            .collect();
        let Some(before) = sent.resources.replace(now.clone()) else {
            return (all, Vec::new(), false);
        };
        let removed = before
            .keys()
            .filter(|k| !now.contains_key(*k))
            .cloned()
            .collect();
        let changed = all
            .into_iter()
            .filter(|r| {
                let n = name(r);
                before.get(&n) != now.get(&n)
            })
            .collect();
        (changed, removed, true)
    }
}
