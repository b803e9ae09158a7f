//! Check and Report calls to Mixer.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use http::StatusCode;
use mesh_proto::attributes::{Bag, compress, compress_report};
use mesh_proto::dictionary;
use mesh_proto::istio::mixer::v1::CheckRequest;
use mesh_proto::istio::mixer::v1::check_request::QuotaParams;
use mesh_proto::istio::mixer::v1::check_response::PreconditionResult;
use mesh_proto::istio::mixer::v1::mixer_client::MixerClient as GrpcMixer;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tonic::transport::Channel;

use super::cache::{CacheStats, CheckCache, DEFAULT_CAPACITY};
use super::config::{FailPolicy, RequestPolicy};
use super::quota::{Ask, Granted, Local, QuotaPools, Refill};
use crate::admin::{CheckLabels, ProxyMetrics};

/// How long a Check may take before the fail policy decides (Istio's mixer client gives its
/// gRPC Check calls 5 s).
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// gRPC `RESOURCE_EXHAUSTED`.
const RESOURCE_EXHAUSTED: i32 = 8;
/// Records per Report call at most; a full batch is sent at once.
const REPORT_BATCH: usize = 100;
/// How often whatever is buffered is sent.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Records buffered at most (while Mixer is slow or away); more are dropped and counted.
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

/// What a quota Check answered.
struct Fetched {
    precondition: CheckOutcome,
    granted: Granted,
    /// A non-OK status Mixer gave the quota.
    status: Option<(i32, String)>,
}

/// Istio's refusal of an exhausted quota.
fn exhausted(name: &str) -> CheckOutcome {
    CheckOutcome::QuotaRefused {
        code: RESOURCE_EXHAUSTED,
        message: format!("Quota is exhausted for: {name}"),
    }
}

/// A Mixer client with its Check cache and quota pools. Cheap to clone (clones share them).
#[derive(Clone, Debug)]
pub struct MixerClient {
    grpc: GrpcMixer<Channel>,
    reports: Arc<ReportBuffer>,
    report_full: Arc<Notify>,
    metrics: ProxyMetrics,
    cache: Arc<CheckCache<CheckOutcome>>,
    quotas: Arc<QuotaPools>,
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
        let reports = Arc::new(ReportBuffer::default());
        let report_full = Arc::new(Notify::new());
        tokio::spawn(report_loop(
            grpc.clone(),
            Arc::downgrade(&reports),
            report_full.clone(),
            metrics.clone(),
        ));
        Ok(MixerClient {
            grpc,
            reports,
            report_full,
            metrics,
            cache: Arc::new(CheckCache::new(DEFAULT_CAPACITY)),
            quotas: Arc::new(QuotaPools::new()),
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

    /// Checks a request. The precondition may come from the Check cache (an earlier answer
    /// whose referenced attributes agree with `bag`); each quota (`name → amount`) is served from
    /// its prefetch pool when it holds enough units Mixer granted ahead, else Mixer is asked
    /// (see the `quota` module). A quota is refused (Istio's 429) when Mixer granted less than
    /// asked, and for a short while after, without asking. Mixer unreachable or slower than the
    /// Check timeout: the policy's FAIL_OPEN lets the request through, FAIL_CLOSE refuses it.
    pub async fn check_request(&self, bag: &Bag, policy: &RequestPolicy) -> CheckOutcome {
        let mut outcome = match self.cache.lookup(bag, Instant::now()) {
            Some(cached) => {
                self.metrics.mixer_check_cache_hits.inc();
                cached
            }
            None => {
                self.metrics.mixer_check_cache_misses.inc();
                self.check_remote(bag, policy).await
            }
        };
        if outcome == CheckOutcome::Allow {
            for (name, amount) in &policy.quotas {
                let quota = self.quota(bag, policy, name, *amount).await;
                if quota != CheckOutcome::Allow {
                    outcome = quota;
                    break;
                }
            }
        }
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

    /// One quota of a request: from its pool, else from Mixer.
    async fn quota(
        &self,
        bag: &Bag,
        policy: &RequestPolicy,
        name: &str,
        amount: i64,
    ) -> CheckOutcome {
        match self.quotas.take(name, amount, bag, Instant::now()) {
            Local::Served(refill) => {
                if let Some(refill) = refill {
                    self.spawn_refill(bag, name, refill);
                }
                return CheckOutcome::Allow;
            }
            Local::Refused => return exhausted(name),
            Local::Ask => {}
        }
        let lock = self.quotas.fetch_lock(name);
        let _fetching = lock.lock().await;
        let ask = match self.quotas.retake(name, amount, bag, Instant::now()) {
            Ok(true) => return CheckOutcome::Allow,
            Ok(false) => return exhausted(name),
            Err(ask) => ask,
        };
        let fetched = match self.fetch_quota(bag, name, ask).await {
            Ok(f) => f,
            Err(reason) => {
                return match policy.fail_policy {
                    FailPolicy::FailOpen => CheckOutcome::FailOpen(reason),
                    FailPolicy::FailClose => CheckOutcome::FailClose(reason),
                };
            }
        };
        if let Some((code, message)) = fetched.status {
            return CheckOutcome::QuotaRefused { code, message };
        }
        let now = Instant::now();
        let pooled = self
            .quotas
            .add(name, bag, ask.amount, &fetched.granted, now);
        if fetched.precondition != CheckOutcome::Allow {
            return fetched.precondition;
        }
        let served = if pooled {
            self.quotas.retake(name, amount, bag, now) == Ok(true)
        } else {
            fetched.granted.amount >= amount
        };
        if served {
            CheckOutcome::Allow
        } else {
            exhausted(name)
        }
    }

    /// Asks Mixer for a pool's refill off the request path (holding the quota's fetch lock).
    fn spawn_refill(&self, bag: &Bag, name: &str, refill: Refill) {
        let client = self.clone();
        let bag = bag.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let Refill { guard, amount } = refill;
            let ask = Ask {
                amount,
                best_effort: true,
            };
            match client.fetch_quota(&bag, &name, ask).await {
                Ok(f) if f.status.is_none() => {
                    client
                        .quotas
                        .add(&name, &bag, amount, &f.granted, Instant::now());
                }
                Ok(f) => {
                    tracing::debug!(quota = %name, status = ?f.status, "quota refill refused");
                }
                Err(reason) => {
                    tracing::debug!(quota = %name, %reason, "quota refill failed");
                }
            }
            drop(guard);
        });
    }

    /// A Check carrying one quota request; its precondition answer refreshes the cache.
    async fn fetch_quota(&self, bag: &Bag, name: &str, ask: Ask) -> Result<Fetched, String> {
        let req = CheckRequest {
            attributes: Some(compress(bag)),
            global_word_count: dictionary::words().len() as u32,
            // Mixer dedups quota allocations per id + quota name: one id per call.
            deduplication_id: format!("{:032x}", rand::random::<u128>()),
            quotas: [(
                name.to_string(),
                QuotaParams {
                    amount: ask.amount,
                    best_effort: ask.best_effort,
                },
            )]
            .into_iter()
            .collect(),
        };
        let mut grpc = self.grpc.clone();
        let resp = match tokio::time::timeout(self.check_timeout, grpc.check(req)).await {
            Err(_) => return Err("mixer check timed out".into()),
            Ok(Err(status)) => return Err(format!("mixer check failed: {}", status.message())),
            Ok(Ok(resp)) => resp.into_inner(),
        };
        let precondition = self.precondition(bag, resp.precondition.clone().unwrap_or_default());
        let Some(q) = resp.quotas.get(name) else {
            return Ok(Fetched {
                precondition,
                granted: Granted::default(),
                status: None,
            });
        };
        Ok(Fetched {
            precondition,
            granted: Granted {
                amount: q.granted_amount.max(0),
                valid_duration: q
                    .valid_duration
                    .and_then(|d| Duration::try_from(d).ok())
                    .unwrap_or_default(),
                referenced: q.referenced_attributes.clone().unwrap_or_default(),
            },
            status: q
                .status
                .as_ref()
                .filter(|s| s.code != 0)
                .map(|s| (s.code, s.message.clone())),
        })
    }

    /// The precondition Check (no quotas).
    async fn check_remote(&self, bag: &Bag, policy: &RequestPolicy) -> CheckOutcome {
        let req = CheckRequest {
            attributes: Some(compress(bag)),
            global_word_count: dictionary::words().len() as u32,
            deduplication_id: String::new(),
            quotas: Default::default(),
        };
        let mut grpc = self.grpc.clone();
        let failed = |reason: String| match policy.fail_policy {
            FailPolicy::FailOpen => CheckOutcome::FailOpen(reason),
            FailPolicy::FailClose => CheckOutcome::FailClose(reason),
        };
        match tokio::time::timeout(self.check_timeout, grpc.check(req)).await {
            Err(_) => failed("mixer check timed out".into()),
            Ok(Err(status)) => failed(format!("mixer check failed: {}", status.message())),
            Ok(Ok(resp)) => {
                self.precondition(bag, resp.into_inner().precondition.unwrap_or_default())
            }
        }
    }

    /// The outcome of a precondition answer, which goes into the cache.
    fn precondition(&self, bag: &Bag, pre: PreconditionResult) -> CheckOutcome {
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

    /// Buffers a Report record (sent with others, off the request path); dropped (and
    /// counted) when [`REPORT_QUEUE`] records are already waiting.
    pub fn report(&self, bag: Bag) {
        let mut bags = self.reports.bags.lock();
        if bags.len() >= REPORT_QUEUE {
            drop(bags);
            self.metrics.mixer_reports_dropped.inc();
            return;
        }
        bags.push(bag);
        if bags.len().is_multiple_of(REPORT_BATCH) {
            self.report_full.notify_one();
        }
    }
}

/// Report records waiting to be sent: filled on the request path, emptied by [`report_loop`].
#[derive(Debug, Default)]
struct ReportBuffer {
    bags: Mutex<Vec<Bag>>,
}

/// Sends the buffered records: every full batch of [`REPORT_BATCH`] as soon as it is full, and
/// everything buffered every [`REPORT_INTERVAL`]. Ends once the client is gone.
async fn report_loop(
    mut grpc: GrpcMixer<Channel>,
    buffer: Weak<ReportBuffer>,
    full: Arc<Notify>,
    metrics: ProxyMetrics,
) {
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let everything = tokio::select! {
            () = full.notified() => false,
            _ = tick.tick() => true,
        };
        let Some(buffer) = buffer.upgrade() else {
            return;
        };
        let batch: Vec<Bag> = {
            let mut bags = buffer.bags.lock();
            if everything {
                std::mem::take(&mut *bags)
            } else {
                let n = bags.len() - bags.len() % REPORT_BATCH;
                bags.drain(..n).collect()
            }
        };
        drop(buffer);
        for chunk in batch.chunks(REPORT_BATCH) {
            send_report(&mut grpc, chunk, &metrics).await;
        }
    }
}

/// One Report call of `records`, delta-encoded; failures drop (and count) the records.
async fn send_report(grpc: &mut GrpcMixer<Channel>, records: &[Bag], metrics: &ProxyMetrics) {
    let req = compress_report(records);
    let n = records.len() as u64;
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
                    let granted = if p.best_effort || p.amount <= *budget {
                        p.amount.min(*budget).max(0)
                    } else {
                        0
                    };
                    *budget -= granted;
                    (
                        name.clone(),
                        mesh_proto::istio::mixer::v1::check_response::QuotaResult {
                            valid_duration: Some(prost_types::Duration {
                                seconds: 60,
                                nanos: 0,
                            }),
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
    async fn the_report_buffer_is_bounded_and_counts_what_it_drops() {
        let fake = FakeMixer::default();
        let metrics = ProxyMetrics::default();
        let client = MixerClient::new(&serve(fake.clone()).await, metrics.clone()).unwrap();
        // Nothing awaits in between: the sender cannot run, the buffer fills.
        for _ in 0..REPORT_QUEUE + 7 {
            client.report(Bag::new());
        }
        assert_eq!(metrics.mixer_reports_dropped.get(), 7);
        let sent = metrics.mixer_reports_sent.clone();
        poll("the buffered records sent", || {
            sent.get() == REPORT_QUEUE as u64
        })
        .await;
        assert!(fake.batches.lock().iter().all(|n| *n <= REPORT_BATCH));
        assert_eq!(metrics.mixer_reports_dropped.get(), 7);
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
    async fn quota_past_the_budget_is_refused_with_istios_429_without_a_round_trip() {
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
        // The precondition Check, the first quota call (exactly 1, not best effort), then one
        // best-effort refill that was granted the 1 left.
        let checks = *fake.checks.lock();
        assert_eq!(checks, 3);
        let sent = fake.requests.lock().clone();
        assert!(sent[0].quotas.is_empty());
        assert_eq!(sent[1].quotas["requestcountquota"].amount, 1);
        assert!(!sent[1].quotas["requestcountquota"].best_effort);
        assert!(!sent[1].deduplication_id.is_empty());
        assert!(sent[2].quotas["requestcountquota"].best_effort);
        assert!(sent[2].quotas["requestcountquota"].amount >= crate::mixer::MIN_PREFETCH);
        assert_ne!(sent[1].deduplication_id, sent[2].deduplication_id);
        // Past the budget: Istio's 429, answered without asking Mixer.
        let refused = client.check_request(&bag, &policy).await;
        assert_eq!(
            refused.rejection(),
            Some((
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED:Quota is exhausted for: requestcountquota".to_string()
            ))
        );
        assert_eq!(*fake.checks.lock(), checks);
        assert_eq!(metrics.mixer_quota_refused.get(), 1);
        // Exactly the budget was admitted.
        assert_eq!(*fake.budget.lock(), 0);
        // The precondition came from the cache after the first Check.
        assert_eq!(client.check(&bag).await, CheckOutcome::Allow);
        assert_eq!(*fake.checks.lock(), checks);
        assert_eq!(metrics.mixer_check_cache_misses.get(), 1);
    }

    #[tokio::test]
    async fn quota_requests_within_the_budget_make_far_fewer_calls() {
        let fake = FakeMixer::default();
        *fake.budget.lock() = 10_000;
        let client = MixerClient::new(&serve(fake.clone()).await, ProxyMetrics::default()).unwrap();
        let bag = Bag::new().with("request.path", "/productpage");
        let policy = quota_policy(FailPolicy::FailClose);
        for i in 0..300 {
            assert_eq!(
                client.check_request(&bag, &policy).await,
                CheckOutcome::Allow,
                "request {i}"
            );
        }
        let calls = *fake.checks.lock();
        eprintln!("{calls} Mixer calls for 300 quota requests");
        assert!(calls <= 30, "{calls} Mixer calls for 300 requests");
        // Every request was charged against a unit Mixer granted.
        let granted = 10_000 - *fake.budget.lock();
        assert!(granted >= 300, "granted {granted}");
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
