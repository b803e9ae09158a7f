//! Check and Report calls to Mixer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use mesh_proto::attributes::{Bag, compress, compress_report};
use mesh_proto::dictionary;
use mesh_proto::istio::mixer::v1::check_request::QuotaParams;
use mesh_proto::istio::mixer::v1::mixer_client::MixerClient as GrpcMixer;
use mesh_proto::istio::mixer::v1::{CheckRequest, CheckResponse};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::cache::{CacheStats, CheckCache, DEFAULT_CAPACITY};
use super::config::{FailPolicy, RequestPolicy};
use crate::admin::{CheckLabels, ProxyMetrics};

/// How long a Check may take before the fail policy decides (Istio's mixer client gives its
/// gRPC Check calls 5 s).
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// gRPC `RESOURCE_EXHAUSTED`.
const RESOURCE_EXHAUSTED: i32 = 8;
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
    /// Mixer unreachable or too slow, policy FAIL_OPEN: let the request through.
    FailOpen(String),
    /// Mixer unreachable or too slow, policy FAIL_CLOSE: 503 `UNAVAILABLE`.
    FailClose(String),
    /// A quota was granted less than asked (or refused with a status): `code` is the gRPC
    /// status (RESOURCE_EXHAUSTED for an exhausted quota).
    QuotaRefused {
        code: i32,
        message: String,
    },
}

/// The gRPC status name Istio's mixer filter puts before the message in its response body.
fn status_name(code: i32) -> &'static str {
    match code {
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// Envoy's gRPC status → HTTP status mapping, as Istio's mixer filter answered a refusal.
fn http_status(code: i32) -> StatusCode {
    match code {
        1 => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        3 | 9 | 11 => StatusCode::BAD_REQUEST,
        4 => StatusCode::GATEWAY_TIMEOUT,
        5 => StatusCode::NOT_FOUND,
        6 | 10 => StatusCode::CONFLICT,
        7 => StatusCode::FORBIDDEN,
        8 => StatusCode::TOO_MANY_REQUESTS,
        12 => StatusCode::NOT_IMPLEMENTED,
        14 => StatusCode::SERVICE_UNAVAILABLE,
        16 => StatusCode::UNAUTHORIZED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl CheckOutcome {
    /// The response that ends the request, when Check refused it: a precondition denial is 403
    /// with Mixer's message; a refused quota and FAIL_CLOSE answer as Istio's mixer filter did
    /// (`RESOURCE_EXHAUSTED:Quota is exhausted for: <name>` → 429, `UNAVAILABLE:...` → 503).
    pub fn rejection(&self) -> Option<(StatusCode, String)> {
        match self {
            CheckOutcome::Allow | CheckOutcome::FailOpen(_) => None,
            CheckOutcome::Deny { message, .. } => Some((StatusCode::FORBIDDEN, message.clone())),
            CheckOutcome::FailClose(reason) => Some((
                StatusCode::SERVICE_UNAVAILABLE,
                format!("UNAVAILABLE:{reason}"),
            )),
            CheckOutcome::QuotaRefused { code, message } => Some((
                http_status(*code),
                format!("{}:{message}", status_name(*code)),
            )),
        }
    }
}

/// A Mixer client with its Check cache. Cheap to clone (clones share the cache).
#[derive(Clone, Debug)]
pub struct MixerClient {
    grpc: GrpcMixer<Channel>,
    reports: mpsc::Sender<Bag>,
    metrics: ProxyMetrics,
    cache: Arc<CheckCache<CheckOutcome>>,
    check_timeout: Duration,
}

impl MixerClient {
    /// Connects lazily to `addr` and starts the report task (Check timeout
    /// [`DEFAULT_CHECK_TIMEOUT`]). Must run inside a tokio runtime.
    pub fn new(addr: &str, metrics: ProxyMetrics) -> Result<Self, MixerError> {
        Self::with_check_timeout(addr, metrics, DEFAULT_CHECK_TIMEOUT)
    }

    /// Like [`MixerClient::new`], with Check calls bounded by `check_timeout`.
    pub fn with_check_timeout(
        addr: &str,
        metrics: ProxyMetrics,
        check_timeout: Duration,
    ) -> Result<Self, MixerError> {
        let channel = tonic::transport::Endpoint::from_shared(addr.to_string())
            .map_err(|source| MixerError::Address {
                addr: addr.to_string(),
                source,
            })?
            .connect_timeout(check_timeout)
            .connect_lazy();
        let grpc = GrpcMixer::new(channel);
        let (tx, rx) = mpsc::channel(REPORT_QUEUE);
        tokio::spawn(report_loop(grpc.clone(), rx, metrics.clone()));
        Ok(MixerClient {
            grpc,
            reports: tx,
            metrics,
            cache: Arc::new(CheckCache::new(DEFAULT_CAPACITY)),
            check_timeout,
        })
    }

    /// Check cache hits and misses so far.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Check without quotas, failing open: [`MixerClient::check_request`] with the default
    /// policy.
    pub async fn check(&self, bag: &Bag) -> CheckOutcome {
        self.check_request(bag, &RequestPolicy::default()).await
    }

    /// Checks a request. Without quotas the answer may come from the Check cache (an earlier
    /// answer whose referenced attributes agree with `bag`); with quotas Mixer is always asked
    /// (each `name → amount`, best_effort false) and the request is refused when a quota is
    /// granted less than asked. Mixer unreachable or slower than the Check timeout: the policy's
    /// FAIL_OPEN lets the request through, FAIL_CLOSE refuses it.
    pub async fn check_request(&self, bag: &Bag, policy: &RequestPolicy) -> CheckOutcome {
        let outcome = if policy.quotas.is_empty() {
            match self.cache.lookup(bag, Instant::now()) {
                Some(cached) => {
                    self.metrics.mixer_check_cache_hits.inc();
                    cached
                }
                None => {
                    self.metrics.mixer_check_cache_misses.inc();
                    self.check_remote(bag, policy).await
                }
            }
        } else {
            self.check_remote(bag, policy).await
        };
        let result = match &outcome {
            CheckOutcome::Allow => "allow",
            CheckOutcome::Deny { .. } => "deny",
            CheckOutcome::FailOpen(reason) => {
                tracing::warn!(%reason, "mixer check failed; allowing the request (fail open)");
                self.metrics.mixer_fail_open.inc();
                "fail_open"
            }
            CheckOutcome::FailClose(reason) => {
                tracing::warn!(%reason, "mixer check failed; refusing the request (fail close)");
                self.metrics.mixer_fail_close.inc();
                "fail_close"
            }
            CheckOutcome::QuotaRefused { code, message } => {
                tracing::info!(code, %message, "request refused: quota");
                self.metrics.mixer_quota_refused.inc();
                "quota_refused"
            }
        };
        self.metrics
            .mixer_checks
            .get_or_create(&CheckLabels { result })
            .inc();
        outcome
    }

    async fn check_remote(&self, bag: &Bag, policy: &RequestPolicy) -> CheckOutcome {
        let req = CheckRequest {
            attributes: Some(compress(bag)),
            global_word_count: dictionary::words().len() as u32,
            deduplication_id: if policy.quotas.is_empty() {
                String::new()
            } else {
                // Mixer dedups quota allocations per id + quota name: one id per call.
                format!("{:032x}", rand::random::<u128>())
            },
            quotas: policy
                .quotas
                .iter()
                .map(|(name, amount)| {
                    (
                        name.clone(),
                        QuotaParams {
                            amount: *amount,
                            best_effort: false,
                        },
                    )
                })
                .collect(),
        };
        let mut grpc = self.grpc.clone();
        let failed = |reason: String| match policy.fail_policy {
            FailPolicy::FailOpen => CheckOutcome::FailOpen(reason),
            FailPolicy::FailClose => CheckOutcome::FailClose(reason),
        };
        match tokio::time::timeout(self.check_timeout, grpc.check(req)).await {
            Err(_) => failed("mixer check timed out".into()),
            Ok(Err(status)) => failed(format!("mixer check failed: {}", status.message())),
            Ok(Ok(resp)) => self.answer(bag, policy, resp.into_inner()),
        }
    }

    /// The outcome of a Check response; the precondition goes into the cache.
    fn answer(&self, bag: &Bag, policy: &RequestPolicy, resp: CheckResponse) -> CheckOutcome {
        let pre = resp.precondition.unwrap_or_default();
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
        if outcome != CheckOutcome::Allow {
            return outcome;
        }
        for (name, amount) in &policy.quotas {
            let Some(q) = resp.quotas.get(name) else {
                return CheckOutcome::QuotaRefused {
                    code: RESOURCE_EXHAUSTED,
                    message: format!("Quota is exhausted for: {name}"),
                };
            };
            if let Some(s) = q.status.as_ref().filter(|s| s.code != 0) {
                return CheckOutcome::QuotaRefused {
                    code: s.code,
                    message: s.message.clone(),
                };
            }
            if q.granted_amount < *amount {
                return CheckOutcome::QuotaRefused {
                    code: RESOURCE_EXHAUSTED,
                    message: format!("Quota is exhausted for: {name}"),
                };
            }
        }
        CheckOutcome::Allow
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
    /// Quotas: each name has `budget` units in all, granted while they last.
    #[derive(Clone, Default)]
    struct FakeMixer {
        checks: Arc<Mutex<usize>>,
        batches: Arc<Mutex<Vec<usize>>>,
        budget: Arc<Mutex<i64>>,
        requests: Arc<Mutex<Vec<CheckRequest>>>,
    }

    #[tonic::async_trait]
    impl Mixer for FakeMixer {
        async fn check(
            &self,
            request: Request<CheckRequest>,
        ) -> Result<Response<CheckResponse>, Status> {
            *self.checks.lock() += 1;
            let req = request.into_inner();
            let quotas = req
                .quotas
                .iter()
                .map(|(name, p)| {
                    let mut budget = self.budget.lock();
                    let granted = p.amount.min(*budget).max(0);
                    *budget -= granted;
                    (
                        name.clone(),
                        mesh_proto::istio::mixer::v1::check_response::QuotaResult {
                            valid_duration: None,
                            granted_amount: granted,
                            status: None,
                            referenced_attributes: None,
                        },
                    )
                })
                .collect();
            self.requests.lock().push(req);
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
                quotas,
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

    fn quota_policy(fail_policy: FailPolicy) -> RequestPolicy {
        RequestPolicy {
            skip_check: false,
            skip_report: false,
            quotas: vec![("requestcountquota".to_string(), 1)],
            fail_policy,
        }
    }

    #[tokio::test]
    async fn quota_past_the_budget_is_refused_with_istios_429_and_never_cached() {
        let fake = FakeMixer::default();
        *fake.budget.lock() = 2;
        let metrics = ProxyMetrics::default();
        let client = MixerClient::new(&serve(fake.clone()).await, metrics.clone()).unwrap();
        let bag = Bag::new().with("request.path", "/productpage");
        let policy = quota_policy(FailPolicy::FailOpen);
        assert_eq!(
            client.check_request(&bag, &policy).await,
            CheckOutcome::Allow
        );
        assert_eq!(
            client.check_request(&bag, &policy).await,
            CheckOutcome::Allow
        );
        let refused = client.check_request(&bag, &policy).await;
        assert_eq!(
            refused.rejection(),
            Some((
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED:Quota is exhausted for: requestcountquota".to_string()
            ))
        );
        // Every quota request went to Mixer, with the amount and best_effort false.
        assert_eq!(*fake.checks.lock(), 3);
        let sent = fake.requests.lock()[0].clone();
        assert_eq!(sent.quotas["requestcountquota"].amount, 1);
        assert!(!sent.quotas["requestcountquota"].best_effort);
        assert!(!sent.deduplication_id.is_empty());
        assert_eq!(metrics.mixer_quota_refused.get(), 1);
        // The cache was neither consulted nor counted for quota requests...
        assert_eq!(client.cache_stats(), CacheStats { hits: 0, misses: 0 });
        // ...but the precondition answer is cached for requests without quotas.
        assert_eq!(client.check(&bag).await, CheckOutcome::Allow);
        assert_eq!(*fake.checks.lock(), 3);
        assert_eq!(metrics.mixer_check_cache_hits.get(), 1);
        assert_eq!(metrics.mixer_check_cache_misses.get(), 0);
    }

    #[tokio::test]
    async fn unreachable_mixer_with_fail_close_refuses_with_503() {
        let metrics = ProxyMetrics::default();
        let client = MixerClient::new("http://127.0.0.1:1", metrics.clone()).unwrap();
        let outcome = client
            .check_request(&Bag::new(), &quota_policy(FailPolicy::FailClose))
            .await;
        let (status, body) = outcome.rejection().unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.starts_with("UNAVAILABLE:"), "{body}");
        assert_eq!(metrics.mixer_fail_close.get(), 1);
        assert_eq!(metrics.mixer_fail_open.get(), 0);
        // FAIL_OPEN lets the same request through.
        let outcome = client
            .check_request(&Bag::new(), &quota_policy(FailPolicy::FailOpen))
            .await;
        assert!(matches!(outcome, CheckOutcome::FailOpen(_)));
        assert_eq!(outcome.rejection(), None);
    }

    #[tokio::test]
    async fn slow_mixer_times_out_into_the_fail_policy() {
        // A listener that accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((c, _)) = listener.accept().await {
                conns.push(c);
            }
        });
        let client = MixerClient::with_check_timeout(
            &format!("http://{addr}"),
            ProxyMetrics::default(),
            Duration::from_millis(200),
        )
        .unwrap();
        let started = Instant::now();
        let outcome = client
            .check_request(&Bag::new(), &quota_policy(FailPolicy::FailClose))
            .await;
        assert!(matches!(outcome, CheckOutcome::FailClose(_)), "{outcome:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        held.abort();
    }
}
