//! The mesh dashboard: a live web page of the local mesh, served by `meshctl up` (its address is
//! in the ready line and in `STATE/mesh.json`) or by `meshctl dashboard` for a mesh already
//! running.
//!
//! ```text
//!  every proxy's /stats/prometheus ──(1 s)──► collector ──► History (10 min of snapshots)
//!                                                              │
//!  browser ◄── page.html ◄── routes: /api/graph, /api/services/{name} ◄┘
//!                                    (+ Galley's apply API for config, Pilot's /debug/syncz)
//! ```
//!
//! - [`exposition`]: reading Prometheus text.
//! - [`graph`]: edges, rates, error rates and latency quantiles from two snapshots.
//! - [`collector`]: the scrape loop and its history.
//! - [`routes`]: the HTTP routes and `page.html`.

pub mod collector;
pub mod exposition;
pub mod graph;
pub mod routes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::net::TcpListener;

use self::collector::{History, Targets};
use self::routes::DashState;
use crate::galley_api::GalleyApi;
use crate::state::{MeshState, StateError};

/// Flags of `meshctl dashboard`.
#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// Address to serve the dashboard on.
    #[arg(long, env = "MESH_DASHBOARD_ADDR", default_value = "127.0.0.1:15080")]
    pub addr: SocketAddr,
}

/// The dashboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve the dashboard: {0}")]
    Serve(#[source] std::io::Error),
}

/// Every proxy of the mesh, by pod name.
pub fn targets(state: &MeshState) -> Targets {
    Targets {
        proxies: state
            .proxies
            .iter()
            .map(|(pod, p)| (pod.clone(), p.admin.clone()))
            .collect(),
    }
}

/// Binds `addr` (one line error when taken).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, DashboardError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| DashboardError::Bind { addr, source })
}

/// Serves the dashboard of `state` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: &MeshState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), DashboardError> {
    let history = Arc::new(RwLock::new(History::default()));
    let scraper = tokio::spawn(collector::run(targets(state), history.clone()));
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| DashboardError::Serve(std::io::Error::other(e)))?;
    let app = routes::router(DashState {
        history,
        galley: Arc::new(GalleyApi::new(&state.galley.api)),
        pilot_debug: state.pilot.debug.clone(),
        http,
    });
    let res = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(DashboardError::Serve);
    scraper.abort();
    res
}

/// `meshctl dashboard`: serves the dashboard of the mesh recorded in `STATE/mesh.json` until
/// SIGTERM/SIGINT.
pub async fn run(args: &DashboardArgs, state_dir: PathBuf) -> Result<(), DashboardError> {
    let state = MeshState::read(&state_dir)?;
    let listener = bind(args.addr).await?;
    let addr = listener.local_addr().map_err(DashboardError::Serve)?;
    println!("dashboard: http://{addr}/");
    serve(listener, &state, mesh_runtime::shutdown_signal()).await
}
