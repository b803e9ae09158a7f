//! The Mixer process: bind the gRPC and monitoring listeners, subscribe to galley, serve until
//! shutdown.

use std::net::SocketAddr;

use mesh_runtime::{Metrics, Readiness, StartError, bind_tcp, serve_monitoring};
use tokio::sync::watch;

use crate::config::sink::READY_CONDITION;
use crate::config::{PolicyHandle, new_sink};
use crate::metrics::MixerMetrics;
use crate::server::{MixerService, serve_grpc};

/// What `run` needs (the binary's flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// Where Check/Report is served.
    pub grpc_addr: SocketAddr,
    /// Galley's MCP address, e.g. `http://127.0.0.1:9901`.
    pub galley_addr: String,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub monitoring_addr: SocketAddr,
}

/// Why Mixer stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("invalid galley address {addr:?}: {message}")]
    GalleyAddr { addr: String, message: String },
    #[error("grpc server failed: {0}")]
    Grpc(std::io::Error),
    #[error("monitoring server failed: {0}")]
    Monitoring(std::io::Error),
}

/// Runs Mixer until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    if let Err(e) = tonic::transport::Endpoint::from_shared(config.galley_addr.clone()) {
        return Err(RunError::GalleyAddr {
            addr: config.galley_addr.clone(),
            message: e.to_string(),
        });
    }
    let grpc = bind_tcp("grpc", config.grpc_addr).await?;
    let monitoring = bind_tcp("monitoring", config.monitoring_addr).await?;
    tracing::info!(
        grpc = %config.grpc_addr,
        monitoring = %config.monitoring_addr,
        galley = %config.galley_addr,
        "mixer listening"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let readiness = Readiness::new(&[READY_CONDITION]);
    let registry = Metrics::default();
    let metrics = MixerMetrics::register(&registry);
    let policy = PolicyHandle::default();

    let registry_for_adapters = registry.clone();
    let monitoring_task = tokio::spawn(serve_monitoring(
        monitoring,
        readiness.clone(),
        registry,
        stopped(),
    ));
    let sink = new_sink(
        config.galley_addr.clone(),
        policy.clone(),
        metrics.clone(),
        readiness,
    );
    let sink_task = tokio::spawn(sink.run(stopped()));
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let service = MixerService::new(policy, metrics).with_prometheus(
        crate::adapter::prometheus::PrometheusSink::new(registry_for_adapters),
    );
    let grpc_result = serve_grpc(grpc, service, stopped()).await;
    let _ = sink_task.await;
    let monitoring_result = monitoring_task.await;
    grpc_result.map_err(RunError::Grpc)?;
    match monitoring_result {
        Ok(r) => r.map_err(RunError::Monitoring)?,
        Err(e) => tracing::warn!(error = %e, "monitoring task ended abnormally"),
    }
    tracing::info!("mixer stopped");
    Ok(())
}
