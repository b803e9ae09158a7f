//! Wiring for the `pilot` binary: bind every listener, then serve until shutdown.

use std::sync::Arc;

use futures::FutureExt;
use mesh_runtime::{Metrics, Readiness, StartError, bind_tcp, serve_monitoring};
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use crate::args::Args;
use crate::debug::{DebugState, router};
use crate::galley_client::{GalleyClient, READY_CONDITION, Snapshot};
use crate::inject::{self, InjectConfig, InjectMetrics, inject_router};
use crate::metrics::PilotMetrics;
use crate::model::RegistryCache;
use crate::translate::Options;
use crate::xds::{AdsServer, SyncStatus, XDS_TLS_READY, XdsTls};

/// Why Pilot stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("xds server failed: {0}")]
    Xds(#[source] tonic::transport::Error),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    InjectTls(#[from] crate::inject::PemError),
    #[error(transparent)]
    XdsTls(#[from] crate::xds::XdsTlsError),
    #[error("xds tls server failed: {0}")]
    XdsTlsServe(#[source] tonic::transport::Error),
    #[error("{what} server failed: {source}")]
    Http {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Readiness condition of `--credential-kube`: the Secrets' first list is read.
const CREDENTIALS_LISTED: &str = "gateway-credentials-listed";

/// Runs Pilot until `shutdown` resolves.
pub async fn run(
    args: Args,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let xds_listener = bind_tcp("xds", args.xds_addr).await?;
    let debug_listener = bind_tcp("debug", args.debug_addr).await?;
    let monitoring_listener = bind_tcp("monitoring", args.monitoring_addr).await?;
    let xds_tls_listener = match args.xds_tls_addr {
        Some(addr) => Some(bind_tcp("xds-tls", addr).await?),
        None => None,
    };
    let inject_listener = match args.inject_addr {
        Some(addr) => Some(bind_tcp("inject", addr).await?),
        None => None,
    };
    let inject_tls = match (&args.inject_addr, &args.inject_cert, &args.inject_key) {
        (Some(_), Some(cert), Some(key)) => Some(inject::server_config(cert, key)?),
        (Some(_), _, _) => {
            return Err(RunError::Config(
                "--inject-addr needs --inject-cert and --inject-key".into(),
            ));
        }
        _ => None,
    };

    let citadel_identity = args.xds_tls_addr.is_some() && args.xds_tls_cert.is_none();
    let mut conditions = vec![READY_CONDITION];
    if citadel_identity {
        conditions.push(XDS_TLS_READY);
    }
    if args.credential_kube {
        conditions.push(CREDENTIALS_LISTED);
    }
    let readiness = Readiness::new(&conditions);
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

    let mut ads = AdsServer::new(
        registry.clone(),
        options.clone(),
        pilot_metrics,
        status.clone(),
        stop_rx.clone(),
    );
    if args.credential_kube {
        let client = crate::sds::kube_client(args.kubeconfig.as_deref())
            .await
            .map_err(|e| RunError::Config(format!("--credential-kube: {e}")))?;
        let (source, mut listed) = crate::sds::watch_kube(
            client,
            crate::sds::KubeCredentialOptions {
                namespaces: args.credential_kube_namespaces.clone(),
                allow_plaintext: args.credential_plaintext,
            },
            crate::sds::SdsMetrics::register(&metrics),
            stop_rx.clone(),
        );
        let readiness = readiness.clone();
        tokio::spawn(async move {
            if listed.wait_for(|l| *l).await.is_ok() {
                readiness.set(CREDENTIALS_LISTED, true);
            }
        });
        ads = ads.with_credentials(source);
    } else if let Some(dir) = &args.credential_dir {
        ads = ads.with_credentials(crate::sds::watch_dir(
            dir.clone(),
            std::time::Duration::from_millis(args.credential_poll_ms.max(10)),
            args.credential_plaintext,
            crate::sds::SdsMetrics::register(&metrics),
            stop_rx.clone(),
        ));
    }
    let stop_rx_tls = stop_rx;
    let xds_tls = match xds_tls_listener {
        Some(listener) => {
            let tls = xds_tls(&args, &readiness, stop_rx_tls).await?;
            let server = tonic::transport::Server::builder()
                .add_service(ads.clone().into_service())
                .serve_with_incoming_shutdown(tls.incoming(listener), stopped.clone());
            Some(server)
        }
        None => None,
    };
    let inject_server = match (inject_listener, inject_tls) {
        (Some(listener), Some(tls)) => {
            let router = inject_router(inject_config(&args), InjectMetrics::register(&metrics));
            Some(inject::serve_tls(listener, tls, router, stopped.clone()))
        }
        _ => None,
    };
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
        galley = %args.galley_addr, xds_tls = ?args.xds_tls_addr, inject = ?args.inject_addr,
        "pilot serving"
    );

    let signal = tokio::spawn(async move {
        shutdown.await;
        stop_tx.send_replace(true);
    });
    let (x, d, m, t, ()) = tokio::join!(
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
        async {
            match xds_tls {
                Some(server) => server.await.map_err(RunError::XdsTlsServe),
                None => Ok(()),
            }
        },
        async {
            if let Some(inject) = inject_server {
                inject.await;
            }
        },
    );
    signal.abort();
    let _ = galley_task.await;
    x?;
    d?;
    m?;
    t?;
    tracing::info!("pilot stopped");
    Ok(())
}

/// What injected sidecars are given, from the flags.
fn inject_config(args: &Args) -> InjectConfig {
    InjectConfig {
        proxy_image: args.inject_proxy_image.clone(),
        init_image: args.inject_init_image.clone(),
        xds_addr: args.inject_xds_addr.clone(),
        citadel_addr: args.inject_citadel_addr.clone(),
        mixer_addr: args.inject_mixer_addr.clone(),
        trust_domain: args.trust_domain.clone(),
    }
}

/// Pilot's xDS mTLS certificate: PEM files, else Citadel with the token file.
async fn xds_tls(
    args: &Args,
    readiness: &Readiness,
    shutdown: watch::Receiver<bool>,
) -> Result<XdsTls, RunError> {
    if let (Some(cert), Some(key), Some(roots)) =
        (&args.xds_tls_cert, &args.xds_tls_key, &args.xds_tls_roots)
    {
        return Ok(XdsTls::from_pem(cert, key, roots, &args.trust_domain)?);
    }
    let (Some(citadel), Some(token_file)) = (&args.citadel_addr, &args.citadel_token_file) else {
        return Err(RunError::Config(
            "--xds-tls-addr needs --xds-tls-cert/--xds-tls-key/--xds-tls-roots or \
             --citadel-addr and --citadel-token-file"
                .into(),
        ));
    };
    let token = tokio::fs::read_to_string(token_file).await.map_err(|e| {
        RunError::Config(format!(
            "cannot read citadel token file {}: {e}",
            token_file.display()
        ))
    })?;
    let config = mesh_identity::IdentityConfig {
        citadel_addr: citadel.clone(),
        token: token.trim().to_string(),
        ttl: std::time::Duration::from_secs(24 * 3600),
        trust_domain: args.trust_domain.clone(),
    };
    let readiness = readiness.clone();
    Ok(XdsTls::from_citadel(config, shutdown, move || {
        readiness.set(XDS_TLS_READY, true);
    }))
}
