//! What the galley benches share: the real service started in-process on loopback, MCP sinks
//! that behave like Pilot's, and the process's resident memory.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mesh_proto::config::Kind;
use mesh_proto::mcp::sink::{Sink, Update};
use tokio::sync::watch;

/// The collections Pilot subscribes to (`pilot::galley_client::COLLECTIONS`).
pub const PILOT_COLLECTIONS: [Kind; 15] = [
    Kind::Service,
    Kind::Endpoints,
    Kind::Pod,
    Kind::VirtualService,
    Kind::DestinationRule,
    Kind::Gateway,
    Kind::PeerAuthentication,
    Kind::AuthorizationPolicy,
    Kind::RequestAuthentication,
    Kind::MeshConfig,
    Kind::QuotaSpec,
    Kind::QuotaSpecBinding,
    Kind::ServiceEntry,
    Kind::WorkloadEntry,
    Kind::Sidecar,
];

/// A loopback address with a port free right now.
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Galley (`galley::run`) running in this process, with its store in a temporary directory.
pub struct Galley {
    pub api: SocketAddr,
    pub mcp: SocketAddr,
    pub monitoring: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), galley::GalleyError>>,
    _dir: tempfile::TempDir,
}

impl Galley {
    /// Starts galley and waits until `/readyz` answers 200.
    pub async fn start() -> Galley {
        let dir = tempfile::tempdir().unwrap();
        let (api, mcp, monitoring) = (free_addr(), free_addr(), free_addr());
        let cfg = galley::Config {
            config_dir: None,
            store_dir: dir.path().join("store"),
            mcp_addr: mcp,
            api_addr: api,
            monitoring_addr: monitoring,
            poll_interval: Duration::from_secs(3600),
            webhook: None,
            kube: None,
            mesh_config: None,
        };
        let (stop, mut stop_rx) = watch::channel(false);
        let task = tokio::spawn(galley::run(cfg, async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        }));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = reqwest::get(format!("http://{monitoring}/readyz"))
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "galley did not become ready");
            assert!(!task.is_finished(), "galley stopped while starting");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Galley {
            api,
            mcp,
            monitoring,
            stop,
            task,
            _dir: dir,
        }
    }

    /// `POST /apis/v1/apply` as `meshctl apply` sends it; panics unless galley answers 200.
    pub async fn apply(&self, http: &reqwest::Client, source: &str, text: String) {
        let resp = http
            .post(format!("http://{}/apis/v1/apply", self.api))
            .header("x-mesh-source", source)
            .header("content-type", "application/yaml")
            .body(text)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        if !status.is_success() {
            panic!("apply refused: {status} {}", resp.text().await.unwrap());
        }
    }

    /// Stops galley and waits for it to end.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.task.await.unwrap().unwrap();
    }
}

/// Starts an MCP sink (the shared `mesh_proto::mcp::sink`, as Pilot uses it: decode, hand to the
/// handler, ACK) subscribed to Pilot's collections; `handler` sees every update. Ends on `stop`.
pub fn spawn_sink(
    mcp: SocketAddr,
    id: String,
    handler: impl FnMut(Update) -> Result<(), String> + Send + 'static,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let sink = Sink::new(format!("http://{mcp}"), id, PILOT_COLLECTIONS, handler);
    tokio::spawn(sink.run(async move {
        let _ = stop.wait_for(|s| *s).await;
    }))
}

/// The process's resident set size in MB (`/proc/self/statm`, pages of 4 KiB).
pub fn rss_mb() -> f64 {
    statm_mb(1)
}

/// The resident pages backed by files (the executable's code, shared libraries) in MB: a debug
/// build's code is much larger than a release build's.
pub fn file_backed_mb() -> f64 {
    statm_mb(2)
}

fn statm_mb(field: usize) -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(field)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

/// The `q` quantile (0..=1) of sorted `v`.
pub fn quantile(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Whether cargo runs this as a benchmark (`cargo bench`) rather than a smoke test
/// (`cargo test --benches`).
pub fn benching() -> bool {
    std::env::args().any(|a| a == "--bench")
}
