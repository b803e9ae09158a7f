//! Forwarding with retries: each attempt picks an endpoint (load balancing, skipping ejected
//! hosts and, with `previous_hosts`, the ones already tried), passes the cluster's circuit
//! breakers, runs under the per-try timeout and reports its outcome to outlier detection. A
//! retriable outcome is retried after a jittered exponential back-off while attempts remain and
//! the request body could be kept for replay (bodies up to [`MAX_REPLAY_BODY`]).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, HeaderValue, TRANSFER_ENCODING};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};
use rand::Rng;
use rustls::ClientConfig;

use crate::cluster::{Cluster, ClusterState, HostOutcome, LbPolicy, Overflow};
use crate::routing::{AttemptOutcome, RetryPolicy};

use super::context::ProxyContext;
use super::response::Body;
use super::upstream::{UpstreamBody, UpstreamError};

/// Bodies up to this size are buffered so that a request can be retried; bigger (or unknown
/// size) bodies are streamed and the request gets a single attempt.
pub const MAX_REPLAY_BODY: usize = 64 * 1024;

/// Response flags this module adds (Envoy's).
pub mod flags {
    /// Upstream overflow: a circuit breaker refused the request.
    pub const UPSTREAM_OVERFLOW: &str = "UO";
    /// Retries exhausted on a connect failure.
    pub const CONNECT_FAILURE_RETRIES_EXHAUSTED: &str = "UF,URX";
    /// Retries exhausted on a reset.
    pub const RESET_RETRIES_EXHAUSTED: &str = "UC,URX";
    /// Retries exhausted on a per-try timeout.
    pub const TIMEOUT_RETRIES_EXHAUSTED: &str = "UT,URX";
    /// Retries exhausted; the last upstream response is passed on.
    pub const RETRIES_EXHAUSTED: &str = "URX";
}

/// A request body, streamed once or buffered for replay.
pub enum RequestBody {
    Buffered(Bytes),
    Streaming(Incoming),
}

/// Reads a small body for replay; a body that may exceed the limit stays streamed.
pub async fn prepare_body(body: Incoming, headers: &HeaderMap) -> Result<RequestBody, String> {
    let exact = body.size_hint().exact();
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let small = match (exact, declared) {
        (Some(n), _) => n as usize <= MAX_REPLAY_BODY,
        (None, Some(n)) => n as usize <= MAX_REPLAY_BODY,
        (None, None) => false,
    };
    if !small || headers.contains_key(TRANSFER_ENCODING) {
        return Ok(RequestBody::Streaming(body));
    }
    match Limited::new(body, MAX_REPLAY_BODY).collect().await {
        Ok(c) => Ok(RequestBody::Buffered(c.to_bytes())),
        Err(e) => Err(format!("reading the request body: {e}")),
    }
}

/// The request without its body, reusable across attempts.
pub struct RequestHead {
    pub method: http::Method,
    pub uri: http::Uri,
    pub version: http::Version,
    pub headers: HeaderMap,
}

impl RequestHead {
    fn build<B>(&self, body: B) -> Request<B> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }

    /// [`RequestHead::build`] for the last attempt: the URI and headers move, not copied.
    fn take<B>(&mut self, body: B) -> Request<B> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = std::mem::take(&mut self.uri);
        *req.version_mut() = self.version;
        *req.headers_mut() = std::mem::take(&mut self.headers);
        req
    }
}

/// Where and how to forward.
pub struct Target<'a> {
    pub cluster: &'a Cluster,
    pub endpoints: &'a [SocketAddr],
    pub state: Arc<ClusterState>,
    pub tls: Option<Arc<ClientConfig>>,
    pub retry: Option<&'a RetryPolicy>,
    /// The request's hash key, for consistent-hash clusters.
    pub hash: Option<u64>,
}

/// Why forwarding gave no upstream response.
#[derive(Debug)]
pub enum ForwardError {
    /// A circuit breaker refused the request.
    Overflow(Overflow),
    NoEndpoint,
    /// The last attempt failed; `exhausted` when retries were allowed and all used.
    Upstream {
        endpoint: SocketAddr,
        error: UpstreamError,
        exhausted: bool,
    },
    PerTryTimeout {
        endpoint: SocketAddr,
        exhausted: bool,
    },
}

/// An upstream response and how it was obtained.
pub struct Forwarded {
    /// The upstream response; its body holds the request's circuit breaker admission until it
    /// ends (the connection is busy until then).
    pub response: Response<Body>,
    pub endpoint: SocketAddr,
    /// Retries made (0: the first attempt answered).
    pub retries: u32,
    /// The response was itself retriable but no retry was left.
    pub exhausted: bool,
}

fn grpc_status(h: &HeaderMap) -> Option<u32> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Sends the request, retrying as `target.retry` says.
pub async fn forward(
    ctx: &ProxyContext,
    target: Target<'_>,
    mut head: RequestHead,
    body: RequestBody,
) -> Result<Forwarded, ForwardError> {
    if target.cluster.max_requests_per_connection == Some(1) {
        head.headers
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    let (mut streaming, replay) = match body {
        RequestBody::Streaming(b) => (Some(b), None),
        RequestBody::Buffered(b) => (None, Some(b)),
    };
    let replayable = replay.is_some();
    let retries_allowed = match target.retry {
        Some(p) if replayable => p.num_retries,
        _ => 0,
    };
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut retry = 0u32;
    let mut _retry_token = None;
    loop {
        let avoid: &[SocketAddr] = if target.retry.is_some_and(|p| p.avoid_previous_hosts) {
            &tried
        } else {
            &[]
        };
        let roll: u64 = match (target.cluster.lb, target.hash) {
            (LbPolicy::RingHash, Some(key)) => key,
            _ => rand::rng().random(),
        };
        let Some(endpoint) = target
            .state
            .pick(target.endpoints, target.cluster.lb, avoid, roll)
        else {
            return Err(ForwardError::NoEndpoint);
        };
        let admission = target.state.admit().await.map_err(ForwardError::Overflow)?;
        if retry < retries_allowed && target.retry.is_some_and(|p| p.avoid_previous_hosts) {
            // Only a later attempt that avoids previous hosts looks at it.
            tried.push(endpoint);
        }
        target.state.host_started(endpoint);
        // No retry can follow this attempt: its request takes the head.
        let last = retry >= retries_allowed;
        let req = match streaming.take() {
            Some(b) if last => head.take(UpstreamBody::Streaming(b)),
            Some(b) => head.build(UpstreamBody::Streaming(b)),
            None if last => head.take(UpstreamBody::buffered(replay.clone().unwrap_or_default())),
            None => head.build(UpstreamBody::buffered(replay.clone().unwrap_or_default())),
        };
        // The admission is held by the response body until it ends.
        let sent = ctx
            .upstream
            .send_held(endpoint, target.tls.clone(), req, Some(admission));
        let per_try = target.retry.and_then(|p| p.per_try_timeout);
        let result = match per_try {
            None => Some(sent.await),
            Some(limit) => tokio::time::timeout(limit, sent).await.ok(),
        };
        let outcome = match &result {
            None => AttemptOutcome::PerTryTimeout,
            Some(Ok(r)) => AttemptOutcome::Response {
                status: r.status().as_u16(),
                grpc: grpc_status(r.headers()),
            },
            Some(Err(UpstreamError::Connect(_))) => AttemptOutcome::ConnectFailure,
            Some(Err(UpstreamError::Request(_))) => AttemptOutcome::Reset,
        };
        let host_outcome = match outcome {
            AttemptOutcome::Response { status, .. } => HostOutcome::Status(status),
            _ => HostOutcome::LocalFailure,
        };
        if target
            .state
            .host_finished(endpoint, host_outcome, target.cluster.outlier.as_ref())
        {
            ctx.metrics.upstream_error("outlier_ejection");
        }
        let retriable = target
            .retry
            .is_some_and(|p| p.retry_on.should_retry(outcome));
        let exhausted = retriable && retry >= retries_allowed && target.retry.is_some();
        if retriable && retry < retries_allowed {
            match target.state.try_retry() {
                Some(token) => {
                    // This attempt is over: its slot is free during the back-off.
                    drop(result);
                    _retry_token = Some(token);
                    retry += 1;
                    ctx.metrics.upstream_error("retry");
                    let wait = target
                        .retry
                        .map(|p| p.backoff(retry, rand::rng().random()))
                        .unwrap_or_default();
                    tracing::debug!(
                        cluster = %target.cluster.name,
                        %endpoint,
                        retry,
                        wait_ms = wait.as_millis() as u64,
                        outcome = ?outcome,
                        "retrying upstream request"
                    );
                    Box::pin(tokio::time::sleep(wait)).await;
                    continue;
                }
                None => {
                    ctx.metrics.upstream_error("retry_overflow");
                }
            }
        }
        return match result {
            None => Err(ForwardError::PerTryTimeout {
                endpoint,
                exhausted,
            }),
            Some(Err(error)) => Err(ForwardError::Upstream {
                endpoint,
                error,
                exhausted,
            }),
            Some(Ok(response)) => Ok(Forwarded {
                response,
                endpoint,
                retries: retry,
                exhausted,
            }),
        };
    }
}
