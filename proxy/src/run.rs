//! Starting the proxy: bind every listener, then run xDS, identity, Mixer and the data path
//! until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_runtime::{Metrics, Readiness, StartError, bind_tcp};
use tokio::sync::watch;

use crate::admin::{ProxyMetrics, admin_router};
use crate::http::{
    ACCESS_LOG_QUEUE, AccessLog, ProxyContext, RoutedKind, Upstream, Workload, serve_inbound,
    serve_routed,
};
use crate::mixer::{MixerClient, MixerError};
use crate::tls::IdentitySlot;
use crate::xds::{NodeInfo, ProxyType, SharedConfig};

/// The sidecar's outbound listener name in LDS.
pub const OUTBOUND_LISTENER: &str = "virtualOutbound";

/// Everything `run` needs (the binary fills it from flags).
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub node: NodeInfo,
    pub xds_addr: String,
    pub citadel_addr: String,
    pub token_file: std::path::PathBuf,
    pub mixer_addr: Option<String>,
    pub outbound_addr: SocketAddr,
    pub inbound_addr: SocketAddr,
    pub app_addr: SocketAddr,
    /// (port in Pilot's `0.0.0.0_<port>`, address to bind).
    pub gateway_ports: Vec<(u16, SocketAddr)>,
    /// (port in Pilot's `tcp_proxy` listener `0.0.0.0_<port>`, address to bind): the local-mode
    /// stand-in for capturing a TCP service port.
    pub tcp_listeners: Vec<(u16, SocketAddr)>,
    pub admin_addr: SocketAddr,
    pub monitoring_addr: Option<SocketAddr>,
    pub trust_domain: String,
    /// Envoy-style JSON access log per request; off when `None`.
    pub access_log: Option<crate::http::AccessLogTarget>,
    /// Spans exported over OTLP/gRPC; off when `None`.
    pub tracing: Option<crate::trace::TraceConfig>,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Bind(#[from] StartError),
    #[error("cannot read token file {path}: {source}")]
    Token {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {0} is empty")]
    EmptyToken(String),
    #[error(transparent)]
    Mixer(#[from] MixerError),
    #[error("cannot open access log {path}: {source}")]
    AccessLog {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Trace(#[from] crate::trace::TraceError),
    #[error("admin server failed: {0}")]
    Admin(std::io::Error),
}

/// Parses `PORT=ADDR` (`80=127.0.0.1:18080`).
pub fn parse_gateway_port(s: &str) -> Result<(u16, SocketAddr), String> {
    let (port, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not PORT=ADDR"))?;
    let port = port
        .trim()
        .parse::<u16>()
        .map_err(|e| format!("bad port in {s:?}: {e}"))?;
    let addr = addr
        .trim()
        .parse::<SocketAddr>()
        .map_err(|e| format!("bad address in {s:?}: {e}"))?;
    Ok((port, addr))
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Runs the proxy until `shutdown` resolves.
pub async fn run(cfg: ProxyConfig, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let token = std::fs::read_to_string(&cfg.token_file).map_err(|source| RunError::Token {
        path: cfg.token_file.display().to_string(),
        source,
    })?;
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(RunError::EmptyToken(cfg.token_file.display().to_string()));
    }

    // Bind everything first.
    let admin = bind_tcp("admin", cfg.admin_addr).await?;
    let monitoring = match cfg.monitoring_addr {
        Some(a) => Some(bind_tcp("monitoring", a).await?),
        None => None,
    };
    let mut routed = Vec::new();
    let mut inbound = None;
    match cfg.node.proxy_type {
        ProxyType::Sidecar => {
            routed.push((
                bind_tcp("outbound", cfg.outbound_addr).await?,
                OUTBOUND_LISTENER.to_string(),
                RoutedKind::SidecarOutbound,
            ));
            inbound = Some(bind_tcp("inbound", cfg.inbound_addr).await?);
            if !cfg.gateway_ports.is_empty() {
                tracing::warn!("--gateway-port is ignored for a sidecar");
            }
        }
        ProxyType::Router => {
            for (port, addr) in &cfg.gateway_ports {
                routed.push((
                    bind_tcp("gateway", *addr).await?,
                    format!("0.0.0.0_{port}"),
                    RoutedKind::Gateway,
                ));
            }
        }
    }
    let mut tcp_listeners = Vec::new();
    for (port, addr) in &cfg.tcp_listeners {
        tcp_listeners.push((bind_tcp("tcp", *addr).await?, format!("0.0.0.0_{port}")));
    }

    let readiness = Readiness::new(&["xds", "identity"]);
    let metrics = Metrics::default();
    let proxy_metrics = ProxyMetrics::register(&metrics);
    let config = SharedConfig::default();
    let identity = IdentitySlot::default();
    let mixer = match &cfg.mixer_addr {
        Some(a) => Some(MixerClient::new(a, proxy_metrics.clone())?),
        None => None,
    };
    let workload = Workload::of_node(&cfg.node);
    let access_log = match &cfg.access_log {
        None => None,
        Some(target) => {
            let (log, writer) = AccessLog::open(
                target,
                proxy_metrics.access_log_dropped.clone(),
                ACCESS_LOG_QUEUE,
            )
            .await
            .map_err(|source| RunError::AccessLog {
                path: format!("{target:?}"),
                source,
            })?;
            // Ends (flushed) once the last handle goes with the context.
            tokio::spawn(writer);
            Some(log)
        }
    };
    let tracing = match &cfg.tracing {
        Some(t) => Some(crate::trace::Tracing::start(t, &trace_identity(&cfg.node))?),
        None => None,
    };
    let ctx = Arc::new(ProxyContext {
        config: config.clone(),
        upstream: Upstream::new(Duration::from_secs(10)),
        metrics: proxy_metrics.clone(),
        mixer,
        identity: identity.clone(),
        node: cfg.node.clone(),
        app_addr: cfg.app_addr,
        workload,
        access_log,
        tracer: tracing.as_ref().map(crate::trace::Tracing::tracer),
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();

    tasks.spawn(crate::xds::run(
        cfg.xds_addr.clone(),
        cfg.node.node(),
        config.clone(),
        readiness.clone(),
        proxy_metrics.clone(),
        stopped(stop_rx.clone()),
    ));
    tasks.spawn(hold_identity(
        mesh_identity::IdentityConfig {
            citadel_addr: cfg.citadel_addr.clone(),
            token,
            ttl: Duration::from_secs(24 * 3600),
            trust_domain: cfg.trust_domain.clone(),
        },
        identity.clone(),
        readiness.clone(),
        stopped(stop_rx.clone()),
    ));
    for (listener, name, kind) in routed {
        let addr = listener.local_addr().ok();
        tracing::info!(listener = %name, ?addr, "serving");
        tasks.spawn(serve_routed(
            listener,
            ctx.clone(),
            name,
            kind,
            stopped(stop_rx.clone()),
        ));
    }
    for (listener, name) in tcp_listeners {
        tracing::info!(listener = %name, addr = ?listener.local_addr().ok(), "serving tcp");
        tasks.spawn(crate::tcp::serve_tcp(
            listener,
            ctx.clone(),
            name,
            stopped(stop_rx.clone()),
        ));
    }
    if let Some(l) = inbound {
        tracing::info!(addr = ?l.local_addr().ok(), "serving inbound (mTLS)");
        tasks.spawn(serve_inbound(l, ctx.clone(), stopped(stop_rx.clone())));
    }
    if let Some(m) = monitoring {
        let (r, mm, s) = (readiness.clone(), metrics.clone(), stopped(stop_rx.clone()));
        tasks.spawn(async move {
            if let Err(e) = mesh_runtime::serve_monitoring(m, r, mm, s).await {
                tracing::warn!(error = %e, "monitoring server failed");
            }
        });
    }
    let admin_app = admin_router(readiness, metrics, config, cfg.node.clone(), identity);
    tracing::info!(node = %cfg.node.node_id(), admin = %cfg.admin_addr, "mesh-proxy started");
    let admin_stop = stopped(stop_rx.clone());
    let admin_server = async move {
        axum::serve(admin, admin_app)
            .with_graceful_shutdown(admin_stop)
            .await
    };
    let result = tokio::select! {
        r = admin_server => r.map_err(RunError::Admin),
        _ = shutdown => Ok(()),
    };
    let _ = stop_tx.send(true);
    let drain = async { while tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(Duration::from_secs(6), drain).await;
    // The spans of the last requests go out before the process ends.
    if let Some(t) = tracing {
        t.shutdown().await;
    }
    result
}

/// Who this proxy is in its spans: Istio's canonical service and revision labels, else `app`
/// and `version`.
fn trace_identity(node: &NodeInfo) -> crate::trace::TraceIdentity {
    let label = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| node.labels.get(*k).filter(|v| !v.is_empty()).cloned())
    };
    crate::trace::TraceIdentity {
        workload: node.workload_name().to_string(),
        namespace: node.namespace.clone(),
        canonical_service: label(&["service.istio.io/canonical-name", "app"])
            .unwrap_or_else(|| node.workload_name().to_string()),
        canonical_revision: label(&["service.istio.io/canonical-revision", "version"])
            .unwrap_or_else(|| "latest".to_string()),
        node_id: node.node_id(),
    }
}

/// Obtains the workload certificate, retrying with backoff while Citadel is away.
async fn hold_identity(
    config: mesh_identity::IdentityConfig,
    slot: IdentitySlot,
    readiness: Readiness,
    shutdown: impl Future<Output = ()>,
) {
    let obtain = async {
        let mut backoff = Duration::from_millis(200);
        loop {
            match mesh_identity::WorkloadIdentity::start(config.clone()).await {
                Ok(id) => {
                    tracing::info!(spiffe_id = %id.spiffe_id(), "workload identity held");
                    slot.set(Arc::new(id));
                    readiness.set("identity", true);
                    return;
                }
                Err(e) => {
                    tracing::warn!(citadel = %config.citadel_addr, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot obtain workload certificate");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    };
    tokio::select! {
        _ = obtain => {}
        _ = shutdown => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_port_flag() {
        assert_eq!(
            parse_gateway_port("80=127.0.0.1:18080").unwrap(),
            (80, "127.0.0.1:18080".parse().unwrap())
        );
        assert!(parse_gateway_port("80").is_err());
        assert!(parse_gateway_port("x=127.0.0.1:1").is_err());
    }
}
