//! Check and Report calls to Mixer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_proto::attributes::{Bag, compress, compress_report};
use mesh_proto::dictionary;
use mesh_proto::istio::mixer::v1::CheckRequest;
use mesh_proto::istio::mixer::v1::mixer_client::MixerClient as GrpcMixer;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::cache::{CacheStats, CheckCache, DEFAULT_CAPACITY};
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

/// A Mixer client with its Check cache. Cheap to clone (clones share the cache).
#[derive(Clone, Debug)]
pub struct MixerClient {
    grpc: GrpcMixer<Channel>,
    reports: mpsc::Sender<Bag>,
    metrics: ProxyMetrics,
    cache: Arc<CheckCache<CheckOutcome>>,
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
            cache: Arc::new(CheckCache::new(DEFAULT_CAPACITY)),
        })
    }

    /// Check cache hits and misses so far.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Answers from the Check cache when an earlier answer applies to `bag`, else calls Check
    /// (1 s deadline) and caches the answer by its referenced attributes.
    pub async fn check(&self, bag: &Bag) -> CheckOutcome {
        let outcome = match self.cache.lookup(bag, Instant::now()) {
            Some(cached) => cached,
            None => self.check_remote(bag).await,
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

    async fn check_remote(&self, bag: &Bag) -> CheckOutcome {
        let req = CheckRequest {
            attributes: Some(compress(bag)),
            global_word_count: dictionary::words().len() as u32,
            ..Default::default()
        };
        let mut grpc = self.grpc.clone();
        match tokio::time::timeout(CHECK_TIMEOUT, grpc.check(req)).await {
            Err(_) => CheckOutcome::FailOpen("mixer check timed out".into()),
            Ok(Err(status)) => {
                CheckOutcome::FailOpen(format!("mixer check failed: {}", status.message()))
            }
            Ok(Ok(resp)) => {
                let pre = resp.into_inner().precondition.unwrap_or_default();
                let outcome = match &pre.status {
                    Some(s) if s.code != 0 => CheckOutcome::Deny {
                        code: s.code,
                        message: s.message.clone(),
                    },
                    _ => CheckOutcome::Allow,
                };
                let valid = pre
                    .valid_duration
                    .and_then(|d| Duration::try_from(d).ok())
                    .unwrap_or_default();
                self.cache.insert(
                    bag,
                    &pre.referenced_attributes.unwrap_or_default(),
                    valid,
                    pre.valid_use_count,
                    outcome.clone(),
                    Instant::now(),
                );
                outcome
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::istio::mixer::v1::check_response::PreconditionResult;
    use mesh_proto::istio::mixer::v1::mixer_server::{Mixer, MixerServer};
    use mesh_proto::istio::mixer::v1::{
        CheckResponse, ReferencedAttributes, ReportRequest, ReportResponse,
    };
    use parking_lot::Mutex;
    use tonic::{Request, Response, Status};

    /// A Mixer that allows everything for 60 s / 100 uses, referencing nothing, and records
    /// what it is sent.
    #[derive(Clone, Default)]
    struct FakeMixer {
        checks: Arc<Mutex<usize>>,
        batches: Arc<Mutex<Vec<usize>>>,
    }

    #[tonic::async_trait]
    impl Mixer for FakeMixer {
        async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
            *self.checks.lock() += 1;
            Ok(Response::new(CheckResponse {
                precondition: Some(PreconditionResult {
                    status: Some(Default::default()),
                    valid_duration: Some(prost_types::Duration {
                        seconds: 60,
                        nanos: 0,
                    }),
                    valid_use_count: 100,
                    referenced_attributes: Some(ReferencedAttributes::default()),
                    route_directive: None,
                }),
                quotas: Default::default(),
            }))
        }

        async fn report(
            &self,
            request: Request<ReportRequest>,
        ) -> Result<Response<ReportResponse>, Status> {
            self.batches.lock().push(request.get_ref().attributes.len());
            Ok(Response::new(ReportResponse {}))
        }
    }

    async fn serve(fake: FakeMixer) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(MixerServer::new(fake))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        format!("http://{addr}")
    }

    async fn poll(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn checks_are_answered_from_the_cache() {
        let fake = FakeMixer::default();
        let client = MixerClient::new(&serve(fake.clone()).await, ProxyMetrics::default()).unwrap();
        let bag = Bag::new().with("request.path", "/a");
        assert_eq!(client.check(&bag).await, CheckOutcome::Allow);
        assert_eq!(client.check(&bag).await, CheckOutcome::Allow);
        assert_eq!(
            client.check(&Bag::new().with("request.path", "/b")).await,
            CheckOutcome::Allow
        );
        assert_eq!(*fake.checks.lock(), 1, "one call; the rest from the cache");
        assert_eq!(client.cache_stats(), CacheStats { hits: 2, misses: 1 });
    }

    #[tokio::test]
    async fn reports_are_batched_by_count_then_by_time() {
        let fake = FakeMixer::default();
        let metrics = ProxyMetrics::default();
        let client = MixerClient::new(&serve(fake.clone()).await, metrics.clone()).unwrap();
        for i in 0..(2 * REPORT_BATCH + 5) {
            client.report(Bag::new().with("request.size", i as i64));
        }
        let batches = fake.batches.clone();
        poll("all records sent", || {
            batches.lock().iter().sum::<usize>() == 2 * REPORT_BATCH + 5
        })
        .await;
        // Two full batches, then the rest once the interval passed.
        assert_eq!(*fake.batches.lock(), vec![REPORT_BATCH, REPORT_BATCH, 5]);
        assert_eq!(
            metrics.mixer_reports_sent.get(),
            (2 * REPORT_BATCH + 5) as u64
        );
        assert_eq!(metrics.mixer_reports_dropped.get(), 0);
    }

    #[tokio::test]
    async fn unreachable_mixer_drops_and_counts_reports_and_fails_open() {
        // Nothing listens on port 1.
        let metrics = ProxyMetrics::default();
        let client = MixerClient::new("http://127.0.0.1:1", metrics.clone()).unwrap();
        for _ in 0..3 {
            client.report(Bag::new());
        }
        let dropped = metrics.mixer_reports_dropped.clone();
        poll("reports dropped", || dropped.get() == 3).await;
        assert!(matches!(
            client.check(&Bag::new()).await,
            CheckOutcome::FailOpen(_)
        ));
        assert_eq!(metrics.mixer_fail_open.get(), 1);
        // A failed check is not cached.
        assert_eq!(client.cache_stats().hits, 0);
    }
}
