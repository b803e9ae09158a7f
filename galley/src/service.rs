//! Running galley: bind, load the config dir, serve MCP, the apply API and monitoring, stop on
//! shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mesh_runtime::{Metrics, Readiness, StartError, bind_tcp, serve_monitoring};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use crate::api::{ApiMetrics, KubeWriter, api_router, kube_api_router};
use crate::mcp::{McpMetrics, McpServer};
use crate::source::kube::{KubeError, KubeMetrics, KubeOptions, KubeSource};
use crate::source::{DirSource, MeshSource, SyncError};
use crate::stopped;
use crate::store::{Store, StoreError};
use crate::webhook::{WebhookMetrics, serve_tls, server_config, webhook_router};
use futures::FutureExt;

/// Readiness conditions: the config dir is loaded, and the servers are running.
pub const READY_STORE: &str = "store";
pub const READY_SERVING: &str = "serving";
/// With the Kubernetes source: the first list of every watched kind is in the store.
pub const READY_KUBE: &str = "kube-synced";

/// What galley needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// YAML/JSON directory loaded at start and watched.
    pub config_dir: Option<PathBuf>,
    /// sled store directory.
    pub store_dir: PathBuf,
    pub mcp_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub monitoring_addr: SocketAddr,
    /// How often the config dir is polled for changes.
    pub poll_interval: Duration,
    /// The validating admission webhook (HTTPS); off when `None`.
    pub webhook: Option<WebhookConfig>,
    /// The Kubernetes source (watch the API server); off when `None`.
    pub kube: Option<KubeOptions>,
    /// Istio's mesh config YAML (the `mesh` key of the `istio` ConfigMap); when `None`, an
    /// `istio` ConfigMap in the config dir is read instead, if any.
    pub mesh_config: Option<PathBuf>,
}

/// Where the admission webhook listens and its TLS certificate and key (PEM files).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub addr: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why galley stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum GalleyError {
    #[error("{0}")]
    Start(StartError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] SyncError),
    #[error(transparent)]
    Tls(#[from] crate::webhook::TlsError),
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(transparent)]
    MeshConfig(#[from] crate::source::MeshSyncError),
    #[error("{what} server failed: {message}")]
    Serve { what: &'static str, message: String },
}

impl From<StartError> for GalleyError {
    fn from(e: StartError) -> Self {
        GalleyError::Start(e)
    }
}

type ServerTask = tokio::task::JoinHandle<Result<(), String>>;

/// Runs galley until `shutdown` resolves (Ok) or something fails (Err).
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GalleyError> {
    let mcp_listener = bind_tcp("mcp", cfg.mcp_addr).await?;
    let api_listener = bind_tcp("api", cfg.api_addr).await?;
    let monitoring_listener = bind_tcp("monitoring", cfg.monitoring_addr).await?;
    let webhook = match &cfg.webhook {
        Some(w) => Some((
            bind_tcp("webhook", w.addr).await?,
            server_config(&w.cert, &w.key)?,
        )),
        None => None,
    };

    let kube_client = match &cfg.kube {
        Some(k) => Some(crate::source::kube::client(k.kubeconfig.as_deref()).await?),
        None => None,
    };
    let readiness = if cfg.kube.is_some() {
        Readiness::new(&[READY_STORE, READY_SERVING, READY_KUBE])
    } else {
        Readiness::new(&[READY_STORE, READY_SERVING])
    };
    let metrics = Metrics::default();
    let (stop_tx, stop_rx) = watch::channel(false);

    let monitoring: ServerTask = tokio::spawn({
        let (r, m, s) = (readiness.clone(), metrics.clone(), stopped(stop_rx.clone()));
        async move {
            serve_monitoring(monitoring_listener, r, m, s)
                .await
                .map_err(|e| e.to_string())
        }
    });

    // Compile every CRD schema now, not on the first document.
    let started = std::time::Instant::now();
    match tokio::task::spawn_blocking(crate::validate::init_schemas).await {
        Ok(Ok(n)) => tracing::info!(
            schemas = n,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "CRD schemas compiled"
        ),
        Ok(Err(e)) => tracing::error!(error = %e, "some kinds are not checked structurally"),
        Err(e) => tracing::error!(error = %e, "compiling the CRD schemas failed"),
    }
    let store = Store::open(&cfg.store_dir)?;
    spawn_revision_gauge(&store, &metrics, stop_rx.clone());
    if let Some(dir) = &cfg.config_dir {
        let mut source = DirSource::new(dir.clone());
        let outcome = source.sync_into(&store).await?;
        tracing::info!(dir = %dir.display(), changes = outcome.changes, invalid = outcome.errors, revision = store.revision(), "config dir loaded");
        tokio::spawn(source.watch(store.clone(), cfg.poll_interval, stopped(stop_rx.clone())));
    }
    {
        // Always synced once (removes a stale stored mesh config); a bad one fails the start.
        let mut mesh = MeshSource::new(cfg.mesh_config.clone(), cfg.config_dir.clone());
        mesh.sync_into(&store).await?;
        if mesh.is_configured() {
            tokio::spawn(mesh.watch(store.clone(), cfg.poll_interval, stopped(stop_rx.clone())));
        }
    }
    let mut kube_writer = None;
    if let (Some(client), Some(options)) = (kube_client, &cfg.kube) {
        let source = KubeSource::new(
            client.clone(),
            store.clone(),
            options.clone(),
            KubeMetrics::register(&metrics),
        );
        // With --kube the API server is the store: the apply API writes there.
        kube_writer = Some(KubeWriter::new(
            client,
            source.observed(),
            options.namespace.clone(),
        ));
        let mut synced = source.synced();
        let r = readiness.clone();
        tokio::spawn(async move {
            if synced.wait_for(|s| *s).await.is_ok() {
                r.set(READY_KUBE, true);
            }
        });
        tokio::spawn(source.run(stopped(stop_rx.clone())));
    }
    readiness.set(READY_STORE, true);

    let mcp: ServerTask = tokio::spawn({
        let server = McpServer::new(
            store.clone(),
            McpMetrics::register(&metrics),
            stop_rx.clone(),
        );
        async move { server.serve(mcp_listener).await.map_err(|e| e.to_string()) }
    });
    let api: ServerTask = tokio::spawn({
        let api_metrics = ApiMetrics::register(&metrics);
        let router = match kube_writer {
            Some(writer) => kube_api_router(store.clone(), api_metrics, writer),
            None => api_router(store.clone(), api_metrics),
        };
        let s = stopped(stop_rx.clone());
        async move {
            axum::serve(api_listener, router)
                .with_graceful_shutdown(s)
                .await
                .map_err(|e| e.to_string())
        }
    });
    let webhook: ServerTask = match webhook {
        Some((listener, tls)) => tokio::spawn({
            let router = webhook_router(WebhookMetrics::register(&metrics));
            let s = stopped(stop_rx.clone());
            async move {
                serve_tls(listener, tls, router, s).await;
                Ok(())
            }
        }),
        None => tokio::spawn(stopped(stop_rx.clone()).map(Ok)),
    };
    readiness.set(READY_SERVING, true);
    tracing::info!(webhook = ?cfg.webhook.as_ref().map(|w| w.addr), mcp = %cfg.mcp_addr, api = %cfg.api_addr, monitoring = %cfg.monitoring_addr, store = %cfg.store_dir.display(), "galley serving");

    let mut tasks = [
        ("mcp", mcp),
        ("api", api),
        ("monitoring", monitoring),
        ("webhook", webhook),
    ];
    let early = {
        let [(_, a), (_, b), (_, c), (_, d)] = &mut tasks;
        tokio::select! {
            () = shutdown => None,
            r = a => Some(("mcp", r)),
            r = b => Some(("api", r)),
            r = c => Some(("monitoring", r)),
            r = d => Some(("webhook", r)),
        }
    };
    readiness.set(READY_SERVING, false);
    let _ = stop_tx.send(true);
    let mut result = Ok(());
    let finished = early.as_ref().map(|(what, _)| *what);
    if let Some((what, r)) = early {
        let message = match r {
            Ok(Ok(())) => "stopped unexpectedly".to_string(),
            Ok(Err(e)) => e,
            Err(e) => e.to_string(),
        };
        result = Err(GalleyError::Serve { what, message });
    }
    for (what, task) in tasks {
        if finished == Some(what) {
            continue; // already awaited
        }
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(Err(e))) => {
                tracing::warn!(server = what, error = %e, "server stopped with an error")
            }
            Err(_) => tracing::warn!(server = what, "server did not stop within 5s"),
            _ => {}
        }
    }
    tracing::info!("galley stopped");
    result
}

/// Keeps `galley_store_revision` equal to the store revision.
fn spawn_revision_gauge(store: &Store, metrics: &Metrics, stop: watch::Receiver<bool>) {
    let gauge: Gauge = Gauge::default();
    metrics.register(|r| {
        r.register(
            "galley_store_revision",
            "Current config store revision",
            gauge.clone(),
        )
    });
    let mut rx = store.subscribe();
    tokio::spawn(async move {
        let stop = stopped(stop);
        tokio::pin!(stop);
        loop {
            let rev = *rx.borrow_and_update();
            gauge.set(i64::try_from(rev).unwrap_or(i64::MAX));
            tokio::select! {
                () = &mut stop => return,
                r = rx.changed() => if r.is_err() { return },
            }
        }
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn free_addr() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    fn config(config_dir: Option<PathBuf>, store_dir: PathBuf) -> Config {
        Config {
            config_dir,
            store_dir,
            mcp_addr: free_addr(),
            api_addr: free_addr(),
            monitoring_addr: free_addr(),
            poll_interval: Duration::from_millis(50),
            webhook: None,
            kube: None,
            mesh_config: None,
        }
    }

    #[tokio::test]
    async fn invalid_mesh_config_fails_start_naming_file_and_field() {
        let tmp = tempfile::tempdir().unwrap();
        let mesh = tmp.path().join("mesh.yaml");
        std::fs::write(
            &mesh,
            "accessLogFile: /dev/stdout\naccessLogEncoding: XML\n",
        )
        .unwrap();
        let mut cfg = config(None, tmp.path().join("store"));
        cfg.mesh_config = Some(mesh);
        let err = run(cfg, std::future::pending()).await.unwrap_err();
        assert!(
            err.to_string().contains("mesh.yaml:1: accessLogEncoding: "),
            "{err}"
        );
    }

    #[tokio::test]
    async fn unreadable_config_dir_fails_start() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(Some(tmp.path().join("missing")), tmp.path().join("store"));
        let err = run(cfg, std::future::pending()).await.unwrap_err();
        assert!(
            err.to_string().starts_with("cannot read config dir"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn webhook_serves_https_and_bad_cert_fails_start() {
        let pki = crate::webhook::tests::pki();
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config(None, tmp.path().join("store"));
        cfg.webhook = Some(WebhookConfig {
            addr: free_addr(),
            cert: pki.cert.with_file_name("missing.crt"),
            key: pki.key.clone(),
        });
        let err = run(cfg.clone(), std::future::pending()).await.unwrap_err();
        assert!(err.to_string().contains("missing.crt"), "{err}");

        let webhook = free_addr();
        cfg.webhook = Some(WebhookConfig {
            addr: webhook,
            cert: pki.cert.clone(),
            key: pki.key.clone(),
        });
        let mon = cfg.monitoring_addr;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(cfg, async move {
            let _ = rx.await;
        }));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !reqwest::get(format!("http://{mon}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(tokio::time::Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let review = serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u1", "operation": "CREATE", "object": {"apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule", "metadata": {"name": "r", "namespace": "prod"}, "spec": {"host": ""}}}});
        let (status, body) = crate::webhook::tests::post(
            &pki,
            webhook,
            &rustls::version::TLS13,
            "/validate",
            "application/json",
            review.to_string(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["response"]["allowed"], false, "{body}");
        assert!(
            answer["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .starts_with("DestinationRule prod/r: spec.host: "),
            "{body}"
        );
        let metrics = reqwest::get(format!("http://{mon}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("galley_webhook_denied_total 1"),
            "{metrics}"
        );
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn serves_until_shutdown() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("config");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(
            dir.join("vs.yaml"),
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec: {hosts: [reviews], tcp: [{route: [{destination: {host: reviews}}]}]}\n",
        )
        .unwrap();
        let cfg = config(Some(dir), tmp.path().join("store"));
        let (api, mon) = (cfg.api_addr, cfg.monitoring_addr);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(cfg, async move {
            let _ = rx.await;
        }));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ready = reqwest::get(format!("http://{mon}/readyz")).await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let body: serde_json::Value = reqwest::get(format!("http://{api}/apis/v1/virtualservices"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["items"][0]["metadata"]["name"], "reviews");
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
