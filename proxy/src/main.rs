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

    /// Pilot's xDS (ADS) address.
    #[arg(
        long,
        env = "MESH_PROXY_XDS_ADDR",
        default_value = "http://127.0.0.1:15010"
    )]
    xds_addr: String,

    /// Citadel's gRPC address (workload certificates).
    #[arg(
        long,
        env = "MESH_PROXY_CITADEL_ADDR",
        default_value = "http://127.0.0.1:8060"
    )]
    citadel_addr: String,

    /// File holding the token that proves the service account to Citadel (read at start).
    #[arg(long, env = "MESH_PROXY_TOKEN_FILE")]
    token_file: PathBuf,

    /// Mixer's gRPC address for Check/Report; no Mixer calls when unset.
    #[arg(long, env = "MESH_PROXY_MIXER_ADDR")]
    mixer_addr: Option<String>,

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

    /// Envoy-style JSON access log, one object per request and line: a file path (appended
    /// to), or `-` for standard output. Off when unset.
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

    #[command(flatten)]
    log: mesh_runtime::LogArgs,
}

fn parse_labels_flag(s: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    parse_labels(s)
}

#[tokio::main]
async fn main() {
    let args: Args = mesh_runtime::parse_args("mesh-proxy");
    mesh_runtime::init_logging(&args.log);
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
        citadel_addr: args.citadel_addr,
        token_file: args.token_file,
        mixer_addr: args.mixer_addr,
        outbound_addr: args.outbound_addr,
        inbound_addr: args.inbound_addr,
        app_addr: args.app_addr,
        gateway_ports: args.gateway_ports,
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
    };
    let result = mesh_proxy::run(cfg, mesh_runtime::shutdown_signal()).await;
    // One line: the error text already names its cause.
    mesh_runtime::exit_on_error("mesh-proxy", result.map_err(|e| anyhow::anyhow!("{e}")));
}
