//! One ADS stream: SotW per type URL, pushes on every snapshot change.

use std::collections::BTreeMap;
use std::sync::Arc;

use mesh_proto::discovery::{Request, TypeState};
use mesh_proto::envoy::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::server::Shared;
use crate::model::Registry;
use crate::translate::{EncodedConfig, ProxyInfo, XdsType, translate};

type Tx = mpsc::Sender<Result<DiscoveryResponse, Status>>;

#[derive(Debug, Default)]
struct Subscription {
    state: TypeState,
    names: Vec<String>,
}

/// The per-stream state once the proxy has identified itself.
struct Connection {
    stream: u64,
    proxy: ProxyInfo,
    registry: Arc<Registry>,
    config: EncodedConfig,
    subs: BTreeMap<XdsType, Subscription>,
}

/// The stream ended because the client can no longer be served.
struct Closed;

/// Serves one stream until the client goes away or Pilot shuts down.
pub(super) async fn serve(shared: Arc<Shared>, mut requests: Streaming<DiscoveryRequest>, tx: Tx) {
    let stream = shared.next_stream();
    let mut snapshots = shared.registry.subscribe();
    let mut shutdown = shared.shutdown.clone();
    let mut conn: Option<Connection> = None;
    let mut snapshots_open = true;
    loop {
        tokio::select! {
            req = requests.message() => match req {
                Ok(Some(req)) => {
                    if handle_request(&shared, stream, &mut conn, req, &tx).await.is_err() {
                        break;
                    }
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
                if let Some(c) = conn.as_mut()
                    && push_changes(&shared, c, &tx).await.is_err()
                {
                    break;
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    if let Some(c) = conn {
        shared.status.disconnect(c.stream);
        shared.metrics.connected_proxies.dec();
        tracing::info!(proxy = %c.proxy.id, stream, "proxy disconnected");
    }
}

async fn handle_request(
    shared: &Shared,
    stream: u64,
    conn: &mut Option<Connection>,
    req: DiscoveryRequest,
    tx: &Tx,
) -> Result<(), Closed> {
    if conn.is_none() {
        let proxy = match req.node.as_ref() {
            None => Err(crate::translate::ProxyInfoError::MissingNode),
            Some(node) => ProxyInfo::from_node(node),
        };
        let proxy = match proxy {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(stream, error = %e, "rejecting ADS stream");
                let _ = tx.send(Err(Status::invalid_argument(e.to_string()))).await;
                return Err(Closed);
            }
        };
        let registry = shared.registry.current();
        let config = compute(shared, &registry, &proxy);
        tracing::info!(proxy = %proxy.id, stream, proxy_type = ?proxy.proxy_type, "proxy connected");
        shared.status.connect(stream, proxy.clone());
        shared.metrics.connected_proxies.inc();
        *conn = Some(Connection {
            stream,
            proxy,
            registry,
            config,
            subs: BTreeMap::new(),
        });
    }
    let Some(c) = conn.as_mut() else {
        return Err(Closed);
    };
    let Some(t) = XdsType::from_type_url(&req.type_url) else {
        tracing::info!(proxy = %c.proxy.id, type_url = %req.type_url, "ignoring request for an unsupported type");
        return Ok(());
    };
    let error = req.error_detail.as_ref().map(|s| {
        if s.message.is_empty() {
            "(no detail)".to_string()
        } else {
            s.message.clone()
        }
    });
    let sub = c.subs.entry(t).or_default();
    let names_changed = t.named() && sub.names != req.resource_names;
    // Answering the latest nonce without error but with another version than the one sent is
    // not an ACK: the client keeps an older version (after a NACK) and only changes its names.
    let keeps_older = error.is_none()
        && sub
            .state
            .sent
            .as_ref()
            .is_some_and(|(v, n)| *n == req.response_nonce && *v != req.version_info);
    if keeps_older {
        if names_changed {
            sub.names = req.resource_names;
            send(shared, c, t, tx, true).await?;
        }
        return Ok(());
    }
    match sub.state.on_request(&req.response_nonce, error.as_deref()) {
        Request::Initial => {
            sub.names = req.resource_names;
            sub.state.reset();
            send(shared, c, t, tx, false).await?;
        }
        Request::Ack { version } => {
            tracing::debug!(proxy = %c.proxy.id, r#type = t.short(), version = %version, "ACK");
            if names_changed {
                sub.names = req.resource_names;
                send(shared, c, t, tx, true).await?;
            }
        }
        Request::Nack { version, error } => {
            tracing::warn!(proxy = %c.proxy.id, r#type = t.short(), version = %version, error = %error, "proxy rejected config");
            shared.metrics.nack(t.short());
            sub.names = req.resource_names;
        }
        Request::Stale => {
            tracing::debug!(proxy = %c.proxy.id, r#type = t.short(), nonce = %req.response_nonce, "stale request ignored");
        }
    }
    if let Some(sub) = c.subs.get(&t) {
        shared.status.update(stream, t, &sub.state, false);
    }
    Ok(())
}

/// Recomputes the proxy's config from the newest registry and sends every subscribed type whose
/// version changed, in push order.
async fn push_changes(shared: &Shared, c: &mut Connection, tx: &Tx) -> Result<(), Closed> {
    let registry = shared.registry.current();
    if Arc::ptr_eq(&registry, &c.registry) {
        return Ok(());
    }
    c.config = compute(shared, &registry, &c.proxy);
    c.registry = registry;
    for t in XdsType::ALL {
        if c.subs.contains_key(&t) {
            send(shared, c, t, tx, false).await?;
        }
    }
    Ok(())
}

/// Sends `t` when its version is new to the client (or always, with `force`, when the client
/// changed the resource names it wants).
async fn send(
    shared: &Shared,
    c: &mut Connection,
    t: XdsType,
    tx: &Tx,
    force: bool,
) -> Result<(), Closed> {
    let resources = c.config.get(t);
    let Some(sub) = c.subs.get_mut(&t) else {
        return Ok(());
    };
    if !force && !sub.state.should_send(&resources.version) {
        return Ok(());
    }
    let nonce = sub.state.on_send(&resources.version);
    let resp = DiscoveryResponse {
        version_info: resources.version.clone(),
        resources: resources.select(&sub.names),
        type_url: t.type_url().to_string(),
        nonce,
        ..DiscoveryResponse::default()
    };
    tracing::debug!(proxy = %c.proxy.id, r#type = t.short(), version = %resp.version_info, resources = resp.resources.len(), "push");
    tx.send(Ok(resp)).await.map_err(|_| Closed)?;
    shared.metrics.push(t.short());
    shared.status.update(c.stream, t, &sub.state, true);
    Ok(())
}

fn compute(shared: &Shared, registry: &Registry, proxy: &ProxyInfo) -> EncodedConfig {
    let cfg = translate(registry, proxy, &shared.options);
    for s in &cfg.skipped {
        tracing::warn!(proxy = %proxy.id, virtual_service = %s.virtual_service, reason = %s.reason, "VirtualService skipped");
        shared.metrics.vs_skipped.inc();
    }
    cfg.encode()
}
