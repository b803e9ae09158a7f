//! `bookinfo`: one service of the demo application (productpage, details, reviews or ratings).

use std::net::SocketAddr;

use clap::Parser;
use e2e::demo::{DemoConfig, Service};

/// A Bookinfo-shaped demo service: answers every GET with its name, version and the replies of
/// the services it calls through its sidecar.
#[derive(Debug, Parser)]
#[command(name = "bookinfo")]
struct Args {
    /// Which service to play.
    #[arg(long, env = "BOOKINFO_SERVICE", value_enum)]
    service: Service,

    /// The version this instance reports (reviews v1 calls nobody; v2 and v3 call ratings).
    #[arg(long, env = "BOOKINFO_VERSION", default_value = "v1")]
    version: String,

    /// Address to serve HTTP on (the sidecar's `--app-addr`).
    #[arg(long, env = "BOOKINFO_LISTEN", default_value = "127.0.0.1:9080")]
    listen: SocketAddr,

    /// The sidecar's outbound address, used as HTTP proxy for calls to other services
    /// (e.g. `http://127.0.0.1:15001`); without it, calls go direct.
    #[arg(long, env = "BOOKINFO_PROXY")]
    proxy: Option<String>,

    #[command(flatten)]
    log: mesh_runtime::LogArgs,
}

#[tokio::main]
async fn main() {
    let args: Args = mesh_runtime::parse_args("bookinfo");
    mesh_runtime::init_logging(&args.log);
    let config = DemoConfig {
        service: args.service,
        version: args.version,
        listen: args.listen,
        proxy: args.proxy,
    };
    let res = e2e::demo::run(config, mesh_runtime::shutdown_signal()).await;
    mesh_runtime::exit_on_error("bookinfo", res.map_err(anyhow::Error::from));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        Args::command().debug_assert();
        let a = Args::try_parse_from([
            "bookinfo",
            "--service",
            "reviews",
            "--version",
            "v2",
            "--listen",
            "127.0.0.1:1",
            "--proxy",
            "http://127.0.0.1:2",
        ])
        .unwrap();
        assert_eq!(a.service, Service::Reviews);
        assert_eq!(a.version, "v2");
        assert!(Args::try_parse_from(["bookinfo", "--service", "shop"]).is_err());
    }
}
