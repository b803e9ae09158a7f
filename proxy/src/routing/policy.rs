//! Per-route policies decoded from RDS: header operations, fault injection, retries, mirroring
//! and CORS. Plain data; the HTTP path (`crate::http`) carries them out.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

/// A share of requests, in parts per million (Envoy's `FractionalPercent` normalised).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PerMillion(pub u32);

impl PerMillion {
    pub const ALL: PerMillion = PerMillion(1_000_000);

    /// `numerator / denominator` (denominator 100, 10 000 or 1 000 000), capped at 100%.
    pub fn from_fraction(numerator: u32, denominator: u32) -> PerMillion {
        let scaled = u64::from(numerator) * 1_000_000 / u64::from(denominator.max(1));
        PerMillion(scaled.min(1_000_000) as u32)
    }

    /// Whether a uniformly random `roll` (any `u32`) falls inside the share.
    pub fn hits(self, roll: u32) -> bool {
        roll % 1_000_000 < self.0
    }
}

/// Header operations of a route (or of one weighted cluster): removals first, then additions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HeaderOps {
    /// (name, value, append): `append` adds another value, otherwise the value replaces any.
    pub add: Vec<(String, String, bool)>,
    pub remove: Vec<String>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    /// Applies the operations to `headers` (names and values were validated when decoded).
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                headers.remove(n);
            }
        }
        for (name, value, append) in &self.add {
            let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) else {
                continue;
            };
            if *append {
                headers.append(n, v);
            } else {
                headers.insert(n, v);
            }
        }
    }
}

/// Request and response header operations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HeaderPolicy {
    pub request: HeaderOps,
    pub response: HeaderOps,
}

/// Envoy `HTTPFault`: delay and/or abort a share of requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    pub delay: Option<(Duration, PerMillion)>,
    /// (HTTP status, share).
    pub abort: Option<(u16, PerMillion)>,
}

/// The conditions of Envoy's `retry_on` the proxy acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetryOn {
    /// `5xx`: any 5xx response, connect failure, reset or per-try timeout.
    pub server_error: bool,
    /// `gateway-error`: 502, 503, 504, connect failure, reset or per-try timeout.
    pub gateway_error: bool,
    /// `connect-failure` (and `refused-stream`, the HTTP/2 equivalent).
    pub connect_failure: bool,
    /// `reset`: the upstream closed or reset without a response, or the per-try timeout hit.
    pub reset: bool,
    /// `retriable-4xx`: 409.
    pub retriable_4xx: bool,
    /// `retriable-status-codes`: the listed codes.
    pub status_codes: Vec<u16>,
    /// `unavailable` / `cancelled`: gRPC status 14 / 1 in the response headers.
    pub grpc_unavailable: bool,
    pub grpc_cancelled: bool,
}

/// What one attempt ended with, as the retry and outlier logic see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A response with this status (and gRPC status header, if any).
    Response {
        status: u16,
        grpc: Option<u32>,
    },
    ConnectFailure,
    /// The connection closed or reset before a response.
    Reset,
    PerTryTimeout,
}

impl RetryOn {
    /// Parses Envoy's comma-separated `retry_on`; unknown conditions are ignored (as Envoy does).
    pub fn parse(retry_on: &str, codes: &[u16]) -> RetryOn {
        let mut r = RetryOn::default();
        for part in retry_on.split(',').map(str::trim) {
            match part {
                "5xx" => r.server_error = true,
                "gateway-error" => r.gateway_error = true,
                "connect-failure" | "refused-stream" => r.connect_failure = true,
                "reset" => r.reset = true,
                "retriable-4xx" => r.retriable_4xx = true,
                "retriable-status-codes" => r.status_codes = codes.to_vec(),
                "unavailable" => r.grpc_unavailable = true,
                "cancelled" => r.grpc_cancelled = true,
                _ => {}
            }
        }
        r
    }

    /// Whether an attempt that ended with `o` should be retried.
    pub fn should_retry(&self, o: AttemptOutcome) -> bool {
        match o {
            AttemptOutcome::ConnectFailure => {
                self.connect_failure || self.server_error || self.gateway_error || self.reset
            }
            AttemptOutcome::Reset | AttemptOutcome::PerTryTimeout => {
                self.server_error || self.gateway_error || self.reset
            }
            AttemptOutcome::Response { status, grpc } => {
                (self.server_error && (500..600).contains(&status))
                    || (self.gateway_error && matches!(status, 502..=504))
                    || (self.retriable_4xx && status == 409)
                    || self.status_codes.contains(&status)
                    || (self.grpc_unavailable && grpc == Some(14))
                    || (self.grpc_cancelled && grpc == Some(1))
            }
        }
    }
}

/// Envoy `RetryPolicy` as the proxy runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryPolicy {
    pub num_retries: u32,
    pub retry_on: RetryOn,
    pub per_try_timeout: Option<Duration>,
    /// Exponential back-off with full jitter between `base_interval` and `max_interval`.
    pub base_interval: Duration,
    pub max_interval: Duration,
    /// `previous_hosts` host predicate: a retry avoids the endpoints already tried.
    pub avoid_previous_hosts: bool,
}

impl RetryPolicy {
    /// Envoy's default back-off base (25 ms); the maximum defaults to ten times the base.
    pub const BASE_INTERVAL: Duration = Duration::from_millis(25);

    /// The wait before retry number `retry` (1-based) for a random `roll`: uniform in
    /// `[0, min((2^retry - 1) * base, max)]`, Envoy's fully jittered exponential back-off.
    pub fn backoff(&self, retry: u32, roll: u32) -> Duration {
        let base = self.base_interval.as_millis().max(1) as u64;
        let ceiling = base
            .saturating_mul((1u64 << retry.clamp(1, 16)) - 1)
            .min(self.max_interval.as_millis().max(1) as u64);
        Duration::from_millis(u64::from(roll) % (ceiling + 1))
    }
}

/// Envoy route `hash_policy`: what a consistent-hash cluster hashes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum HashPolicy {
    Header(String),
    Cookie(String),
    SourceIp,
    QueryParameter(String),
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl HashPolicy {
    /// The hash key of a request under the first policy that finds its input; `None` when none
    /// does (the cluster then picks at random).
    pub fn key(
        policies: &[HashPolicy],
        headers: &HeaderMap,
        query: Option<&str>,
        source: std::net::IpAddr,
    ) -> Option<u64> {
        policies.iter().find_map(|p| match p {
            HashPolicy::Header(name) => headers.get(name.as_str()).map(|v| fnv(v.as_bytes())),
            HashPolicy::Cookie(name) => headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|c| c.trim().split_once('='))
                .find(|(k, _)| k == name)
                .map(|(_, v)| fnv(v.as_bytes())),
            HashPolicy::SourceIp => Some(fnv(source.to_string().as_bytes())),
            HashPolicy::QueryParameter(name) => query?
                .split('&')
                .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                .find(|(k, _)| k == name)
                .map(|(_, v)| fnv(v.as_bytes())),
        })
    }
}

/// Envoy `RequestMirrorPolicy`: a copy of the request goes to `cluster` (fire and forget).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mirror {
    pub cluster: String,
    pub share: PerMillion,
}

/// CORS (Envoy `CorsPolicy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cors {
    pub allow_origins: Vec<OriginMatch>,
    pub allow_methods: String,
    pub allow_headers: String,
    pub expose_headers: String,
    pub max_age: String,
    pub allow_credentials: bool,
}

/// How an `Origin` is matched.
#[derive(Debug, Clone, Serialize)]
pub enum OriginMatch {
    Exact(String),
    Prefix(String),
    Regex(#[serde(serialize_with = "ser_regex")] regex::Regex),
}

impl PartialEq for OriginMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (OriginMatch::Exact(a), OriginMatch::Exact(b)) => a == b,
            (OriginMatch::Prefix(a), OriginMatch::Prefix(b)) => a == b,
            (OriginMatch::Regex(a), OriginMatch::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}
impl Eq for OriginMatch {}

impl OriginMatch {
    pub fn matches(&self, origin: &str) -> bool {
        match self {
            OriginMatch::Exact(e) => e == "*" || origin == e,
            OriginMatch::Prefix(p) => origin.starts_with(p.as_str()),
            OriginMatch::Regex(r) => r.is_match(origin),
        }
    }
}

impl Cors {
    /// Whether `origin` is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|m| m.matches(origin))
    }
}

fn ser_regex<S: serde::Serializer>(r: &regex::Regex, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_million_normalises_and_rolls() {
        assert_eq!(PerMillion::from_fraction(10, 100), PerMillion(100_000));
        assert_eq!(
            PerMillion::from_fraction(5_000, 1_000_000),
            PerMillion(5_000)
        );
        assert_eq!(PerMillion::from_fraction(200, 100), PerMillion::ALL);
        assert!(PerMillion::ALL.hits(999_999));
        assert!(!PerMillion(0).hits(0));
        let hits = (0..1_000_000u32)
            .step_by(7)
            .filter(|r| PerMillion(250_000).hits(*r))
            .count();
        assert!((35_000..36_500).contains(&hits), "{hits}");
    }

    #[test]
    fn retry_conditions() {
        let r = RetryOn::parse(
            "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
            &[503],
        );
        assert!(r.should_retry(AttemptOutcome::ConnectFailure));
        assert!(r.should_retry(AttemptOutcome::Response {
            status: 503,
            grpc: None
        }));
        assert!(!r.should_retry(AttemptOutcome::Response {
            status: 500,
            grpc: None
        }));
        assert!(r.should_retry(AttemptOutcome::Response {
            status: 200,
            grpc: Some(14)
        }));
        assert!(!r.should_retry(AttemptOutcome::Reset));
        let g = RetryOn::parse("gateway-error", &[]);
        assert!(g.should_retry(AttemptOutcome::Response {
            status: 504,
            grpc: None
        }));
        assert!(!g.should_retry(AttemptOutcome::Response {
            status: 500,
            grpc: None
        }));
        assert!(g.should_retry(AttemptOutcome::PerTryTimeout));
        let f = RetryOn::parse("5xx,retriable-4xx", &[]);
        assert!(f.should_retry(AttemptOutcome::Response {
            status: 500,
            grpc: None
        }));
        assert!(f.should_retry(AttemptOutcome::Response {
            status: 409,
            grpc: None
        }));
        assert!(!f.should_retry(AttemptOutcome::Response {
            status: 404,
            grpc: None
        }));
    }

    #[test]
    fn backoff_is_jittered_and_bounded() {
        let p = RetryPolicy {
            num_retries: 3,
            retry_on: RetryOn::default(),
            per_try_timeout: None,
            base_interval: Duration::from_millis(25),
            max_interval: Duration::from_millis(250),
            avoid_previous_hosts: true,
        };
        for roll in [0u32, 1, 17, 49, 1000, u32::MAX] {
            assert!(p.backoff(1, roll) <= Duration::from_millis(25));
            assert!(p.backoff(10, roll) <= Duration::from_millis(250));
        }
        assert_ne!(
            p.backoff(3, 10),
            p.backoff(3, 11),
            "jitter follows the roll"
        );
    }

    #[test]
    fn hash_keys_from_header_cookie_query_or_source() {
        let ip: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-user", HeaderValue::from_static("jason"));
        h.insert("cookie", HeaderValue::from_static("a=1; session=abc"));
        let by = |p: HashPolicy| HashPolicy::key(&[p], &h, Some("u=7&x"), ip);
        assert_eq!(by(HashPolicy::Header("x-user".into())), Some(fnv(b"jason")));
        assert_eq!(by(HashPolicy::Cookie("session".into())), Some(fnv(b"abc")));
        assert_eq!(by(HashPolicy::QueryParameter("u".into())), Some(fnv(b"7")));
        assert_eq!(by(HashPolicy::SourceIp), Some(fnv(b"10.0.0.1")));
        assert_eq!(by(HashPolicy::Header("x-none".into())), None);
        // The first policy with an input wins.
        let both = [HashPolicy::Header("x-none".into()), HashPolicy::SourceIp];
        assert_eq!(HashPolicy::key(&both, &h, None, ip), Some(fnv(b"10.0.0.1")));
    }

    #[test]
    fn header_ops_remove_then_set_or_append() {
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("x-gone", HeaderValue::from_static("1"));
        let ops = HeaderOps {
            add: vec![
                ("x-a".into(), "2".into(), true),
                ("x-b".into(), "3".into(), false),
            ],
            remove: vec!["x-gone".into()],
        };
        ops.apply(&mut h);
        assert_eq!(h.get_all("x-a").iter().count(), 2);
        assert_eq!(h["x-b"], "3");
        assert!(h.get("x-gone").is_none());
    }
}
