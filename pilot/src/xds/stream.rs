//! What both ADS protocols (SotW and Delta) share per stream: the proxy's identity and its
//! translated config ([`Session`]), and the stream loop (requests, snapshot changes, shutdown,
//! connect/disconnect bookkeeping). A [`Protocol`] only turns events into responses.

use std::collections::BTreeSet;
use std::sync::Arc;

use mesh_proto::envoy::envoy::config::core::v3::Node;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use super::push::{ProxyResources, PushContext};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

/// Full pushes in flight are bounded by their size: a stream holds one permit per
/// [`PUSH_UNIT`] bytes of its proxy's config (at least one) from computing its push until its
/// proxy answered everything, or [`PUSH_HOLD`] passed. Bounds the memory of responses in flight
/// during a full push to thousands of proxies to about `PUSH_CONCURRENCY * PUSH_UNIT` bytes
/// (64 MiB: about 35 unscoped proxies of a 1,000-service mesh at once, or 2,000 proxies a
/// Sidecar scopes to a few services).
pub(super) const PUSH_CONCURRENCY: usize = 4096;
/// Bytes of config per push permit.
pub(super) const PUSH_UNIT: usize = 16 * 1024;
/// The longest a slow or silent proxy holds a push permit.
pub(super) const PUSH_HOLD: std::time::Duration = std::time::Duration::from_secs(5);
use super::server::Shared;
use crate::translate::{ProxyInfo, ProxyInfoError, ProxyType, TypeResources, XdsType};

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

    /// The proxy's config was recomputed: push what changed, in push order. `eds_changed`,
    /// when known, holds every load assignment that may have changed (nothing else did).
    fn on_change(
        &mut self,
        shared: &Shared,
        session: &Session,
        eds_changed: Option<&BTreeSet<String>>,
    ) -> Vec<Self::Response>;

    /// Whether a response sent is still waiting for the client's ACK or NACK.
    fn awaiting_answer(&self) -> bool;
}

/// A proxy identified on a stream, and its current translated config.
pub(super) struct Session {
    pub(super) stream: u64,
    pub(super) proxy: ProxyInfo,
    /// The push the config was computed from.
    epoch: u64,
    pub(super) config: ProxyResources,
    /// The node's namespace was verified against the client certificate (xDS over mTLS).
    verified: bool,
}

impl Session {
    /// Identifies the proxy from `node`, translates its config and registers the stream.
    fn open(
        shared: &Shared,
        stream: u64,
        node: Option<&Node>,
        protocol: &'static str,
        verified: bool,
    ) -> Result<Session, ProxyInfoError> {
        let proxy = ProxyInfo::from_node(node.ok_or(ProxyInfoError::MissingNode)?)?;
        let push = shared.pushes.borrow().clone();
        let mut config = compute(shared, &push, &proxy);
        config.set_secrets(secrets(shared, &proxy, verified, &config));
        tracing::info!(proxy = %proxy.id, stream, protocol, proxy_type = ?proxy.proxy_type, "proxy connected");
        shared.status.connect(stream, proxy.clone(), protocol);
        shared.convergence.open(stream);
        shared.metrics.connected_proxies.inc();
        Ok(Session {
            stream,
            proxy,
            epoch: push.epoch,
            config,
            verified,
        })
    }

    /// Recomputes the config from `push`.
    fn refresh(&mut self, shared: &Shared, push: &PushContext) {
        self.config = compute(shared, push, &self.proxy);
        self.config
            .set_secrets(secrets(shared, &self.proxy, self.verified, &self.config));
        self.epoch = push.epoch;
    }

    /// Recomputes the secrets after the credentials changed; whether they changed.
    fn refresh_secrets(&mut self, shared: &Shared) -> bool {
        let next = secrets(shared, &self.proxy, self.verified, &self.config);
        if next.version == self.config.get(XdsType::Secret).version {
            return false;
        }
        self.config.set_secrets(next);
        true
    }

    fn close(self, shared: &Shared) {
        shared.status.disconnect(self.stream);
        shared.convergence.close(self.stream);
        shared.metrics.connected_proxies.dec();
        tracing::info!(proxy = %self.proxy.id, stream = self.stream, "proxy disconnected");
    }
}

/// `proxy`'s SDS secrets (see `crate::sds` for who gets which): none without a credential
/// source, for a sidecar, or on a plaintext stream unless plaintext is allowed.
fn secrets(
    shared: &Shared,
    proxy: &ProxyInfo,
    verified: bool,
    config: &ProxyResources,
) -> Arc<TypeResources> {
    let Some(source) = shared.credentials.get() else {
        return Arc::default();
    };
    if proxy.proxy_type != ProxyType::Router {
        return Arc::default();
    }
    if !verified && !source.allow_plaintext {
        let names = crate::sds::referenced_names(config.get(XdsType::Listener));
        if !names.is_empty() {
            tracing::warn!(proxy = %proxy.id, secrets = ?names,
                "gateway secrets are only served over xds with mtls (or with --credential-plaintext)");
        }
        return Arc::default();
    }
    Arc::new(crate::sds::secrets_for(
        proxy,
        config.get(XdsType::Listener),
        &source.current(),
        &source.metrics,
    ))
}

/// `proxy`'s config in `push`, reporting skipped VirtualServices.
fn compute(shared: &Shared, push: &PushContext, proxy: &ProxyInfo) -> ProxyResources {
    let (config, skipped) = push.resources(proxy);
    for s in &skipped {
        tracing::debug!(proxy = %proxy.id, virtual_service = %s.virtual_service, reason = %s.reason, "VirtualService skipped");
        shared.metrics.vs_skipped.inc();
    }
    config
}

/// Serves one stream with protocol `P` until the client goes away or Pilot shuts down.
/// On an mTLS stream `peer` is the client's verified identity; its namespace must be the
/// proxy's.
pub(super) async fn serve<P: Protocol>(
    shared: Arc<Shared>,
    peer: Option<super::tls::XdsPeer>,
    mut requests: impl Stream<Item = Result<P::Request, Status>> + Unpin,
    tx: mpsc::Sender<Result<P::Response, Status>>,
) {
    let stream = shared.next_stream();
    let mut pushes = shared.pushes.clone();
    pushes.borrow_and_update();
    let mut shutdown = shared.shutdown.clone();
    let mut session: Option<Session> = None;
    let mut protocol = P::default();
    let mut pushes_open = true;
    // The push whose answers this stream still owes (for convergence).
    let mut owed: Option<u64> = None;
    let mut permit: Option<(OwnedSemaphorePermit, Instant)> = None;
    let mut credentials = shared.credentials.get().map(|c| c.subscribe());
    loop {
        let mut started = None;
        let hold_until = permit.as_ref().map(|(_, until)| *until);
        let out = tokio::select! {
            req = requests.next() => match req {
                Some(Ok(req)) => {
                    if session.is_none()
                        && let Some(peer) = &peer
                        && let Err(status) = super::tls::authorize(peer, P::node(&req))
                    {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                    if session.is_none() {
                        match Session::open(&shared, stream, P::node(&req), P::NAME, peer.is_some()) {
                            Ok(s) => {
                                owed = Some(s.epoch);
                                session = Some(s);
                            }
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
                None => break,
                Some(Err(e)) => {
                    tracing::debug!(stream, error = %e, "ADS stream error");
                    break;
                }
            },
            changed = pushes.changed(), if pushes_open => {
                if changed.is_err() {
                    // No more pushes will come; keep serving requests with the last config.
                    pushes_open = false;
                    continue;
                }
                let Some(s) = session.as_mut() else { continue };
                let mut push = shared.pushes.borrow().clone();
                if push.epoch == s.epoch {
                    continue;
                }
                // Endpoint-only changes are small: they skip the queue of full pushes.
                let mut eds_changed = push.endpoint_changes_since(s.epoch);
                if permit.is_none() && eds_changed.is_none() {
                    let weight = push.resources(&s.proxy).0.encoded_len().div_ceil(PUSH_UNIT);
                    let weight = u32::try_from(weight.clamp(1, PUSH_CONCURRENCY)).unwrap_or(1);
                    tokio::select! {
                        p = shared.push_permits.clone().acquire_many_owned(weight) => {
                            permit = p.ok().map(|p| (p, Instant::now() + PUSH_HOLD));
                        }
                        _ = shutdown.changed() => break,
                    }
                    push = shared.pushes.borrow().clone();
                    eds_changed = push.endpoint_changes_since(s.epoch);
                }
                started = Some(std::time::Instant::now());
                s.refresh(&shared, &push);
                owed = Some(s.epoch);
                protocol.on_change(&shared, s, eds_changed.as_deref())
            }
            changed = credentials_changed(&mut credentials) => {
                if changed.is_err() {
                    credentials = None;
                    continue;
                }
                let Some(s) = session.as_mut() else { continue };
                if !s.refresh_secrets(&shared) {
                    continue;
                }
                // Only secrets changed: the other types find nothing new to send.
                protocol.on_change(&shared, s, Some(&BTreeSet::new()))
            }
            _ = tokio::time::sleep_until(hold_until.unwrap_or_else(Instant::now)), if hold_until.is_some() => {
                tracing::debug!(stream, "proxy slow to answer a push; permit released");
                permit = None;
                continue;
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
        if let Some(t) = started {
            shared.metrics.push_time.observe(t.elapsed().as_secs_f64());
        }
        if !open {
            break;
        }
        if !protocol.awaiting_answer() {
            permit = None;
            if let Some(epoch) = owed.take() {
                shared.convergence.done(stream, epoch);
            }
        }
    }
    if let Some(s) = session {
        s.close(&shared);
    }
}

/// The next change of the credentials (never, without a source).
async fn credentials_changed(
    rx: &mut Option<tokio::sync::watch::Receiver<Arc<crate::sds::Credentials>>>,
) -> Result<(), tokio::sync::watch::error::RecvError> {
    match rx {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}
