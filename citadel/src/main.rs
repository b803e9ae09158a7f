//! The `citadel` binary: flags, logging, run until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Citadel: the mesh CA. Signs workload CSRs with the SPIFFE identity the caller's credentials
/// prove (current certificate, Kubernetes service-account token, or local token).
#[derive(Debug, Parser)]
#[command(name = "citadel", version)]
struct Args {
    /// Address of the IstioCertificateService gRPC listener (plaintext in local mode).
    #[arg(long, env = "CITADEL_GRPC_ADDR", default_value = "127.0.0.1:8060")]
    grpc_addr: SocketAddr,

    /// State directory holding the CA key and certificate and the token issuer key (created
    /// if missing). Put cert-chain.pem and root-cert.pem beside ca-cert.pem/ca-key.pem to sign
    /// with a plugged-in intermediate.
    #[arg(long, env = "CITADEL_STATE_DIR")]
    state_dir: PathBuf,

    /// Trust domain of issued SPIFFE identities (spiffe://<trust-domain>/ns/<ns>/sa/<sa>).
    #[arg(long, env = "CITADEL_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,

    /// Lifetime of a certificate when the request asks for none (e.g. 24h, 90m).
    #[arg(long, visible_alias = "default-cert-ttl", env = "CITADEL_DEFAULT_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    default_ttl: Duration,

    /// Longest lifetime a request may ask for (default 90 days); longer requests are refused
    /// with INVALID_ARGUMENT naming this limit.
    #[arg(long, visible_alias = "max-cert-ttl", env = "CITADEL_MAX_TTL", default_value = "2160h", value_parser = humantime::parse_duration)]
    max_ttl: Duration,

    /// Address of the gRPC-over-TLS listener (Citadel's certificate is signed by its own CA; a
    /// client certificate is optional and, when valid, renews that same identity). Off when
    /// unset.
    #[arg(long, env = "CITADEL_TLS_ADDR")]
    tls_addr: Option<SocketAddr>,

    /// PEM file of further roots to trust beside the signing root (root rotation; see
    /// docs/security.md). STATE/extra-roots.pem is read too when present.
    #[arg(long, env = "CITADEL_EXTRA_ROOTS")]
    extra_roots: Option<PathBuf>,

    /// Check bearer tokens as Kubernetes service-account JWTs with the TokenReview API
    /// (audience istio-ca), using the in-cluster or kubeconfig credentials. Off in local mode.
    #[arg(long, env = "CITADEL_KUBE_TOKENREVIEW")]
    kube_tokenreview: bool,

    /// Keep the CA key and certificate in the Kubernetes Secret istio-ca-secret (data keys
    /// ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem, as Istio) instead of the state
    /// directory: loaded if it exists, else a self-signed root is generated and the Secret
    /// created (replicas racing to create it all end with the first one's root). Uses the
    /// in-cluster or kubeconfig credentials; needs get and create on Secrets.
    #[arg(long, env = "CITADEL_CA_SECRET")]
    ca_secret: bool,

    /// Namespace of the istio-ca-secret Secret (with --ca-secret); normally Citadel's own.
    #[arg(
        long,
        env = "CITADEL_CA_SECRET_NAMESPACE",
        default_value = "istio-system"
    )]
    ca_secret_namespace: String,

    /// Address of the monitoring listener (/healthz, /readyz, /metrics, /roots.pem).
    #[arg(
        long,
        env = "CITADEL_MONITORING_ADDR",
        default_value = "127.0.0.1:15014"
    )]
    monitoring_addr: SocketAddr,

    #[command(flatten)]
    log: mesh_runtime::LogArgs,
}

#[tokio::main]
async fn main() {
    let args: Args = mesh_runtime::parse_args("citadel");
    mesh_runtime::init_logging(&args.log);
    let config = citadel::Config {
        grpc_addr: args.grpc_addr,
        monitoring_addr: args.monitoring_addr,
        state_dir: args.state_dir,
        trust_domain: args.trust_domain,
        ttl: citadel::TtlPolicy {
            default: args.default_ttl,
            max: args.max_ttl,
        },
        tls_addr: args.tls_addr,
        extra_roots: args.extra_roots,
        kube_tokenreview: args.kube_tokenreview,
        ca_secret_namespace: args.ca_secret.then_some(args.ca_secret_namespace),
    };
    let result = mesh_runtime::run_until_signal(mesh_runtime::DEFAULT_GRACE, |stop| {
        citadel::run(config, stop)
    })
    .await
    .unwrap_or(Ok(()));
    mesh_runtime::exit_on_error("citadel", result.map_err(anyhow::Error::from));
}
