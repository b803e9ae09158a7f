//! The `pilot` command line (every flag also read from the environment).

use std::net::SocketAddr;
use std::path::PathBuf;

use mesh_runtime::LogArgs;

/// Pilot: serves Envoy xDS v3 (ADS) built from Galley's config.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "pilot", version, about)]
pub struct Args {
    /// Galley's MCP address (http URL).
    #[arg(
        long,
        env = "PILOT_GALLEY_ADDR",
        default_value = "http://127.0.0.1:9901"
    )]
    pub galley_addr: String,

    /// Address to serve xDS (ADS, plaintext gRPC) on.
    #[arg(long, env = "PILOT_XDS_ADDR", default_value = "127.0.0.1:15010")]
    pub xds_addr: SocketAddr,

    /// Address to serve the debug endpoints (/debug/syncz, /debug/config_dump, /debug/registryz) on.
    #[arg(long, env = "PILOT_DEBUG_ADDR", default_value = "127.0.0.1:8080")]
    pub debug_addr: SocketAddr,

    /// SPIFFE trust domain used in the SANs of upstream mTLS clusters.
    #[arg(long, env = "PILOT_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,

    /// DNS suffix of service names (`name.ns.svc.<suffix>`).
    #[arg(long, env = "PILOT_DOMAIN_SUFFIX", default_value = "cluster.local")]
    pub domain_suffix: String,

    /// Address to serve /healthz, /readyz and /metrics on.
    #[arg(long, env = "PILOT_MONITORING_ADDR", default_value = "127.0.0.1:15014")]
    pub monitoring_addr: SocketAddr,

    /// Address to serve the sidecar-injection webhook (HTTPS `POST /inject`) on; off when
    /// unset. Needs --inject-cert and --inject-key.
    #[arg(long, env = "PILOT_INJECT_ADDR", requires_all = ["inject_cert", "inject_key"])]
    pub inject_addr: Option<SocketAddr>,

    /// PEM certificate chain the injection webhook serves.
    #[arg(long, env = "PILOT_INJECT_CERT")]
    pub inject_cert: Option<PathBuf>,

    /// PEM private key of --inject-cert.
    #[arg(long, env = "PILOT_INJECT_KEY")]
    pub inject_key: Option<PathBuf>,

    /// Image of the injected `istio-proxy` container (mesh-proxy).
    #[arg(
        long,
        env = "PILOT_INJECT_PROXY_IMAGE",
        default_value = "mesh-proxy:latest"
    )]
    pub inject_proxy_image: String,

    /// Image of the injected `istio-init` container; it runs `sh -c` with iptables commands,
    /// so it needs `sh` and `iptables`.
    #[arg(
        long,
        env = "PILOT_INJECT_INIT_IMAGE",
        default_value = "docker.io/istio/proxyv2:1.4.10"
    )]
    pub inject_init_image: String,

    /// Pilot's xDS address given to injected proxies (`--xds-addr`).
    #[arg(
        long,
        env = "PILOT_INJECT_XDS_ADDR",
        default_value = "http://istio-pilot.istio-system.svc:15010"
    )]
    pub inject_xds_addr: String,

    /// Citadel's address given to injected proxies (`--citadel-addr`).
    #[arg(
        long,
        env = "PILOT_INJECT_CITADEL_ADDR",
        default_value = "http://istio-citadel.istio-system.svc:8060"
    )]
    pub inject_citadel_addr: String,

    /// Mixer's address given to injected proxies (`--mixer-addr`); none when unset.
    #[arg(long, env = "PILOT_INJECT_MIXER_ADDR")]
    pub inject_mixer_addr: Option<String>,

    /// Address to serve xDS over mutual TLS on (Istio's 15012); off when unset. Pilot's
    /// certificate comes from --xds-tls-cert/--xds-tls-key/--xds-tls-roots, or from Citadel
    /// (--citadel-addr and --citadel-token-file).
    #[arg(long, env = "PILOT_XDS_TLS_ADDR")]
    pub xds_tls_addr: Option<SocketAddr>,

    /// PEM certificate chain pilot presents on --xds-tls-addr.
    #[arg(long, env = "PILOT_XDS_TLS_CERT", requires_all = ["xds_tls_key", "xds_tls_roots"])]
    pub xds_tls_cert: Option<PathBuf>,

    /// PEM private key of --xds-tls-cert.
    #[arg(long, env = "PILOT_XDS_TLS_KEY")]
    pub xds_tls_key: Option<PathBuf>,

    /// PEM roots that xDS client certificates must chain to.
    #[arg(long, env = "PILOT_XDS_TLS_ROOTS")]
    pub xds_tls_roots: Option<PathBuf>,

    /// Citadel's gRPC address, to get pilot's own xDS certificate (when no --xds-tls-cert).
    #[arg(long, env = "PILOT_CITADEL_ADDR", requires = "citadel_token_file")]
    pub citadel_addr: Option<String>,

    /// File holding the token proving pilot's service account to Citadel.
    #[arg(long, env = "PILOT_CITADEL_TOKEN_FILE")]
    pub citadel_token_file: Option<PathBuf>,

    /// Directory of gateway TLS credentials served as SDS secrets to gateway proxies:
    /// `<dir>/<namespace>/<credentialName>/{tls.crt,tls.key,ca.crt}` (a Gateway server's
    /// `credentialName` is looked up in the gateway workload's namespace). Polled for changes;
    /// no secrets are served when unset.
    #[arg(long, env = "PILOT_CREDENTIAL_DIR")]
    pub credential_dir: Option<PathBuf>,

    /// Read gateway credentials from Kubernetes Secrets, as istiod does: a Gateway server's
    /// `credentialName` names a Secret in the gateway workload's namespace, of type
    /// kubernetes.io/tls (`tls.crt`, `tls.key`, optional `ca.crt`) or generic (`cert`, `key`,
    /// optional `cacert`); a MUTUAL server's CA may also come from the Secret
    /// `<credentialName>-cacert`. Secrets are listed and watched through the API server
    /// (in-cluster config, else KUBECONFIG; needs get/list/watch on secrets); changes are pushed
    /// to the gateways. Pilot is not ready until the first list is read. Not with
    /// --credential-dir.
    #[arg(long, env = "PILOT_CREDENTIAL_KUBE", conflicts_with = "credential_dir")]
    pub credential_kube: bool,

    /// Namespaces whose Secrets --credential-kube watches (comma-separated: the gateways'
    /// namespaces); every namespace when empty.
    #[arg(
        long,
        env = "PILOT_CREDENTIAL_KUBE_NAMESPACES",
        value_delimiter = ',',
        requires = "credential_kube"
    )]
    pub credential_kube_namespaces: Vec<String>,

    /// Kubeconfig file for --credential-kube; when unset: in-cluster config, else KUBECONFIG
    /// (or ~/.kube/config).
    #[arg(long, env = "PILOT_KUBECONFIG", requires = "credential_kube")]
    pub kubeconfig: Option<PathBuf>,

    /// How often --credential-dir is read for changes, in milliseconds.
    #[arg(long, env = "PILOT_CREDENTIAL_POLL_MS", default_value_t = 500)]
    pub credential_poll_ms: u64,

    /// Also serve gateway secrets on plaintext xDS streams (--xds-addr), where the node's
    /// namespace is not verified; by default only xDS over mTLS (--xds-tls-addr) gets them.
    #[arg(long, env = "PILOT_CREDENTIAL_PLAINTEXT")]
    pub credential_plaintext: bool,

    #[command(flatten)]
    pub log: LogArgs,
}
