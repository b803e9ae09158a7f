//! Wiring for the `pilot` binary: bind every listener, then serve until shutdown.

use std::sync::Arc;

use futures::FutureExt;
use mesh_runtime::{Metrics, Readiness, StartError, bind_tcp, serve_monitoring};
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use crate::args::Args;
use crate::debug::{DebugState, router};
use crate::galley_client::{GalleyClient, READY_CONDITION, Snapshot};
use crate::metrics::PilotMetrics;
use crate::model::RegistryCache;
use crate::translate::Options;
use crate::xds::{AdsServer, SyncStatus};

/// Why Pilot stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("xds server failed: {0}")]
    Xds(#[source] tonic::transport::Error),
    #[error("{what} server failed: {source}")]
    Http {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Runs Pilot until `shutdown` resolves.
pub async fn run(
    args: Args,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let xds_listener = bind_tcp("xds", args.xds_addr).await?;
    let debug_listener = bind_tcp("debug", args.debug_addr).await?;
    let monitoring_listener = bind_tcp("monitoring", args.monitoring_addr).await?;

    let readiness = Readiness::new(&[READY_CONDITION]);
    let metrics = Metrics::default();
    let pilot_metrics = PilotMetrics::register(&metrics);
    let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot::default()));
    let registry = RegistryCache::new(snap_rx, &args.domain_suffix);
    let status = SyncStatus::default();
    let options = Options {
        trust_domain: args.trust_domain.clone(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = {
        let rx = stop_rx.clone();
        async move {
            let mut rx = rx;
            let _ = rx.wait_for(|s| *s).await;
        }
        .shared()
    };

    let galley = GalleyClient::new(
        args.galley_addr.clone(),
        snap_tx,
        readiness.clone(),
        pilot_metrics.clone(),
    );
    let galley_task = tokio::spawn(galley.run(stopped.clone()));

    let ads = AdsServer::new(
        registry.clone(),
        options.clone(),
        pilot_metrics,
        status.clone(),
        stop_rx,
    );
    let xds = tonic::transport::Server::builder()
        .add_service(ads.into_service())
        .serve_with_incoming_shutdown(TcpListenerStream::new(xds_listener), stopped.clone());
    let debug = axum::serve(
        debug_listener,
        router(DebugState {
            registry,
            status,
            options,
        }),
    )
    .with_graceful_shutdown(stopped.clone());
    let monitoring = serve_monitoring(monitoring_listener, readiness, metrics, stopped.clone());
    tracing::info!(
        xds = %args.xds_addr, debug = %args.debug_addr, monitoring = %args.monitoring_addr,
        galley = %args.galley_addr, "pilot serving"
    );

    let signal = tokio::spawn(async move {
        shutdown.await;
        stop_tx.send_replace(true);
    });
    let (x, d, m) = tokio::join!(
        async { xds.await.map_err(RunError::Xds) },
        async {
            debug.await.map_err(|source| RunError::Http {
                what: "debug",
                source,
            })
        },
        async {
            monitoring.await.map_err(|source| RunError::Http {
                what: "monitoring",
                source,
            })
        },
    );
    signal.abort();
    let _ = galley_task.await;
    x?;
    d?;
    m?;
    tracing::info!("pilot stopped");
    Ok(())
}
