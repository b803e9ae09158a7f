//! The `mixer` binary: flags, logging, signals; everything else is in the library.

use std::net::SocketAddr;

use clap::Parser;
use mesh_runtime::{LogArgs, exit_on_error, init_logging};

/// Mixer: policy checks and telemetry reports over istio.mixer.v1, configured by galley.
#[derive(Debug, Parser)]
#[command(name = "mixer", version)]
struct Args {
    /// Address to serve istio.mixer.v1.Mixer (Check/Report) on.
    #[arg(long, env = "MIXER_GRPC_ADDR", default_value = "127.0.0.1:9091")]
    grpc_addr: SocketAddr,
    /// Galley's MCP address (the config source).
    #[arg(
        long,
        env = "MIXER_GALLEY_ADDR",
        default_value = "http://127.0.0.1:9901"
    )]
    galley_addr: String,
    /// Address of the monitoring server (/healthz, /readyz, /metrics).
    #[arg(long, env = "MIXER_MONITORING_ADDR", default_value = "127.0.0.1:15014")]
    monitoring_addr: SocketAddr,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() {
    let args: Args = mesh_runtime::parse_args("mixer");
    init_logging(&args.log);
    let config = mixer::Config {
        grpc_addr: args.grpc_addr,
        galley_addr: args.galley_addr,
        monitoring_addr: args.monitoring_addr,
    };
    let result = mesh_runtime::run_until_signal(mesh_runtime::DEFAULT_GRACE, |stop| {
        mixer::run(config, stop)
    })
    .await
    .unwrap_or(Ok(()));
    // The library's errors already name their causes: one line, without repeating them.
    exit_on_error("mixer", result.map_err(|e| anyhow::anyhow!("{e}")));
}
