//! `mesh-proxy`: the mesh's sidecar and gateway proxy.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use mesh_proxy::xds::{NodeInfo, ProxyType, parse_labels};

/// The mesh's sidecar (or ingress router) proxy: xDS from Pilot, certificate from Citadel,
/// policy and telemetry with Mixer.
#[derive(Debug, Parser)]
#[command(name = "mesh-proxy", version)]
struct Args {
    /// Proxy type: `sidecar` (beside one workload) or `router` (ingress gateway).
    #[arg(
        long = "type",
        env = "MESH_PROXY_TYPE",
        value_enum,
        default_value = "sidecar"
    )]
    proxy_type: ProxyType,

    /// The workload's IP, used in the node id.
    #[arg(long, env = "MESH_PROXY_IP", default_value = "127.0.0.1")]
    ip: String,

    /// The workload's pod name.
    #[arg(long, env = "MESH_PROXY_POD")]
    pod: String,

    /// The workload name in metrics (`source_workload`/`destination_workload`) and in the
    /// node's `WORKLOAD_NAME`; the pod name when unset.
    #[arg(long, env = "MESH_PROXY_WORKLOAD_NAME")]
    workload_name: Option<String>,

    /// The workload's namespace.
    #[arg(long, env = "MESH_PROXY_NAMESPACE", default_value = "default")]
    namespace: String,

    /// The workload's service account (its identity).
    #[arg(long, env = "MESH_PROXY_SERVICE_ACCOUNT", default_value = "default")]
    service_account: String,

    /// The workload's labels, `key=value` separated by commas (e.g. `app=reviews,version=v2`).
    #[arg(long, env = "MESH_PROXY_LABELS", default_value = "", value_parser = parse_labels_flag)]
    labels: std::collections::BTreeMap<String, String>,

    /// Pilot's xDS (ADS) address: `http://host:port` (plaintext, 15010) or
    /// `https://host:port` (mTLS with the workload certificate, 15012).
    #[arg(
        long,
        env = "MESH_PROXY_XDS_ADDR",
        default_value = "http://127.0.0.1:15010"
    )]
    xds_addr: String,

    /// ADS protocol: `delta` (incremental; falls back to `sotw` when Pilot does not serve
    /// it) or `sotw` (state of the world).
    #[arg(
        long,
        env = "MESH_PROXY_XDS_PROTOCOL",
        value_enum,
        default_value = "delta"
    )]
    xds_protocol: mesh_proxy::xds::XdsProtocol,

    /// Connect to Pilot over mTLS (Istio's port 15012) with the workload certificate from
    /// Citadel; implied by an `https://` --xds-addr. Pilot's certificate must chain to the
    /// mesh roots.
    #[arg(long, env = "MESH_PROXY_XDS_TLS")]
    xds_tls: bool,

    /// SPIFFE id Pilot's xDS certificate must carry, e.g.
    /// `spiffe://cluster.local/ns/istio-system/sa/istio-pilot-service-account` (repeatable;
    /// in the environment, comma separated). Unset: any identity of the trust domain.
    #[arg(long = "xds-san", env = "MESH_PROXY_XDS_SAN", value_delimiter = ',')]
    xds_sans: Vec<String>,

    /// Citadel's gRPC address (workload certificates).
    #[arg(
        long,
        env = "MESH_PROXY_CITADEL_ADDR",
        default_value = "http://127.0.0.1:8060"
    )]
    citadel_addr: String,

    /// Citadel's TLS listener (its `--tls-addr`, `host:port`): certificate renewals
    /// authenticate there with the current certificate instead of the token (which may have
    /// expired). Unset: renew with the token at `--citadel-addr`.
    #[arg(long, env = "MESH_PROXY_CITADEL_TLS_ADDR")]
    citadel_tls_addr: Option<String>,

    /// Lifetime asked of Citadel for the workload certificate (`24h`, `90m`, `30s`); it is
    /// renewed at half life. Citadel caps it at its `--max-ttl`.
    #[arg(long, env = "MESH_PROXY_CERT_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    cert_ttl: std::time::Duration,

    /// File holding the token that proves the service account to Citadel (read at start).
    #[arg(long, env = "MESH_PROXY_TOKEN_FILE")]
    token_file: PathBuf,

    /// Mixer's gRPC address for Check/Report; no Mixer calls when unset.
    #[arg(long, env = "MESH_PROXY_MIXER_ADDR")]
    mixer_addr: Option<String>,

    /// How long a Mixer Check may take, in ms, before the network fail policy Pilot sent
    /// (FAIL_OPEN forwards, FAIL_CLOSE answers 503) decides; Istio's mixer client waits 5 s.
    #[arg(
        long,
        env = "MESH_PROXY_MIXER_CHECK_TIMEOUT_MS",
        default_value = "5000"
    )]
    mixer_check_timeout_ms: u64,

    /// Outbound listener (Pilot's `virtualOutbound`): plain HTTP from the application.
    #[arg(
        long,
        env = "MESH_PROXY_OUTBOUND_ADDR",
        default_value = "127.0.0.1:15001"
    )]
    outbound_addr: SocketAddr,

    /// Inbound listener: mTLS from other proxies, forwarded to --app-addr.
    #[arg(
        long,
        env = "MESH_PROXY_INBOUND_ADDR",
        default_value = "127.0.0.1:15006"
    )]
    inbound_addr: SocketAddr,

    /// The application's own address (where inbound requests go).
    #[arg(long, env = "MESH_PROXY_APP_ADDR", default_value = "127.0.0.1:9080")]
    app_addr: SocketAddr,

    /// Router only: bind Pilot's listener `0.0.0.0_PORT` on ADDR, as `PORT=ADDR` (repeatable;
    /// in the environment, comma separated).
    #[arg(long = "gateway-port", env = "MESH_PROXY_GATEWAY_PORT", value_delimiter = ',', value_parser = mesh_proxy::parse_gateway_port)]
    gateway_ports: Vec<(u16, SocketAddr)>,

    /// Router only: where a Gateway server's `credentialName` (an SDS secret name in Pilot's
    /// listener) is read from: `DIR/<name>/tls.crt`, `tls.key` and, for MUTUAL, `ca.crt`.
    #[arg(
        long,
        env = "MESH_PROXY_GATEWAY_CREDENTIAL_DIR",
        default_value = mesh_proxy::gateway::DEFAULT_CREDENTIAL_DIR
    )]
    gateway_credential_dir: std::path::PathBuf,

    /// Bind Pilot's TCP listener `0.0.0.0_PORT` (a `tcp_proxy` for a Service port of a TCP
    /// protocol) on ADDR, as `PORT=ADDR` (repeatable; in the environment, comma separated).
    #[arg(long = "tcp-listen", env = "MESH_PROXY_TCP_LISTEN", value_delimiter = ',', value_parser = mesh_proxy::parse_gateway_port)]
    tcp_listeners: Vec<(u16, SocketAddr)>,

    /// Admin server: /healthz, /readyz, /ready, /metrics, /stats/prometheus, /config_dump.
    #[arg(long, env = "MESH_PROXY_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    admin_addr: SocketAddr,

    /// Optional extra monitoring server (/healthz, /readyz, /metrics); the admin server
    /// already serves these.
    #[arg(long, env = "MESH_PROXY_MONITORING_ADDR")]
    monitoring_addr: Option<SocketAddr>,

    /// The mesh trust domain (SPIFFE ids `spiffe://<trust-domain>/ns/N/sa/S`).
    #[arg(long, env = "MESH_PROXY_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,

    /// Local override of the access log: every request, one line in Istio's default JSON
    /// format, to a file path (appended to) or `-` for standard output, whatever the mesh
    /// config says. Unset: each listener logs as Pilot's LDS says (the mesh config's
    /// accessLogFile/accessLogEncoding/accessLogFormat), or not at all.
    #[arg(long, env = "MESH_PROXY_ACCESS_LOG")]
    access_log: Option<String>,

    /// OpenTelemetry collector for spans, OTLP over gRPC (`127.0.0.1:4317` or
    /// `http://127.0.0.1:4317`). Tracing is off when unset.
    #[arg(long, env = "MESH_PROXY_TRACE_COLLECTOR")]
    trace_collector: Option<String>,

    /// Percentage (0-100) of the traces that start at this proxy to record; proxies further
    /// down a trace follow the caller's sampled flag. Istio's default is 1.
    #[arg(long, env = "MESH_PROXY_TRACE_SAMPLING", default_value = "1.0", value_parser = mesh_proxy::trace::Sampling::parse)]
    trace_sampling: mesh_proxy::trace::Sampling,

    /// Transparent capture of outbound connections (the iptables REDIRECT target, Istio's
    /// `0.0.0.0:15001`): each connection is served by its original destination (SO_ORIGINAL_DST):
    /// a TCP port's tcp_proxy, an HTTP port's routes by Host, else sniffed and the outbound
    /// traffic policy. Off when unset.
    #[arg(long, env = "MESH_PROXY_CAPTURE_OUTBOUND_ADDR")]
    capture_outbound_addr: Option<SocketAddr>,

    /// Transparent capture of inbound connections (Istio's `0.0.0.0:15006`): like the inbound
    /// listener, forwarding to the application on the original destination's port. Off when
    /// unset.
    #[arg(long, env = "MESH_PROXY_CAPTURE_INBOUND_ADDR")]
    capture_inbound_addr: Option<SocketAddr>,

    /// Captured connections to destinations outside the registry, unless Pilot says
    /// (`virtualOutbound`'s PassthroughCluster / BlackHoleCluster): `ALLOW_ANY` passes them
    /// through, `REGISTRY_ONLY` refuses them.
    #[arg(
        long,
        env = "MESH_PROXY_OUTBOUND_TRAFFIC_POLICY",
        value_enum,
        default_value = "ALLOW_ANY"
    )]
    outbound_traffic_policy: mesh_proxy::capture::OutboundPolicy,

    /// Protocol sniffing on captured connections to undeclared ports: how long to wait for
    /// the client's first bytes before taking it for a server-first protocol (TCP), in ms.
    #[arg(long, env = "MESH_PROXY_SNIFF_TIMEOUT_MS", default_value = "100")]
    sniff_timeout_ms: u64,

    /// HTTP listeners: a client that does not send a complete request head within this many
    /// milliseconds (after connecting or starting the head) is disconnected (slowloris).
    #[arg(
        long,
        env = "MESH_PROXY_HEADER_READ_TIMEOUT_MS",
        default_value = "10000"
    )]
    header_read_timeout_ms: u64,

    /// HTTP listeners: request heads larger than this many KiB are answered 431 (Envoy's
    /// `max_request_headers_kb`; at least 8).
    #[arg(long, env = "MESH_PROXY_MAX_REQUEST_HEADERS_KB", default_value = "60")]
    max_request_headers_kb: usize,

    #[command(flatten)]
    log: mesh_runtime::LogArgs,
}

fn parse_labels_flag(s: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    parse_labels(s)
}

fn main() {
    let args: Args = mesh_runtime::parse_args("mesh-proxy");
    mesh_runtime::init_logging(&args.log);
    // One worker thread (TOKIO_WORKER_THREADS=1 or one CPU): the current-thread scheduler.
    let runtime = match mesh_proxy::runtime() {
        Ok(r) => r,
        Err(e) => mesh_runtime::exit_on_error(
            "mesh-proxy",
            Err(anyhow::anyhow!("cannot start the runtime: {e}")),
        ),
    };
    runtime.block_on(serve(args));
}

async fn serve(args: Args) {
    let cfg = mesh_proxy::ProxyConfig {
        node: NodeInfo {
            proxy_type: args.proxy_type,
            ip: args.ip,
            pod: args.pod,
            workload_name: args.workload_name,
            namespace: args.namespace,
            service_account: args.service_account,
            labels: args.labels,
        },
        xds_addr: args.xds_addr,
        xds_protocol: args.xds_protocol,
        xds_tls: args.xds_tls,
        xds_sans: args.xds_sans,
        citadel_addr: args.citadel_addr,
        citadel_tls_addr: args.citadel_tls_addr,
        cert_ttl: args.cert_ttl,
        token_file: args.token_file,
        mixer_addr: args.mixer_addr,
        mixer_check_timeout: std::time::Duration::from_millis(args.mixer_check_timeout_ms),
        outbound_addr: args.outbound_addr,
        inbound_addr: args.inbound_addr,
        app_addr: args.app_addr,
        gateway_ports: args.gateway_ports,
        gateway_credential_dir: args.gateway_credential_dir,
        tcp_listeners: args.tcp_listeners,
        admin_addr: args.admin_addr,
        monitoring_addr: args.monitoring_addr,
        trust_domain: args.trust_domain,
        access_log: args
            .access_log
            .as_deref()
            .map(mesh_proxy::http::AccessLogTarget::parse),
        tracing: args
            .trace_collector
            .map(|collector| mesh_proxy::trace::TraceConfig {
                collector,
                sampling: args.trace_sampling,
            }),
        capture_outbound_addr: args.capture_outbound_addr,
        capture_inbound_addr: args.capture_inbound_addr,
        outbound_policy: args.outbound_traffic_policy,
        sniff_wait: std::time::Duration::from_millis(args.sniff_timeout_ms),
        http_limits: mesh_proxy::http::HttpLimits {
            header_read_timeout: std::time::Duration::from_millis(args.header_read_timeout_ms),
            max_header_bytes: args.max_request_headers_kb.saturating_mul(1024),
        },
    };
    let result = mesh_proxy::run(cfg, mesh_runtime::shutdown_signal()).await;
    // One line: the error text already names its cause.
    mesh_runtime::exit_on_error("mesh-proxy", result.map_err(|e| anyhow::anyhow!("{e}")));
}
