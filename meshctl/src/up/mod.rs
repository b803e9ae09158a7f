//! `meshctl up`: the whole mesh as local processes.
//!
//! ```text
//!  lock STATE ─► pick ports ─► write demo config ─► issue tokens
//!     ─► start galley, pilot, citadel, mixer ─► wait /readyz
//!     ─► start ingress gateway, sidecars, demo apps ─► wait /readyz, /healthz
//!     ─► write STATE/mesh.json, print `mesh ready: ...` ─► run until SIGTERM/SIGINT ─► stop all
//! ```
//!
//! - [`lock`]: one `up` per state directory.
//! - [`ports`]: free loopback ports.
//! - [`plan`]: every process with its flags and addresses.
//! - [`demo_config`]: the demo's Kubernetes and Istio objects.
//! - [`tokens`]: service-account tokens for the proxies.
//! - [`supervisor`]: child processes, their logs, and stopping them.
//! - [`ready`]: waiting for readiness.
//! - [`siblings`]: under `cargo run`, building the other binaries first.

pub mod demo_config;
pub mod lock;
pub mod plan;
pub mod ports;
pub mod ready;
pub mod siblings;
pub mod supervisor;
pub mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::Instant;

use self::lock::{LockError, StateLock};
use self::plan::{Dirs, Layout};
use self::ports::PortPool;
use self::ready::ReadyError;
use self::siblings::{BuildError, SiblingBuild};
use self::supervisor::{SuperviseError, Supervisor};
use self::tokens::TokenError;
use crate::dashboard::{self, DashboardError};
use crate::state::{MESH_JSON, StateError};

/// The file the demo's objects are written to, inside the config directory.
pub const DEMO_FILE: &str = "bookinfo-demo.yaml";

/// How long children get between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Flags of `meshctl up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Also run the Bookinfo demo (productpage, details, reviews v1/v2/v3, ratings), each with its
    /// own sidecar, and write its config into the config directory.
    #[arg(long, env = "MESH_DEMO")]
    pub demo: bool,

    /// The configuration directory Galley loads and watches (default `STATE/config`).
    #[arg(long, env = "MESH_CONFIG_DIR")]
    pub config: Option<PathBuf>,

    /// Directory holding the galley, pilot, citadel, mixer, mesh-proxy and bookinfo binaries
    /// (default: the directory of this meshctl executable; when `cargo run` started meshctl, it
    /// first runs `cargo build --workspace --bins` there with the same profile).
    #[arg(long, env = "MESH_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,

    /// Seconds to wait for each stage (control plane, data plane) to become ready.
    #[arg(long, env = "MESH_UP_TIMEOUT", default_value_t = 120)]
    pub timeout: u64,

    /// OpenTelemetry collector (OTLP over gRPC, `127.0.0.1:4317`) every proxy exports its spans
    /// to; the proxies then record every trace (sampling 100%). No tracing when unset.
    #[arg(long, env = "MESH_TRACE_COLLECTOR")]
    pub trace_collector: Option<String>,

    /// Turn access logging off in the mesh config `up` writes (`STATE/meshconfig.yaml`). By
    /// default every proxy writes Istio's JSON access log line per request to its stdout, i.e.
    /// its process log `STATE/logs/<name>.log`.
    #[arg(long, env = "MESH_NO_ACCESS_LOG")]
    pub no_access_log: bool,

    /// Lifetime every proxy asks Citadel for its workload certificate (`24h`, `10m`, `60s`;
    /// renewed at half life). Unset: the proxy's default, 24h.
    #[arg(long, env = "MESH_UP_CERT_TTL")]
    pub cert_ttl: Option<String>,
}

/// `up` failed.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot prepare {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot find the {name} binary at {} (build every binary first: `cargo build --workspace --bins`, or set MESH_BIN_DIR)", path.display())]
    MissingBinary { name: String, path: PathBuf },
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("cannot pick free ports: {0}")]
    Ports(String),
    #[error("cannot encode the demo config: {0}")]
    DemoConfig(String),
    #[error(transparent)]
    Tokens(#[from] TokenError),
    #[error(transparent)]
    Start(#[from] SuperviseError),
    #[error(transparent)]
    Ready(#[from] ReadyError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot listen for signals: {0}")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Dashboard(#[from] DashboardError),
}

fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> UpError + '_ {
    move |source| UpError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// SIGTERM and SIGINT, listened for from the start (so neither kills meshctl before it stopped
/// its children).
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn new() -> Result<Self, UpError> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(UpError::Signals)?,
            int: signal(SignalKind::interrupt()).map_err(UpError::Signals)?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!(signal = "SIGTERM", "stopping the mesh"),
            _ = self.int.recv() => tracing::info!(signal = "SIGINT", "stopping the mesh"),
        }
    }
}

/// Runs the mesh until SIGTERM/SIGINT.
pub async fn run(args: UpArgs, state_dir: PathBuf) -> Result<(), UpError> {
    let mut signals = Signals::new()?;
    std::fs::create_dir_all(&state_dir).map_err(io_err(&state_dir))?;
    let state_dir = std::fs::canonicalize(&state_dir).map_err(io_err(&state_dir))?;
    let _lock = StateLock::acquire(&state_dir, std::process::id())?;
    let mesh_json = state_dir.join(MESH_JSON);
    remove_if_exists(&mesh_json)?;

    let bin = match args.bin_dir {
        Some(b) => b,
        None => {
            let exe_dir = std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("."));
            if let Some(build) = SiblingBuild::detect(|k| std::env::var_os(k), &exe_dir) {
                tokio::task::block_in_place(|| build.run())?;
            }
            exe_dir
        }
    };
    let dirs = Dirs {
        config: args.config.unwrap_or_else(|| state_dir.join("config")),
        state: state_dir.clone(),
        bin,
    };
    let mut needed = vec!["galley", "pilot", "citadel", "mixer", "mesh-proxy"];
    if args.demo {
        needed.push("bookinfo");
    }
    for name in needed {
        let path = dirs.bin.join(name);
        if !path.is_file() {
            return Err(UpError::MissingBinary {
                name: name.into(),
                path,
            });
        }
    }
    for d in [&dirs.config, &dirs.logs()] {
        std::fs::create_dir_all(d).map_err(io_err(d))?;
    }

    let ports = ports::pick_free_ports(Layout::ports_needed(args.demo))
        .map_err(|e| UpError::Ports(e.to_string()))?;
    let mut layout = Layout::new(dirs, args.demo, &mut PortPool::new(ports))
        .map_err(|e| UpError::Ports(e.to_string()))?;
    layout.trace_collector = args.trace_collector.clone();
    layout.cert_ttl = args.cert_ttl.clone();
    layout.access_log = !args.no_access_log;
    let mesh_config = layout.dirs.mesh_config();
    std::fs::write(&mesh_config, plan::mesh_config_yaml(layout.access_log))
        .map_err(io_err(&mesh_config))?;

    let demo_file = layout.dirs.config.join(DEMO_FILE);
    if args.demo {
        let yaml = demo_config::demo_yaml(&layout.demo_instances())
            .map_err(|e| UpError::DemoConfig(e.to_string()))?;
        std::fs::write(&demo_file, yaml).map_err(io_err(&demo_file))?;
    } else {
        // A demo file from an earlier `up --demo` points at ports that are gone.
        remove_if_exists(&demo_file)?;
    }
    tokens::write_tokens(&layout.dirs, &layout.identities())?;

    let mut supervisor = Supervisor::new(&layout.dirs.logs());
    let timeout = Duration::from_secs(args.timeout);
    let started = tokio::select! {
        r = start(&layout, &mut supervisor, timeout) => Some(r),
        () = signals.recv() => None,
    };
    match started {
        None => {
            supervisor.stop(STOP_GRACE).await;
            return Ok(());
        }
        Some(Err(e)) => {
            supervisor.stop(STOP_GRACE).await;
            return Err(e);
        }
        Some(Ok(())) => {}
    }
    let mut state = layout.mesh_state(std::process::id(), supervisor.processes());
    let dashboard = match dashboard::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await {
        Ok(listener) => listener,
        Err(e) => {
            supervisor.stop(STOP_GRACE).await;
            return Err(e.into());
        }
    };
    let dashboard_url = match dashboard.local_addr() {
        Ok(a) => format!("http://{a}"),
        Err(e) => {
            supervisor.stop(STOP_GRACE).await;
            return Err(DashboardError::Serve(e).into());
        }
    };
    state.dashboard = Some(dashboard_url.clone());
    if let Err(e) = state.write(&layout.dirs.state) {
        supervisor.stop(STOP_GRACE).await;
        return Err(e.into());
    }
    let (stop_dashboard, dashboard_stopped) = tokio::sync::oneshot::channel::<()>();
    let dashboard_state = state.clone();
    let dashboard_task = tokio::spawn(async move {
        let shutdown = async {
            let _ = dashboard_stopped.await;
        };
        if let Err(e) = dashboard::serve(dashboard, &dashboard_state, shutdown).await {
            eprintln!("meshctl: dashboard stopped: {e}");
        }
    });
    println!("{} dashboard={dashboard_url}", layout.ready_line());

    loop {
        tokio::select! {
            () = signals.recv() => break,
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Err(e) = supervisor.check() {
                    eprintln!("meshctl: {e}");
                }
            }
        }
    }
    let _ = stop_dashboard.send(());
    let _ = dashboard_task.await;
    supervisor.stop(STOP_GRACE).await;
    remove_if_exists(&mesh_json)?;
    Ok(())
}

/// Starts the control plane, waits for it, then the data plane, and waits for that.
async fn start(
    layout: &Layout,
    supervisor: &mut Supervisor,
    timeout: Duration,
) -> Result<(), UpError> {
    for stage in [layout.control_plane(), layout.data_plane()] {
        for spec in &stage {
            supervisor.spawn(spec)?;
        }
        let now = Instant::now();
        ready::wait_ready(&stage, supervisor, now, now + timeout).await?;
    }
    Ok(())
}

fn remove_if_exists(path: &std::path::Path) -> Result<(), UpError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}
