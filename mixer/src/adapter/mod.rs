//! The adapters Mixer runs in-process, built from handler params.
//!
//! - [`denier`]: always answers a configured status.
//! - [`list`]: `listchecker`: a value (from a `listentry` instance) must be (whitelist) or must
//!   not be (blacklist) in a static list of strings or IP ranges.
//!
//! - [`quota`]: the `quotas[]` params the quota adapters share.
//! - [`memquota`]: quotas counted in memory.
//! - [`redisquota`]: quotas counted in Redis (shared by every replica).
//! - [`prometheus`]: `metric` instances → Prometheus series on Mixer's `/metrics`.
//! - [`stdio`]: `logentry` instances → lines on stdout/stderr or a (rotated) file.
//! - [`accesslog`]: the proxy's access-log shape for Istio's standard `accesslog` instance.
//! - [`tracespan`]: `opentelemetry`: `tracespan` instances → spans over OTLP/gRPC.
//!
//! Any other adapter is accepted as [`Adapter::Ignored`]: its actions do nothing.

pub mod accesslog;
pub mod denier;
pub mod list;
pub mod memquota;
pub mod prometheus;
pub mod quota;
pub mod redisquota;
pub mod stdio;
pub mod tracespan;

use std::time::Duration;

use serde_json::Value as Json;

/// google.rpc.Code names, by number.
pub const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The name of a google.rpc code (`"CODE_42"` for unknown ones).
pub fn code_name(code: i32) -> String {
    usize::try_from(code)
        .ok()
        .and_then(|i| CODE_NAMES.get(i))
        .map_or_else(|| format!("CODE_{code}"), |s| s.to_string())
}

/// An adapter's answer for one Check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// google.rpc code; 0 allows.
    pub code: i32,
    pub message: String,
    pub valid_duration: Duration,
    pub valid_use_count: i32,
}

/// A handler's adapter, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adapter {
    Denier(denier::Params),
    List(list::Params),
    MemQuota(quota::Limits),
    RedisQuota(redisquota::Params),
    Prometheus(prometheus::Params),
    Stdio(stdio::Params),
    OpenTelemetry(tracespan::Params),
    /// An adapter Mixer does not run; its actions are accepted and do nothing.
    Ignored {
        adapter: String,
    },
}

impl Adapter {
    /// Builds the adapter `name` from its handler `params`.
    pub fn build(name: &str, params: Option<&Json>) -> Result<Adapter, String> {
        let empty = Json::Null;
        let params = params.unwrap_or(&empty);
        Ok(match name {
            "denier" => Adapter::Denier(denier::Params::parse(params)?),
            "listchecker" | "list" => Adapter::List(list::Params::parse(params)?),
            "memquota" => Adapter::MemQuota(quota::Limits::parse(params, true)?),
            "redisquota" => Adapter::RedisQuota(redisquota::Params::parse(params)?),
            "prometheus" => Adapter::Prometheus(prometheus::Params::parse(params)?),
            "stdio" => Adapter::Stdio(stdio::Params::parse(params)?),
            "opentelemetry" | "otlp" => Adapter::OpenTelemetry(tracespan::Params::parse(params)?),
            other => Adapter::Ignored {
                adapter: other.to_string(),
            },
        })
    }

    /// The instance template this adapter reads, if it reads one.
    pub fn template(&self) -> Option<&'static str> {
        match self {
            Adapter::List(_) => Some("listentry"),
            Adapter::MemQuota(_) | Adapter::RedisQuota(_) => Some("quota"),
            Adapter::Prometheus(_) => Some("metric"),
            Adapter::Stdio(_) => Some("logentry"),
            Adapter::OpenTelemetry(_) => Some("tracespan"),
            _ => None,
        }
    }
}

/// Reads an integer parameter.
pub(crate) fn int_param(p: &Json, names: &[&str], default: i64) -> Result<i64, String> {
    match names.iter().find_map(|n| p.get(*n)) {
        None | Some(Json::Null) => Ok(default),
        Some(Json::Number(n)) => n
            .as_i64()
            .ok_or_else(|| format!("params.{} {n} is not an integer", names[0])),
        Some(Json::String(s)) => s
            .parse()
            .map_err(|_| format!("params.{} {s:?} is not an integer", names[0])),
        Some(other) => Err(format!("params.{} {other} is not an integer", names[0])),
    }
}

/// Reads a duration parameter (`"5s"`, `"100ms"`, ...).
pub(crate) fn duration_param(
    p: &Json,
    names: &[&str],
    default: Duration,
) -> Result<Duration, String> {
    match names.iter().find_map(|n| p.get(*n)) {
        None | Some(Json::Null) => Ok(default),
        Some(Json::String(s)) => {
            parse_duration(s).ok_or_else(|| format!("params.{} {s:?} is not a duration", names[0]))
        }
        Some(other) => Err(format!("params.{} {other} is not a duration", names[0])),
    }
}

/// Parses a protobuf-JSON style duration: `"5s"`, `"1.5s"`, `"100ms"`, `"2m"`, `"1h"`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_durations() {
        assert_eq!(parse_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(code_name(7), "PERMISSION_DENIED");
        assert_eq!(code_name(99), "CODE_99");
        assert_eq!(
            Adapter::build("fluentd", None),
            Ok(Adapter::Ignored {
                adapter: "fluentd".into()
            })
        );
        assert!(matches!(
            Adapter::build("stdio", None),
            Ok(Adapter::Stdio(_))
        ));
        assert!(Adapter::build("opentelemetry", None).is_err());
    }
}
