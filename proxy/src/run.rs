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
    ACCESS_LOG_QUEUE, AccessLog, AccessLogFollower, ProxyContext, RoutedKind, Upstream, Workload,
    serve_inbound_with, serve_routed_with,
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
    /// Pilot: `http://host:port` (plaintext) or `https://host:port` (mTLS).
    pub xds_addr: String,
    /// The ADS protocol tried first (Delta falls back to SotW when Pilot lacks it).
    pub xds_protocol: crate::xds::XdsProtocol,
    /// xDS over mTLS with the workload certificate (implied by an `https://` address).
    pub xds_tls: bool,
    /// SPIFFE ids Pilot's xDS certificate may carry; empty: any id of the trust domain.
    pub xds_sans: Vec<String>,
    pub citadel_addr: String,
    /// Citadel's TLS listener (`host:port`): renewals authenticate there with the current
    /// certificate; `None` renews with the token.
    pub citadel_tls_addr: Option<String>,
    /// Lifetime asked of Citadel for the workload certificate (renewed at half life).
    pub cert_ttl: Duration,
    pub token_file: std::path::PathBuf,
    pub mixer_addr: Option<String>,
    /// Mixer Check deadline (then the network fail policy decides).
    pub mixer_check_timeout: Duration,
    pub outbound_addr: SocketAddr,
    pub inbound_addr: SocketAddr,
    pub app_addr: SocketAddr,
    /// (port in Pilot's `0.0.0.0_<port>`, address to bind).
    pub gateway_ports: Vec<(u16, SocketAddr)>,
    /// Where gateway `credentialName` secrets are read (`DIR/<name>/{tls.crt,tls.key,ca.crt}`).
    pub gateway_credential_dir: std::path::PathBuf,
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
    /// Transparent capture of outbound connections (iptables REDIRECT target; Istio's 15001);
    /// off when `None`.
    pub capture_outbound_addr: Option<SocketAddr>,
    /// Transparent capture of inbound connections (Istio's 15006); off when `None`.
    pub capture_inbound_addr: Option<SocketAddr>,
    /// Destinations outside the registry, when Pilot does not say.
    pub outbound_policy: crate::capture::OutboundPolicy,
    /// How long protocol sniffing waits for a captured client's first bytes.
    pub sniff_wait: Duration,
    /// What downstream HTTP clients may send (header size, header read timeout).
    pub http_limits: crate::http::HttpLimits,
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

/// Helper threads for blocking work (system DNS lookups, file I/O); tokio's default is 512.
const MAX_BLOCKING_THREADS: usize = 16;

/// The runtime the proxy runs on: `TOKIO_WORKER_THREADS` worker threads, else one per CPU the
/// process may use (`available_parallelism`, which follows the cgroup CPU quota). With one, the
/// current-thread scheduler: the data path, xDS and admin share the main thread with no
/// cross-thread wake-ups (like Envoy's `--concurrency 1`).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match worker_threads(std::env::var("TOKIO_WORKER_THREADS").ok()) {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    builder
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
}

/// Worker threads: `env` (`TOKIO_WORKER_THREADS`) when it is a positive number, else the CPUs
/// available to the process.
fn worker_threads(env: Option<String>) -> usize {
    env.and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
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
    let capture_outbound = match cfg.capture_outbound_addr {
        Some(a) => Some(bind_tcp("outbound capture", a).await?),
        None => None,
    };
    let capture_inbound = match cfg.capture_inbound_addr {
        Some(a) => Some(bind_tcp("inbound capture", a).await?),
        None => None,
    };

    crate::gateway::set_credential_dir(&cfg.gateway_credential_dir);
    let readiness = Readiness::new(&["xds", "identity"]);
    let metrics = Metrics::default();
    let proxy_metrics = ProxyMetrics::register(&metrics);
    let config = SharedConfig::default();
    let identity = IdentitySlot::default();
    let mixer = match &cfg.mixer_addr {
        Some(a) => Some(MixerClient::with_check_timeout(
            a,
            proxy_metrics.clone(),
            cfg.mixer_check_timeout,
        )?),
        None => None,
    };
    let workload = Workload::of_node(&cfg.node);
    // Access logs follow the listeners' `access_log` (the mesh config's accessLogFile), unless
    // `--access-log` fixes one target for everything.
    let mut access_log_follower = None;
    let access_log = match &cfg.access_log {
        None => {
            let log = AccessLog::new(
                cfg.node.proxy_type == ProxyType::Router,
                proxy_metrics.access_log_dropped.clone(),
            );
            access_log_follower = Some(AccessLogFollower::new(log.clone(), ACCESS_LOG_QUEUE));
            Some(log)
        }
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
    if let Some(follower) = access_log_follower {
        tasks.spawn(follower.run(config.subscribe(), stopped(stop_rx.clone())));
    }
    // STRICT_DNS / LOGICAL_DNS clusters: resolved and refreshed beside the xDS config.
    tasks.spawn(crate::cluster::dns::run(
        config.clone(),
        Arc::new(crate::cluster::SystemResolver),
        crate::cluster::DnsMetrics::register(&metrics),
        stopped(stop_rx.clone()),
    ));

    let xds_tls = (cfg.xds_tls || cfg.xds_addr.trim().starts_with("https://")).then(|| {
        crate::xds::XdsTlsConfig {
            identity: identity.clone(),
            expected_sans: cfg.xds_sans.clone(),
        }
    });
    tasks.spawn(crate::xds::run_client(
        crate::xds::XdsClientConfig {
            addr: cfg.xds_addr.clone(),
            protocol: cfg.xds_protocol,
            tls: xds_tls,
        },
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
            ttl: cfg.cert_ttl,
            trust_domain: cfg.trust_domain.clone(),
        },
        mesh_identity::RenewalConfig {
            tls_addr: cfg.citadel_tls_addr.clone(),
            ..mesh_identity::RenewalConfig::default()
        },
        proxy_metrics.clone(),
        identity.clone(),
        readiness.clone(),
        stopped(stop_rx.clone()),
    ));
    for (listener, name, kind) in routed {
        let addr = listener.local_addr().ok();
        tracing::info!(listener = %name, ?addr, "serving");
        tasks.spawn(serve_routed_with(
            listener,
            ctx.clone(),
            name,
            kind,
            cfg.http_limits,
            stopped(stop_rx.clone()),
        ));
    }
    let capture = crate::capture::CaptureConfig {
        original_dst: Arc::new(crate::capture::SockOptOriginalDst),
        policy: cfg.outbound_policy,
        sniff_wait: cfg.sniff_wait,
        limits: cfg.http_limits,
    };
    if let Some(l) = capture_outbound {
        tracing::info!(addr = ?l.local_addr().ok(), policy = ?cfg.outbound_policy, "serving outbound capture");
        tasks.spawn(crate::capture::serve_capture_outbound(
            l,
            ctx.clone(),
            capture.clone(),
            stopped(stop_rx.clone()),
        ));
    }
    // Sidecar `ingress[]` ports with `bind` / `captureMode: NONE`: listeners bound as Pilot
    // asks (they come with xDS, after readiness).
    if cfg.node.proxy_type == ProxyType::Sidecar {
        tasks.spawn(crate::capture::serve_ingress_binds(
            ctx.clone(),
            capture.clone(),
            stopped(stop_rx.clone()),
        ));
    }
    if let Some(l) = capture_inbound {
        tracing::info!(addr = ?l.local_addr().ok(), "serving inbound capture");
        tasks.spawn(crate::capture::serve_capture_inbound(
            l,
            ctx.clone(),
            capture,
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
        tasks.spawn(serve_inbound_with(
            l,
            ctx.clone(),
            cfg.http_limits,
            stopped(stop_rx.clone()),
        ));
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

/// Obtains the workload certificate, retrying with backoff while Citadel is away, then keeps
/// its expiry and renewal failures on the metrics (mesh-identity renews it in the background).
async fn hold_identity(
    config: mesh_identity::IdentityConfig,
    renewal: mesh_identity::RenewalConfig,
    metrics: ProxyMetrics,
    slot: IdentitySlot,
    readiness: Readiness,
    shutdown: impl Future<Output = ()>,
) {
    let obtain = async {
        let mut backoff = Duration::from_millis(200);
        let id = loop {
            match mesh_identity::WorkloadIdentity::start_with(config.clone(), renewal.clone()).await
            {
                Ok(id) => {
                    tracing::info!(spiffe_id = %id.spiffe_id(), "workload identity held");
                    let id = Arc::new(id);
                    slot.set(id.clone());
                    readiness.set("identity", true);
                    break id;
                }
                Err(e) => {
                    tracing::warn!(citadel = %config.citadel_addr, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot obtain workload certificate");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut warned: Option<tokio::time::Instant> = None;
        loop {
            tick.tick().await;
            let (left, failures) = (id.seconds_to_expiry(), id.consecutive_renewal_failures());
            metrics.identity_expiry_seconds.set(left);
            metrics
                .identity_renewal_failures
                .set(i64::try_from(failures).unwrap_or(i64::MAX));
            // Close to expiry with renewals failing: warn, at most once a minute.
            if crate::tls::expiry_at_risk(left, config.ttl, failures)
                && warned.is_none_or(|w| w.elapsed() >= Duration::from_secs(60))
            {
                warned = Some(tokio::time::Instant::now());
                tracing::warn!(spiffe_id = %id.spiffe_id(), seconds_left = left as i64, renewal_failures = failures, last_error = ?id.last_renewal_error(), "workload certificate close to expiry and renewals failing");
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
    fn worker_threads_from_the_environment_else_the_cpus() {
        assert_eq!(worker_threads(Some("1".into())), 1);
        assert_eq!(worker_threads(Some(" 3 ".into())), 3);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        for bad in [None, Some("0".to_string()), Some("many".to_string())] {
            assert_eq!(worker_threads(bad), cpus);
        }
    }

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
