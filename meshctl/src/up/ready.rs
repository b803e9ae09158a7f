//! Waiting for started processes to answer their readiness URL, while watching for exits.

use std::time::Duration;

use tokio::time::Instant;

use super::plan::ProcSpec;
use super::supervisor::{SuperviseError, Supervisor};

/// How often readiness URLs are polled.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// Waiting failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    #[error(transparent)]
    Exited(#[from] SuperviseError),
    #[error("not ready after {}s: {}", waited.as_secs(), pending.join("; "))]
    Timeout {
        waited: Duration,
        pending: Vec<String>,
    },
}

/// Polls every spec's `ready_url` until each answered 200 once; fails when a child exits or at
/// `deadline` (naming what was still not ready and its last answer).
pub async fn wait_ready(
    specs: &[ProcSpec],
    supervisor: &mut Supervisor,
    started: Instant,
    deadline: Instant,
) -> Result<(), ReadyError> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default();
    let mut pending: Vec<(&ProcSpec, String)> = specs
        .iter()
        .map(|s| (s, "no answer yet".to_string()))
        .collect();
    loop {
        supervisor.check()?;
        let mut still = Vec::new();
        for (spec, _) in pending {
            let answer = match client.get(&spec.ready_url).send().await {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(name = spec.name, "ready");
                    continue;
                }
                Ok(r) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    format!("{status} {}", body.trim())
                }
                Err(e) => format!("{e}"),
            };
            still.push((spec, answer));
        }
        pending = still;
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ReadyError::Timeout {
                waited: deadline - started,
                pending: pending
                    .iter()
                    .map(|(s, a)| format!("{} ({}: {})", s.name, s.ready_url, a))
                    .collect(),
            });
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, url: String, script: &str) -> ProcSpec {
        ProcSpec {
            name: name.into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            ready_url: url,
        }
    }

    #[tokio::test]
    async fn times_out_naming_what_is_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let mut sup = Supervisor::new(dir.path());
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let s = spec("slow", format!("http://{dead}/readyz"), "sleep 30");
        sup.spawn(&s).unwrap();
        let now = Instant::now();
        let err = wait_ready(&[s], &mut sup, now, now + Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, ReadyError::Timeout { .. }));
        assert!(err.to_string().contains("slow (http://"), "{err}");
        sup.stop(Duration::from_secs(2)).await;
    }

    #[tokio::test]
    async fn a_child_exiting_while_waited_for_fails_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let mut sup = Supervisor::new(dir.path());
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let s = spec(
            "crash",
            format!("http://{dead}/readyz"),
            "echo boom >&2; exit 1",
        );
        sup.spawn(&s).unwrap();
        let now = Instant::now();
        let err = wait_ready(&[s], &mut sup, now, now + Duration::from_secs(20))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("crash exited unexpectedly"),
            "{err}"
        );
        assert!(err.to_string().ends_with("boom"), "{err}");
    }

    #[tokio::test]
    async fn ready_once_the_url_answers_200() {
        let dir = tempfile::tempdir().unwrap();
        let mut sup = Supervisor::new(dir.path());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let app = axum_like_ok();
        tokio::spawn(async move { app(l).await });
        let s = spec("ok", format!("http://{addr}/readyz"), "sleep 30");
        sup.spawn(&s).unwrap();
        let now = Instant::now();
        wait_ready(&[s], &mut sup, now, now + Duration::from_secs(20))
            .await
            .unwrap();
        sup.stop(Duration::from_secs(2)).await;
    }

    /// A minimal HTTP server answering 200 to anything.
    fn axum_like_ok() -> impl FnOnce(
        tokio::net::TcpListener,
    )
        -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        |l| {
            Box::pin(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                loop {
                    let Ok((mut s, _)) = l.accept().await else {
                        return;
                    };
                    tokio::spawn(async move {
                        let mut buf = [0u8; 1024];
                        let _ = s.read(&mut buf).await;
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nready\n")
                            .await;
                    });
                }
            })
        }
    }
}
