//! Shutdown on SIGTERM or Ctrl-C, with a bounded drain.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// The future a service is handed: it resolves when the service should stop.
pub type ShutdownFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// How long a service may drain after the signal before the process stops anyway.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Environment variable a supervisor sets to have its children stop when it dies (see
/// [`shutdown_signal`]).
pub const EXIT_WITH_PARENT_ENV: &str = "MESH_EXIT_WITH_PARENT";

/// Resolves when the process receives SIGTERM or SIGINT, or, when started with
/// `MESH_EXIT_WITH_PARENT=1`, when its standard input reaches end of file. A supervisor (`meshctl
/// up`) gives each child a pipe on stdin that it never writes to; the kernel closes it when the
/// supervisor exits for any reason, SIGKILL included, so no child outlives it.
pub async fn shutdown_signal() {
    let parent_gone = async {
        if std::env::var_os(EXIT_WITH_PARENT_ENV).is_some_and(|v| v == "1") {
            stdin_closed(tokio::io::stdin()).await;
            tracing::info!("supervisor gone (stdin closed); shutting down");
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = os_signal() => {}
        _ = parent_gone => {}
    }
}

/// Resolves when `input` reaches end of file or fails; anything written to it is ignored.
async fn stdin_closed(mut input: impl tokio::io::AsyncRead + Unpin) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    while let Ok(n) = input.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

/// SIGTERM or SIGINT.
async fn os_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => tracing::info!(signal = "SIGTERM", "shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "shutting down"),
    }
}

/// Runs `service` with a future that resolves on SIGTERM/SIGINT, and returns its result. Once the
/// signal has arrived the service gets `grace` to finish draining: open streams (proxies keep
/// gRPC streams to the control plane for ever) would otherwise hold a graceful shutdown open.
/// Returns `None` when the grace ran out.
pub async fn run_until_signal<T, Fut>(
    grace: Duration,
    service: impl FnOnce(ShutdownFuture) -> Fut,
) -> Option<T>
where
    Fut: Future<Output = T>,
{
    run_until(shutdown_signal(), grace, service).await
}

/// [`run_until_signal`] with any trigger (tests use a channel).
pub async fn run_until<T, Fut>(
    trigger: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    service: impl FnOnce(ShutdownFuture) -> Fut,
) -> Option<T>
where
    Fut: Future<Output = T>,
{
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        trigger.await;
        let _ = tx.send(true);
    });
    let mut for_service = rx.clone();
    let stop: ShutdownFuture = Box::pin(async move {
        let _ = for_service.wait_for(|fired| *fired).await;
    });
    let mut for_deadline = rx;
    let deadline = async move {
        if for_deadline.wait_for(|fired| *fired).await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        out = service(stop) => Some(out),
        _ = deadline => {
            tracing::warn!(grace_secs = grace.as_secs_f64(), "drain did not finish in time; stopping");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_service_that_drains_returns_its_result() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let trigger = async move {
            let _ = rx.await;
        };
        let run = run_until(trigger, Duration::from_secs(5), |stop| async move {
            stop.await;
            7
        });
        tx.send(()).unwrap();
        assert_eq!(run.await, Some(7));
    }

    #[tokio::test]
    async fn stdin_closing_is_noticed_and_data_is_ignored() {
        let (mut writer, reader) = tokio::io::duplex(16);
        let watch = tokio::spawn(stdin_closed(reader));
        tokio::io::AsyncWriteExt::write_all(&mut writer, b"noise")
            .await
            .unwrap();
        assert!(!watch.is_finished());
        drop(writer);
        watch.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_that_hangs_is_cut_off_after_the_grace() {
        let trigger = async {};
        let out: Option<()> = run_until(trigger, Duration::from_secs(5), |_stop| {
            std::future::pending::<()>()
        })
        .await;
        assert_eq!(out, None);
    }
}
