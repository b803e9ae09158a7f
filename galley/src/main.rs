//! The `galley` binary: flags, logging, run, exit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Galley: validates mesh configuration, keeps it in a store and serves it over MCP.
#[derive(Debug, Parser)]
#[command(name = "galley", version)]
struct Args {
    /// Directory of YAML/JSON config (*.yaml, *.yml, *.json, recursive), loaded at start and watched.
    #[arg(long, env = "GALLEY_CONFIG_DIR")]
    config_dir: Option<PathBuf>,

    /// Directory of the sled config store.
    #[arg(long, env = "GALLEY_STORE", default_value = "./galley.sled")]
    store: PathBuf,

    /// Address of the MCP (ResourceSource) gRPC server.
    #[arg(long, env = "GALLEY_MCP_ADDR", default_value = "127.0.0.1:9901")]
    mcp_addr: SocketAddr,

    /// Address of the HTTP apply API (/apis/v1/...).
    #[arg(long, env = "GALLEY_API_ADDR", default_value = "127.0.0.1:9902")]
    api_addr: SocketAddr,

    /// Address of the monitoring server (/healthz, /readyz, /metrics).
    #[arg(
        long,
        env = "GALLEY_MONITORING_ADDR",
        default_value = "127.0.0.1:15014"
    )]
    monitoring_addr: SocketAddr,

    /// How often the config dir is polled for changes, in milliseconds.
    #[arg(long, env = "GALLEY_POLL_INTERVAL_MS", default_value_t = 500)]
    poll_interval_ms: u64,

    /// Address of the validating admission webhook (HTTPS: /validate, /admitpilot,
    /// /admitmixer); off when not set. Needs --webhook-cert and --webhook-key.
    #[arg(long, env = "GALLEY_WEBHOOK_ADDR", requires_all = ["webhook_cert", "webhook_key"])]
    webhook_addr: Option<SocketAddr>,

    /// PEM certificate chain the webhook serves.
    #[arg(long, env = "GALLEY_WEBHOOK_CERT")]
    webhook_cert: Option<PathBuf>,

    /// PEM private key of the webhook certificate.
    #[arg(long, env = "GALLEY_WEBHOOK_KEY")]
    webhook_key: Option<PathBuf>,

    /// Watch the Kubernetes API server for the Istio config kinds (the CRDs) and Namespace,
    /// Service, Endpoints, EndpointSlice, Pod, ServiceAccount (in-cluster config, else
    /// KUBECONFIG / ~/.kube/config, or --kubeconfig). Ready once every kind is listed.
    #[arg(long, env = "GALLEY_KUBE")]
    kube: bool,

    /// With --kube: watch only this namespace (and only the Namespace of that name).
    #[arg(long, env = "GALLEY_KUBE_NAMESPACE", requires = "kube")]
    kube_namespace: Option<String>,

    /// With --kube: the kubeconfig file to use instead of in-cluster config / KUBECONFIG.
    #[arg(long, env = "GALLEY_KUBECONFIG", requires = "kube")]
    kubeconfig: Option<PathBuf>,

    /// With --kube: write why an object was rejected, as status.validationMessages (Istio
    /// kinds) and a Warning Event "Rejected" on the object. On by default; `--kube-write-status
    /// false` only logs and counts (galley_kube_rejected_total).
    #[arg(long, env = "GALLEY_KUBE_WRITE_STATUS", default_value_t = true, action = clap::ArgAction::Set)]
    kube_write_status: bool,

    /// With --kube: the reportingInstance of the Events galley creates (e.g. the pod name).
    #[arg(long, env = "GALLEY_KUBE_INSTANCE", default_value = "galley")]
    kube_instance: String,

    /// Istio's mesh config YAML (what the `mesh` key of Istio's `istio` ConfigMap holds:
    /// accessLogFile, accessLogEncoding, ...), watched and served over MCP as
    /// istio/mesh/v1alpha1/MeshConfig. Without it, a ConfigMap named `istio` with a `mesh` key
    /// in --config-dir is read. An invalid one fails the start; on reload it is ignored.
    #[arg(long, env = "GALLEY_MESH_CONFIG")]
    mesh_config: Option<PathBuf>,

    #[command(flatten)]
    log: mesh_runtime::LogArgs,
}

#[tokio::main]
async fn main() {
    let args: Args = mesh_runtime::parse_args("galley");
    mesh_runtime::init_logging(&args.log);
    let cfg = galley::Config {
        config_dir: args.config_dir,
        store_dir: args.store,
        mcp_addr: args.mcp_addr,
        api_addr: args.api_addr,
        monitoring_addr: args.monitoring_addr,
        poll_interval: Duration::from_millis(args.poll_interval_ms.max(10)),
        webhook: match (args.webhook_addr, args.webhook_cert, args.webhook_key) {
            (Some(addr), Some(cert), Some(key)) => Some(galley::WebhookConfig { addr, cert, key }),
            _ => None,
        },
        mesh_config: args.mesh_config,
        kube: args.kube.then_some(galley::KubeOptions {
            namespace: args.kube_namespace,
            write_status: args.kube_write_status,
            kubeconfig: args.kubeconfig,
            instance: args.kube_instance,
        }),
    };
    let result =
        mesh_runtime::run_until_signal(mesh_runtime::DEFAULT_GRACE, |stop| galley::run(cfg, stop))
            .await
            .unwrap_or(Ok(()));
    mesh_runtime::exit_on_error("galley", result.map_err(anyhow::Error::from));
}
