//! The MCP sink: the client side of `istio.mcp.v1alpha1.ResourceSource/EstablishResourceStream`,
//! shared by every service that takes its configuration from Galley (Pilot, Mixer).
//!
//! One stream carries every collection: the sink sends one `RequestResources` per collection
//! (empty nonce), decodes each `Resources` Galley answers with [`from_resource`], hands the
//! decoded [`Update`] to the service's [`Handler`], and answers with the response's nonce: an ACK
//! when the handler took it, a NACK (`error_detail`) when a resource did not decode or the handler
//! refused it (the handler then keeps its previous state). Once every collection has answered once
//! the sink is *synced* ([`Sink::synced`], [`Event::Synced`]). When the stream ends the sink
//! reconnects with exponential backoff (100 ms doubling to 5 s, reset once a stream delivered
//! data); the handler's state stays in force meanwhile.
//!
//! The sink knows nothing of metrics or readiness: the handler is told what happened through
//! [`Handler::on_event`] and records it as its service does.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::{DecodeError, from_resource};
use crate::config::{ConfigObject, Kind};
use crate::google::rpc::Status as RpcStatus;
use crate::istio::mcp::v1alpha1::resource_source_client::ResourceSourceClient;
use crate::istio::mcp::v1alpha1::{RequestResources, Resources, SinkNode};

/// First reconnect delay, doubled after every stream that delivered nothing.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One decoded `Resources` message: a collection's full state, or (when `incremental`) the
/// objects added or changed and the keys removed.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The collection's kind.
    pub kind: Kind,
    /// Galley's `system_version_info` for this state.
    pub version: String,
    /// `false`: `objects` is the whole collection. `true`: `objects` are added or changed and
    /// `removed` are deleted; everything else is unchanged.
    pub incremental: bool,
    /// The decoded objects, in the order Galley sent them.
    pub objects: Vec<ConfigObject>,
    /// `namespace/name` keys removed (incremental only).
    pub removed: Vec<String>,
}

impl Update {
    /// Decodes every resource of `resp`; the first one that does not decode is the error.
    pub fn decode(resp: &Resources) -> Result<Update, DecodeError> {
        let kind = Kind::from_collection(&resp.collection)
            .ok_or_else(|| DecodeError::UnknownCollection(resp.collection.clone()))?;
        let objects = resp
            .resources
            .iter()
            .map(|r| from_resource(&resp.collection, r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Update {
            kind,
            version: resp.system_version_info.clone(),
            incremental: resp.incremental,
            objects,
            removed: resp.removed_resources.clone(),
        })
    }
}

/// What the sink did, reported to [`Handler::on_event`] (for metrics, readiness and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A stream to Galley was opened and every collection requested.
    Connected,
    /// A response was applied and ACKed.
    Acked {
        collection: &'a str,
        version: &'a str,
    },
    /// A response was rejected (NACKed); the previous state is kept.
    Nacked {
        collection: &'a str,
        version: &'a str,
        error: &'a str,
    },
    /// Every subscribed collection has answered once (reported once per sink).
    Synced,
}

/// What a service does with the configuration the sink receives.
pub trait Handler: Send {
    /// Applies one update. `Err(message)` NACKs it with `message`; the handler must then keep its
    /// previous state for that collection.
    fn apply(&mut self, update: Update) -> Result<(), String>;

    /// Told of every connect, ACK, NACK and of the first time every collection answered.
    fn on_event(&mut self, _event: &Event<'_>) {}
}

/// A closure is a handler that ignores events.
impl<F> Handler for F
where
    F: FnMut(Update) -> Result<(), String> + Send,
{
    fn apply(&mut self, update: Update) -> Result<(), String> {
        self(update)
    }
}

/// Why one stream to Galley ended.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("invalid galley address {addr:?}: {source}")]
    Address {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot connect to galley at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("galley stream failed: {0}")]
    Stream(#[from] tonic::Status),
    #[error("galley closed the stream")]
    Closed,
}

/// An MCP sink subscribed to `collections` at one Galley, feeding `handler`.
pub struct Sink<H> {
    addr: String,
    node_id: String,
    collections: Vec<Kind>,
    handler: H,
    answered: BTreeSet<Kind>,
    synced: watch::Sender<bool>,
}

impl<H: std::fmt::Debug> std::fmt::Debug for Sink<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("addr", &self.addr)
            .field("node_id", &self.node_id)
            .field("collections", &self.collections)
            .field("answered", &self.answered)
            .field("handler", &self.handler)
            .finish()
    }
}

impl<H: Handler> Sink<H> {
    /// A sink for Galley at `addr` (e.g. `http://127.0.0.1:9901`), identifying itself as
    /// `node_id`, subscribing to `collections` (requested in that order).
    pub fn new(
        addr: impl Into<String>,
        node_id: impl Into<String>,
        collections: impl IntoIterator<Item = Kind>,
        handler: H,
    ) -> Sink<H> {
        let mut kinds: Vec<Kind> = Vec::new();
        for k in collections {
            if !kinds.contains(&k) {
                kinds.push(k);
            }
        }
        Sink {
            addr: addr.into(),
            node_id: node_id.into(),
            collections: kinds,
            handler,
            answered: BTreeSet::new(),
            synced: watch::channel(false).0,
        }
    }

    /// Turns `true` once every collection has answered once (ACK or NACK), and stays so.
    pub fn synced(&self) -> watch::Receiver<bool> {
        self.synced.subscribe()
    }

    /// The subscribed collections.
    pub fn collections(&self) -> &[Kind] {
        &self.collections
    }

    /// The handler (and the state it keeps).
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The opening request of every collection (no nonce).
    pub fn initial_requests(&self) -> Vec<RequestResources> {
        self.collections
            .iter()
            .map(|k| self.request(k.info().collection, String::new(), None))
            .collect()
    }

    /// Applies one response and returns the ACK, or the NACK when it could not be applied.
    pub fn on_response(&mut self, resp: &Resources) -> RequestResources {
        let kind = Kind::from_collection(&resp.collection).filter(|k| self.collections.contains(k));
        let result = match kind {
            None => Err(format!(
                "collection {:?} was not requested by this sink",
                resp.collection
            )),
            Some(_) => Update::decode(resp)
                .map_err(|e| e.to_string())
                .and_then(|update| self.handler.apply(update)),
        };
        let reply = match result {
            Ok(()) => {
                tracing::info!(
                    collection = %resp.collection,
                    version = %resp.system_version_info,
                    resources = resp.resources.len(),
                    removed = resp.removed_resources.len(),
                    incremental = resp.incremental,
                    "collection applied"
                );
                self.handler.on_event(&Event::Acked {
                    collection: &resp.collection,
                    version: &resp.system_version_info,
                });
                self.request(&resp.collection, resp.nonce.clone(), None)
            }
            Err(error) => {
                tracing::warn!(
                    collection = %resp.collection,
                    version = %resp.system_version_info,
                    error = %error,
                    "collection rejected; previous state kept"
                );
                self.handler.on_event(&Event::Nacked {
                    collection: &resp.collection,
                    version: &resp.system_version_info,
                    error: &error,
                });
                self.request(&resp.collection, resp.nonce.clone(), Some(error))
            }
        };
        if let Some(kind) = kind {
            self.answered.insert(kind);
        }
        if !*self.synced.borrow() && self.collections.iter().all(|k| self.answered.contains(k)) {
            self.synced.send_replace(true);
            tracing::info!(
                galley = %self.addr,
                collections = self.collections.len(),
                "every collection synced"
            );
            self.handler.on_event(&Event::Synced);
        }
        reply
    }

    /// Keeps a stream to Galley open until `shutdown` resolves, reconnecting with backoff.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
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
            if let Err(e) = result {
                tracing::warn!(
                    galley = %self.addr,
                    error = %error_chain(&e),
                    retry_in_ms = backoff.as_millis() as u64,
                    "galley stream ended"
                );
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One stream to Galley, until it ends. Sets `got_data` once a response arrives.
    async fn stream_once(&mut self, got_data: &mut bool) -> Result<(), SinkError> {
        let endpoint = tonic::transport::Endpoint::from_shared(self.addr.clone())
            .map_err(|source| SinkError::Address {
                addr: self.addr.clone(),
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT);
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| SinkError::Connect {
                addr: self.addr.clone(),
                source,
            })?;
        let mut client = ResourceSourceClient::new(channel);
        let initial = self.initial_requests();
        let (tx, rx) = mpsc::channel(initial.len() * 2 + 4);
        for r in initial {
            // The receiver is alive: it is handed to the client just below.
            let _ = tx.send(r).await;
        }
        let mut inbound = client
            .establish_resource_stream(ReceiverStream::new(rx))
            .await?
            .into_inner();
        self.handler.on_event(&Event::Connected);
        tracing::info!(
            galley = %self.addr,
            collections = self.collections.len(),
            "subscribed to galley"
        );
        while let Some(resp) = inbound.message().await? {
            *got_data = true;
            let reply = self.on_response(&resp);
            if tx.send(reply).await.is_err() {
                break;
            }
        }
        Err(SinkError::Closed)
    }

    fn request(&self, collection: &str, nonce: String, error: Option<String>) -> RequestResources {
        RequestResources {
            sink_node: Some(SinkNode {
                id: self.node_id.clone(),
                annotations: Default::default(),
            }),
            collection: collection.to_string(),
            initial_resource_versions: Default::default(),
            response_nonce: nonce,
            error_detail: error.map(|message| RpcStatus {
                code: tonic::Code::InvalidArgument as i32,
                message,
                details: Vec::new(),
            }),
            // Pilot's and Mixer's handlers apply incremental updates (added/changed resources
            // and removed names) as well as full states.
            incremental: true,
        }
    }
}

/// `e` and its sources, `: `-joined (tonic's transport errors hide the cause in the source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests;
