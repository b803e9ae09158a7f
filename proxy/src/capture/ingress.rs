//! Sidecar `ingress[]` on the proxy: where a port's inbound traffic goes, and the listeners the
//! proxy binds itself for ports with `bind` / `captureMode: NONE`.
//!
//! Pilot sends each ingress port as `virtualInbound` chains matched on `destination_port`
//! whose route (or `tcp_proxy`) names `inbound|PORT||`, a `STATIC` cluster with one endpoint:
//! the Sidecar's `defaultEndpoint`. An unspecified endpoint IP (`0.0.0.0`, `::`) is the
//! instance IP: the address the connection arrived on. Without an ingress entry for the port,
//! traffic goes where it always did (the application's address, on the original port).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::http::ProxyContext;
use crate::xds::Config;

use super::listener::{CaptureConfig, serve_inbound_on};

/// Why an ingress port's traffic has nowhere to go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngressError {
    #[error("cluster {0} of the ingress port is not known (yet)")]
    NoCluster(String),
    #[error("cluster {0} of the ingress port has no endpoint")]
    NoEndpoint(String),
}

/// Where traffic that arrived for local `port` goes when a Sidecar ingress entry covers it:
/// `None` when none does; the endpoint's unspecified IP replaced by `instance_ip`.
pub fn ingress_upstream(
    config: &Config,
    port: u16,
    instance_ip: IpAddr,
) -> Option<Result<SocketAddr, IngressError>> {
    let target = config
        .inbound_policy()?
        .modes
        .ingress
        .get(&u32::from(port))?;
    Some(resolve(config, &target.cluster, instance_ip))
}

fn resolve(
    config: &Config,
    cluster: &str,
    instance_ip: IpAddr,
) -> Result<SocketAddr, IngressError> {
    let c = config
        .clusters
        .get(cluster)
        .ok_or_else(|| IngressError::NoCluster(cluster.to_string()))?;
    let addr = config
        .endpoints_of(c)
        .and_then(|e| e.endpoints.first())
        .map(|e| e.addr)
        .ok_or_else(|| IngressError::NoEndpoint(cluster.to_string()))?;
    Ok(if addr.ip().is_unspecified() {
        SocketAddr::new(instance_ip, addr.port())
    } else {
        addr
    })
}

/// The application address for a connection that arrived at `local` (for the port `port`):
/// the ingress endpoint when an ingress entry covers `port`, else `fallback`. A covered port
/// whose cluster is missing also falls back (logged).
pub fn app_for(config: &Config, port: u16, local: SocketAddr, fallback: SocketAddr) -> SocketAddr {
    match ingress_upstream(config, port, local.ip()) {
        Some(Ok(addr)) => addr,
        Some(Err(e)) => {
            tracing::warn!(port, error = %e, "sidecar ingress port: forwarding to the application address instead");
            fallback
        }
        None => fallback,
    }
}

/// The addresses Pilot asks the proxy to bind (`virtualInbound`'s `additional_addresses`).
pub fn wanted_binds(config: &Config) -> Vec<SocketAddr> {
    config
        .inbound_policy()
        .map(|p| p.modes.binds.clone())
        .unwrap_or_default()
}

/// Keeps one inbound listener bound per address Pilot asks for, following every config
/// update, until `shutdown`. A bind that fails is logged and counted
/// (`captured{direction="ingress",target="bind_failed"}`) and retried at the next update.
pub async fn serve_ingress_binds(
    ctx: Arc<ProxyContext>,
    capture: CaptureConfig,
    shutdown: impl Future<Output = ()>,
) {
    let mut updates = ctx.config.subscribe();
    let mut bound: BTreeMap<SocketAddr, JoinHandle<()>> = BTreeMap::new();
    tokio::pin!(shutdown);
    loop {
        let wanted = wanted_binds(&ctx.config.load());
        bound.retain(|addr, task| {
            let keep = wanted.contains(addr) && !task.is_finished();
            if !keep {
                tracing::info!(%addr, "sidecar ingress listener closed");
                task.abort();
            }
            keep
        });
        for addr in wanted {
            if bound.contains_key(&addr) {
                continue;
            }
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    tracing::info!(%addr, "serving sidecar ingress listener");
                    let task = tokio::spawn(serve_inbound_on(
                        l,
                        ctx.clone(),
                        capture.clone(),
                        std::future::pending::<()>(),
                    ));
                    bound.insert(addr, task);
                }
                Err(e) => {
                    ctx.metrics.captured("ingress", "-", "bind_failed");
                    tracing::error!(%addr, error = %e, "cannot bind sidecar ingress listener");
                }
            }
        }
        tokio::select! {
            r = updates.changed() => if r.is_err() { break },
            _ = &mut shutdown => break,
        }
    }
    for (_, task) in bound {
        task.abort();
    }
}
