//! What both ADS protocols (SotW and Delta) share per stream: the proxy's identity and its
//! translated config ([`Session`]), and the stream loop (requests, snapshot changes, shutdown,
//! connect/disconnect bookkeeping). A [`Protocol`] only turns events into responses.

use std::sync::Arc;

use mesh_proto::envoy::envoy::config::core::v3::Node;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::server::Shared;
use crate::model::Registry;
use crate::translate::{EncodedConfig, ProxyInfo, ProxyInfoError, translate};

/// The per-stream rules of one xDS protocol variant. Handlers are synchronous: they update their
/// own state, the metrics and `/debug/syncz`, and return the responses to send, in order.
pub(super) trait Protocol: Default + Send + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    /// `sotw` or `delta`, for logs and `/debug/syncz`.
    const NAME: &'static str;

    /// The node of a request (only the first request of a stream must carry it).
    fn node(req: &Self::Request) -> Option<&Node>;

    /// Handles one client request.
    fn on_request(
        &mut self,
        shared: &Shared,
        session: &Session,
        req: Self::Request,
    ) -> Vec<Self::Response>;

    /// The proxy's config was recomputed: push what changed, in push order.
    fn on_change(&mut self, shared: &Shared, session: &Session) -> Vec<Self::Response>;
}

/// A proxy identified on a stream, and its current translated config.
pub(super) struct Session {
    pub(super) stream: u64,
    pub(super) proxy: ProxyInfo,
    registry: Arc<Registry>,
    pub(super) config: EncodedConfig,
}

impl Session {
    /// Identifies the proxy from `node`, translates its config and registers the stream.
    fn open(
        shared: &Shared,
        stream: u64,
        node: Option<&Node>,
        protocol: &'static str,
    ) -> Result<Session, ProxyInfoError> {
        let proxy = ProxyInfo::from_node(node.ok_or(ProxyInfoError::MissingNode)?)?;
        let registry = shared.registry.current();
        let config = compute(shared, &registry, &proxy);
        tracing::info!(proxy = %proxy.id, stream, protocol, proxy_type = ?proxy.proxy_type, "proxy connected");
        shared.status.connect(stream, proxy.clone(), protocol);
        shared.metrics.connected_proxies.inc();
        Ok(Session {
            stream,
            proxy,
            registry,
            config,
        })
    }

    /// Recomputes the config from the newest registry; `false` when the registry is unchanged.
    fn refresh(&mut self, shared: &Shared) -> bool {
        let registry = shared.registry.current();
        if Arc::ptr_eq(&registry, &self.registry) {
            return false;
        }
        self.config = compute(shared, &registry, &self.proxy);
        self.registry = registry;
        true
    }

    fn close(self, shared: &Shared) {
        shared.status.disconnect(self.stream);
        shared.metrics.connected_proxies.dec();
        tracing::info!(proxy = %self.proxy.id, stream = self.stream, "proxy disconnected");
    }
}

/// Translates and encodes `proxy`'s config, reporting skipped VirtualServices.
fn compute(shared: &Shared, registry: &Registry, proxy: &ProxyInfo) -> EncodedConfig {
    let cfg = translate(registry, proxy, &shared.options);
    for s in &cfg.skipped {
        tracing::warn!(proxy = %proxy.id, virtual_service = %s.virtual_service, reason = %s.reason, "VirtualService skipped");
        shared.metrics.vs_skipped.inc();
    }
    cfg.encode()
}

/// Serves one stream with protocol `P` until the client goes away or Pilot shuts down.
pub(super) async fn serve<P: Protocol>(
    shared: Arc<Shared>,
    mut requests: Streaming<P::Request>,
    tx: mpsc::Sender<Result<P::Response, Status>>,
) {
    let stream = shared.next_stream();
    let mut snapshots = shared.registry.subscribe();
    let mut shutdown = shared.shutdown.clone();
    let mut session: Option<Session> = None;
    let mut protocol = P::default();
    let mut snapshots_open = true;
    loop {
        let out = tokio::select! {
            req = requests.message() => match req {
                Ok(Some(req)) => {
                    if session.is_none() {
                        match Session::open(&shared, stream, P::node(&req), P::NAME) {
                            Ok(s) => session = Some(s),
                            Err(e) => {
                                tracing::warn!(stream, protocol = P::NAME, error = %e, "rejecting ADS stream");
                                let _ = tx.send(Err(Status::invalid_argument(e.to_string()))).await;
                                break;
                            }
                        }
                    }
                    let Some(s) = session.as_ref() else { break };
                    protocol.on_request(&shared, s, req)
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(stream, error = %e, "ADS stream error");
                    break;
                }
            },
            changed = snapshots.changed(), if snapshots_open => {
                if changed.is_err() {
                    // No more snapshots will come; keep serving requests with the last config.
                    snapshots_open = false;
                    continue;
                }
                let Some(s) = session.as_mut() else { continue };
                if !s.refresh(&shared) {
                    continue;
                }
                protocol.on_change(&shared, s)
            }
            _ = shutdown.changed() => break,
        };
        let mut open = true;
        for resp in out {
            if tx.send(Ok(resp)).await.is_err() {
                open = false;
                break;
            }
        }
        if !open {
            break;
        }
    }
    if let Some(s) = session {
        s.close(&shared);
    }
}
