//! VirtualService resilience features of one `http` rule → Envoy route settings: `fault` →
//! `envoy.filters.http.fault` per-route `HTTPFault`, `retries` → `RetryPolicy` (Istio's default
//! policy when absent), `mirror` → `RequestMirrorPolicy`, `corsPolicy` → `CorsPolicy`.

use mesh_proto::envoy::envoy::config::core::v3::RuntimeFractionalPercent;
use mesh_proto::envoy::envoy::config::route::v3::{
    RetryPolicy, retry_policy,
    route_action::{HashPolicy, RequestMirrorPolicy, hash_policy},
};
use mesh_proto::envoy::envoy::extensions::filters::common::fault::v3::{FaultDelay, fault_delay};
use mesh_proto::envoy::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use mesh_proto::envoy::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort,
};
use mesh_proto::envoy::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use mesh_proto::envoy::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use mesh_proto::envoy::envoy::r#type::v3::{FractionalPercent, fractional_percent};
use mesh_proto::envoy::google::protobuf::{Any, BoolValue, UInt32Value};
use prost::Name;
use serde_json::Value;

use super::duration::parse_duration;
use super::resources::{duration, pack};

/// The Envoy HTTP filter name Istio uses for fault injection (key of `typed_per_filter_config`).
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
/// The Envoy HTTP filter name of CORS.
pub const CORS_FILTER: &str = "envoy.filters.http.cors";
/// `retry_on` of Istio's default retry policy (used when a rule has no `retries`).
pub const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
/// Retries of Istio's default retry policy.
pub const DEFAULT_ATTEMPTS: u32 = 2;

/// `percentage.value` (a double, 0–100) as a fraction of a million, as Istio emits it; else the
/// legacy integer `percent` as a fraction of a hundred; neither: 100%.
fn percentage(v: &Value) -> Result<FractionalPercent, String> {
    if let Some(p) = v.get("percentage") {
        let value = p.get("value").and_then(Value::as_f64).unwrap_or(0.0);
        if !(0.0..=100.0).contains(&value) {
            return Err(format!("percentage.value {value} is not within 0..100"));
        }
        return Ok(FractionalPercent {
            numerator: (value * 10_000.0).round() as u32,
            denominator: fractional_percent::DenominatorType::Million as i32,
        });
    }
    let percent = match v.get("percent") {
        None => 100,
        Some(p) => p
            .as_u64()
            .filter(|p| *p <= 100)
            .ok_or_else(|| format!("percent {p} is not an integer within 0..100"))?,
    };
    Ok(FractionalPercent {
        numerator: percent as u32,
        denominator: fractional_percent::DenominatorType::Hundred as i32,
    })
}

/// `fault` → the `HTTPFault` for the route's `typed_per_filter_config[envoy.filters.http.fault]`.
pub fn fault(fault: &Value) -> Result<Option<Any>, String> {
    let mut out = HttpFault::default();
    if let Some(d) = fault.get("delay") {
        let fixed = d
            .get("fixedDelay")
            .and_then(Value::as_str)
            .ok_or("fault.delay: fixedDelay is required")?;
        let fixed = parse_duration(fixed).map_err(|e| format!("fault.delay.fixedDelay: {e}"))?;
        out.delay = Some(FaultDelay {
            percentage: Some(percentage(d).map_err(|e| format!("fault.delay: {e}"))?),
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(duration(
                fixed,
            ))),
        });
    }
    if let Some(a) = fault.get("abort") {
        let status = a
            .get("httpStatus")
            .and_then(Value::as_u64)
            .filter(|s| (200..600).contains(s))
            .ok_or("fault.abort: httpStatus (200..599) is required")?;
        out.abort = Some(FaultAbort {
            percentage: Some(percentage(a).map_err(|e| format!("fault.abort: {e}"))?),
            error_type: Some(fault_abort::ErrorType::HttpStatus(status as u32)),
            ..FaultAbort::default()
        });
    }
    if out.delay.is_none() && out.abort.is_none() {
        return Ok(None);
    }
    Ok(Some(pack(&HttpFault::type_url(), &out)))
}

/// `retries` → the route's retry policy. Absent: Istio's default (2 retries on connect failure,
/// refused stream, gRPC unavailable/cancelled and 503). `attempts: 0`: no retries.
pub fn retry_policy(retries: Option<&Value>) -> Result<Option<RetryPolicy>, String> {
    let previous_hosts = retry_policy::RetryHostPredicate {
        name: "envoy.retry_host_predicates.previous_hosts".to_string(),
        config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(
            pack(
                &PreviousHostsPredicate::type_url(),
                &PreviousHostsPredicate::default(),
            ),
        )),
    };
    let Some(r) = retries else {
        return Ok(Some(RetryPolicy {
            retry_on: DEFAULT_RETRY_ON.to_string(),
            num_retries: Some(UInt32Value {
                value: DEFAULT_ATTEMPTS,
            }),
            retriable_status_codes: vec![503],
            retry_host_predicate: vec![previous_hosts],
            host_selection_retry_max_attempts: 5,
            ..RetryPolicy::default()
        }));
    };
    let attempts = match r.get("attempts") {
        None => 0,
        Some(a) => a
            .as_u64()
            .and_then(|a| u32::try_from(a).ok())
            .ok_or_else(|| format!("retries.attempts {a} is not a non-negative integer"))?,
    };
    if attempts == 0 {
        return Ok(None);
    }
    let per_try_timeout = match r.get("perTryTimeout").and_then(Value::as_str) {
        Some(t) => Some(duration(
            parse_duration(t).map_err(|e| format!("retries.perTryTimeout: {e}"))?,
        )),
        None => None,
    };
    let mut on = Vec::new();
    let mut codes = Vec::new();
    let retry_on = r
        .get("retryOn")
        .and_then(Value::as_str)
        .unwrap_or("gateway-error,connect-failure,refused-stream");
    for part in retry_on.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u32>() {
            Ok(code) if (100..600).contains(&code) => codes.push(code),
            Ok(code) => return Err(format!("retries.retryOn: {code} is not an HTTP status")),
            Err(_) => on.push(part.to_string()),
        }
    }
    if !codes.is_empty() && !on.iter().any(|p| p == "retriable-status-codes") {
        on.push("retriable-status-codes".to_string());
    }
    Ok(Some(RetryPolicy {
        retry_on: on.join(","),
        num_retries: Some(UInt32Value { value: attempts }),
        per_try_timeout,
        retriable_status_codes: codes,
        retry_host_predicate: vec![previous_hosts],
        host_selection_retry_max_attempts: 5,
        ..RetryPolicy::default()
    }))
}

/// `mirror` (already resolved to `cluster`) and `mirrorPercentage.value` → a mirror policy.
pub fn mirror_policy(cluster: String, percentage: Option<&Value>) -> RequestMirrorPolicy {
    let fraction = percentage.map(|p| {
        let value = p.get("value").and_then(Value::as_f64).unwrap_or(100.0);
        FractionalPercent {
            numerator: (value.clamp(0.0, 100.0) * 10_000.0).round() as u32,
            denominator: fractional_percent::DenominatorType::Million as i32,
        }
    });
    RequestMirrorPolicy {
        cluster,
        runtime_fraction: fraction.map(|f| RuntimeFractionalPercent {
            default_value: Some(f),
            runtime_key: String::new(),
        }),
        trace_sampled: Some(BoolValue { value: false }),
        ..RequestMirrorPolicy::default()
    }
}

/// `corsPolicy` → the `CorsPolicy` for `typed_per_filter_config[envoy.filters.http.cors]`.
pub fn cors(policy: &Value) -> Result<Any, String> {
    let strings = |key: &str| -> Vec<String> {
        policy
            .get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut origins: Vec<StringMatcher> = strings("allowOrigin")
        .into_iter()
        .map(|o| StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(o)),
            ignore_case: false,
        })
        .collect();
    if let Some(list) = policy.get("allowOrigins").and_then(Value::as_array) {
        for o in list {
            let pattern = if let Some(e) = o.get("exact").and_then(Value::as_str) {
                string_matcher::MatchPattern::Exact(e.to_string())
            } else if let Some(p) = o.get("prefix").and_then(Value::as_str) {
                string_matcher::MatchPattern::Prefix(p.to_string())
            } else if let Some(r) = o.get("regex").and_then(Value::as_str) {
                string_matcher::MatchPattern::SafeRegex(
                    mesh_proto::envoy::envoy::r#type::matcher::v3::RegexMatcher {
                        regex: r.to_string(),
                        engine_type: None,
                    },
                )
            } else {
                return Err("corsPolicy.allowOrigins: entry has no exact, prefix or regex".into());
            };
            origins.push(StringMatcher {
                match_pattern: Some(pattern),
                ignore_case: false,
            });
        }
    }
    let max_age = match policy.get("maxAge").and_then(Value::as_str) {
        Some(m) => parse_duration(m)
            .map_err(|e| format!("corsPolicy.maxAge: {e}"))?
            .as_secs()
            .to_string(),
        None => String::new(),
    };
    let out = CorsPolicy {
        allow_origin_string_match: origins,
        allow_methods: strings("allowMethods").join(","),
        allow_headers: strings("allowHeaders").join(","),
        expose_headers: strings("exposeHeaders").join(","),
        max_age,
        allow_credentials: policy
            .get("allowCredentials")
            .and_then(Value::as_bool)
            .map(|value| BoolValue { value }),
        ..CorsPolicy::default()
    };
    Ok(pack(&CorsPolicy::type_url(), &out))
}

/// `loadBalancer.consistentHash` → the route's hash policy: `httpHeaderName`, `httpCookie`
/// (`name`, `path`, `ttl`), `useSourceIp` or `httpQueryParameterName`.
pub fn hash_policy(lb: &Value) -> Option<HashPolicy> {
    let ch = lb.get("consistentHash")?;
    let spec = if let Some(h) = ch.get("httpHeaderName").and_then(Value::as_str) {
        hash_policy::PolicySpecifier::Header(hash_policy::Header {
            header_name: h.to_ascii_lowercase(),
            regex_rewrite: None,
        })
    } else if let Some(c) = ch.get("httpCookie") {
        hash_policy::PolicySpecifier::Cookie(hash_policy::Cookie {
            name: c.get("name").and_then(Value::as_str)?.to_string(),
            path: c
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            ttl: c
                .get("ttl")
                .and_then(Value::as_str)
                .and_then(|t| parse_duration(t).ok())
                .map(duration),
            attributes: Vec::new(),
        })
    } else if ch.get("useSourceIp").and_then(Value::as_bool) == Some(true) {
        hash_policy::PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties {
            source_ip: true,
        })
    } else if let Some(q) = ch.get("httpQueryParameterName").and_then(Value::as_str) {
        hash_policy::PolicySpecifier::QueryParameter(hash_policy::QueryParameter {
            name: q.to_string(),
        })
    } else {
        return None;
    };
    Some(HashPolicy {
        policy_specifier: Some(spec),
        terminal: false,
    })
}
