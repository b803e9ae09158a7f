//! The `pilot` command line (every flag also read from the environment).

use std::net::SocketAddr;

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

    #[command(flatten)]
    pub log: LogArgs,
}
