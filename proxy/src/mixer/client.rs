//! Check and Report calls to Mixer.

use std::time::Duration;

use mesh_proto::attributes::{Bag, compress, compress_report};
use mesh_proto::dictionary;
use mesh_proto::istio::mixer::v1::CheckRequest;
use mesh_proto::istio::mixer::v1::mixer_client::MixerClient as GrpcMixer;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::admin::{CheckLabels, ProxyMetrics};

const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
const REPORT_BATCH: usize = 100;
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
const REPORT_QUEUE: usize = 10_000;

/// Why the client could not be created.
#[derive(Debug, thiserror::Error)]
pub enum MixerError {
    #[error("invalid mixer address {addr:?}: {source}")]
    Address {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// What Check decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    Allow,
    /// Denied: the status code and message Mixer gave.
    Deny {
        code: i32,
        message: String,
    },
    /// Mixer unreachable or too slow: let the request through.
    FailOpen(String),
}

/// A Mixer client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MixerClient {
    grpc: GrpcMixer<Channel>,
    reports: mpsc::Sender<Bag>,
    metrics: ProxyMetrics,
}

impl MixerClient {
    /// Connects lazily to `addr` and starts the report task. Must run inside a tokio runtime.
    pub fn new(addr: &str, metrics: ProxyMetrics) -> Result<Self, MixerError> {
        let channel = tonic::transport::Endpoint::from_shared(addr.to_string())
            .map_err(|source| MixerError::Address {
                addr: addr.to_string(),
                source,
            })?
            .connect_timeout(CHECK_TIMEOUT)
            .connect_lazy();
        let grpc = GrpcMixer::new(channel);
        let (tx, rx) = mpsc::channel(REPORT_QUEUE);
        tokio::spawn(report_loop(grpc.clone(), rx, metrics.clone()));
        Ok(MixerClient {
            grpc,
            reports: tx,
            metrics,
        })
    }

    /// Calls Check with `bag` (1 s deadline).
    pub async fn check(&self, bag: &Bag) -> CheckOutcome {
        let req = CheckRequest {
            attributes: Some(compress(bag)),
            global_word_count: dictionary::words().len() as u32,
            ..Default::default()
        };
        let mut grpc = self.grpc.clone();
        let outcome = match tokio::time::timeout(CHECK_TIMEOUT, grpc.check(req)).await {
            Err(_) => CheckOutcome::FailOpen("mixer check timed out".into()),
            Ok(Err(status)) => {
                CheckOutcome::FailOpen(format!("mixer check failed: {}", status.message()))
            }
            Ok(Ok(resp)) => {
                let status = resp.into_inner().precondition.and_then(|p| p.status);
                match status {
                    Some(s) if s.code != 0 => CheckOutcome::Deny {
                        code: s.code,
                        message: s.message,
                    },
                    _ => CheckOutcome::Allow,
                }
            }
        };
        let result = match &outcome {
            CheckOutcome::Allow => "allow",
            CheckOutcome::Deny { .. } => "deny",
            CheckOutcome::FailOpen(reason) => {
                tracing::warn!(%reason, "mixer check failed; allowing the request (fail open)");
                self.metrics.mixer_fail_open.inc();
                "fail_open"
            }
        };
        self.metrics
            .mixer_checks
            .get_or_create(&CheckLabels { result })
            .inc();
        outcome
    }

    /// Queues a Report record; dropped (and counted) when the queue is full.
    pub fn report(&self, bag: Bag) {
        if self.reports.try_send(bag).is_err() {
            self.metrics.mixer_reports_dropped.inc();
        }
    }
}

async fn report_loop(
    mut grpc: GrpcMixer<Channel>,
    mut rx: mpsc::Receiver<Bag>,
    metrics: ProxyMetrics,
) {
    let mut batch = Vec::with_capacity(REPORT_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + REPORT_INTERVAL;
        while batch.len() < REPORT_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(bag)) => batch.push(bag),
                Ok(None) | Err(_) => break,
            }
        }
        let mut req = compress_report(&batch);
        req.global_word_count = dictionary::words().len() as u32;
        let n = batch.len() as u64;
        batch.clear();
        match tokio::time::timeout(Duration::from_secs(5), grpc.report(req)).await {
            Ok(Ok(_)) => {
                metrics.mixer_reports_sent.inc_by(n);
            }
            Ok(Err(status)) => {
                tracing::warn!(records = n, error = %status.message(), "mixer report failed; records dropped");
                metrics.mixer_reports_dropped.inc_by(n);
            }
            Err(_) => {
                tracing::warn!(records = n, "mixer report timed out; records dropped");
                metrics.mixer_reports_dropped.inc_by(n);
            }
        }
    }
}
