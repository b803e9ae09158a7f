//! Starting a service: binding listeners, logging, and failing with one clear line.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::args::{LogArgs, LogFormat};

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen for {what} on {addr}: {error}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        /// Kept in the message, not as `source()` (thiserror treats a field named `source` as
        /// one), so the one-line exit reason names it once.
        error: std::io::Error,
    },
}

/// Binds a TCP listener, naming what it is for in the error.
pub async fn bind_tcp(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| StartError::Bind { what, addr, error })
}

/// Installs the tracing subscriber from the common flags.
pub fn init_logging(args: &LogArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match args.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Ends the process: 0 on success; on error, one line `<service>: <reason>` on stderr and exit 1.
pub fn exit_on_error(service: &str, result: anyhow::Result<()>) -> ! {
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("{service}: {}", chain.join(": "));
            std::process::exit(1)
        }
    }
}
