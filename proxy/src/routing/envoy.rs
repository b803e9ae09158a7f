//! Envoy route fields → the per-route policies (`policy.rs`). Called by `xds::decode`; each
//! error is `(field, reason)` relative to the route.

use std::collections::HashMap;
use std::time::Duration;

use mesh_proto::envoy::envoy::config::core::v3::{HeaderValueOption, header_value_option};
use mesh_proto::envoy::envoy::config::route::v3::{
    RetryPolicy as EnvoyRetryPolicy, route_action::RequestMirrorPolicy,
};
use mesh_proto::envoy::envoy::extensions::filters::common::fault::v3::fault_delay;
use mesh_proto::envoy::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use mesh_proto::envoy::envoy::extensions::filters::http::fault::v3::{HttpFault, fault_abort};
use mesh_proto::envoy::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use mesh_proto::envoy::envoy::r#type::v3::{FractionalPercent, fractional_percent};
use mesh_proto::envoy::google::protobuf::{Any, Duration as PbDuration};
use prost::{Message, Name};

use super::policy::{
    Cors, Fault, HashPolicy, HeaderOps, Mirror, OriginMatch, PerMillion, RetryOn, RetryPolicy,
};

/// `typed_per_filter_config` key of the fault filter.
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
/// `typed_per_filter_config` key of the CORS filter.
pub const CORS_FILTER: &str = "envoy.filters.http.cors";

/// A decoding failure: the field (relative to the route) and why.
pub type FieldError = (String, String);

fn err(field: &str, reason: impl Into<String>) -> FieldError {
    (field.to_string(), reason.into())
}

fn dur(field: &str, d: &PbDuration) -> Result<Duration, FieldError> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(err(field, "negative or malformed duration"));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

fn share(p: Option<&FractionalPercent>) -> PerMillion {
    // Envoy: an unset percentage is 0/100; the mesh's pilot always sets it.
    let Some(p) = p else {
        return PerMillion(0);
    };
    let denominator = match fractional_percent::DenominatorType::try_from(p.denominator) {
        Ok(fractional_percent::DenominatorType::TenThousand) => 10_000,
        Ok(fractional_percent::DenominatorType::Million) => 1_000_000,
        _ => 100,
    };
    PerMillion::from_fraction(p.numerator, denominator)
}

/// `request_headers_to_add` + `request_headers_to_remove` (or the response pair).
pub fn header_ops(
    add: &[HeaderValueOption],
    remove: &[String],
    field: &str,
) -> Result<HeaderOps, FieldError> {
    let mut ops = HeaderOps::default();
    for (i, h) in add.iter().enumerate() {
        let f = format!("{field}_to_add[{i}]");
        let Some(hv) = &h.header else {
            return Err(err(&f, "no header"));
        };
        let value = if hv.raw_value.is_empty() {
            hv.value.clone()
        } else {
            String::from_utf8(hv.raw_value.clone())
                .map_err(|_| err(&f, "raw_value is not UTF-8"))?
        };
        if http::HeaderName::from_bytes(hv.key.as_bytes()).is_err()
            || http::HeaderValue::from_str(&value).is_err()
        {
            return Err(err(&f, format!("bad header {:?}: {value:?}", hv.key)));
        }
        #[allow(deprecated)]
        let append = match header_value_option::HeaderAppendAction::try_from(h.append_action) {
            Ok(header_value_option::HeaderAppendAction::AppendIfExistsOrAdd) => {
                // The deprecated `append` BoolValue, when set, wins (Envoy's rule).
                h.append.is_none_or(|b| b.value)
            }
            Ok(_) => false,
            Err(_) => return Err(err(&f, "unknown append_action")),
        };
        ops.add.push((hv.key.to_ascii_lowercase(), value, append));
    }
    for (i, name) in remove.iter().enumerate() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(err(
                &format!("{field}_to_remove[{i}]"),
                format!("bad header name {name:?}"),
            ));
        }
        ops.remove.push(name.to_ascii_lowercase());
    }
    Ok(ops)
}

fn unpack<M: Message + Default + Name>(any: &Any, field: &str) -> Result<M, FieldError> {
    if any.type_url != M::type_url() {
        return Err(err(
            field,
            format!("type {} where {} was expected", any.type_url, M::type_url()),
        ));
    }
    M::decode(any.value.as_slice()).map_err(|e| err(field, e.to_string()))
}

/// The route's `typed_per_filter_config[envoy.filters.http.fault]`, if any.
pub fn fault(per_filter: &HashMap<String, Any>) -> Result<Option<Fault>, FieldError> {
    let Some(any) = per_filter.get(FAULT_FILTER) else {
        return Ok(None);
    };
    let field = format!("typed_per_filter_config[{FAULT_FILTER}]");
    let f: HttpFault = unpack(any, &field)?;
    let delay = match &f.delay {
        None => None,
        Some(d) => match &d.fault_delay_secifier {
            Some(fault_delay::FaultDelaySecifier::FixedDelay(fixed)) => Some((
                dur(&format!("{field}.delay.fixed_delay"), fixed)?,
                share(d.percentage.as_ref()),
            )),
            _ => return Err(err(&field, "only delay.fixed_delay is supported")),
        },
    };
    let abort = match &f.abort {
        None => None,
        Some(a) => match a.error_type {
            Some(fault_abort::ErrorType::HttpStatus(s)) if (200..600).contains(&s) => {
                Some((s as u16, share(a.percentage.as_ref())))
            }
            _ => {
                return Err(err(
                    &field,
                    "only abort.http_status (200..599) is supported",
                ));
            }
        },
    };
    Ok((delay.is_some() || abort.is_some()).then_some(Fault { delay, abort }))
}

/// The route's `retry_policy`.
pub fn retry(rp: &EnvoyRetryPolicy) -> Result<RetryPolicy, FieldError> {
    let codes: Vec<u16> = rp
        .retriable_status_codes
        .iter()
        .filter_map(|c| u16::try_from(*c).ok())
        .collect();
    let (base_interval, max_interval) = match &rp.retry_back_off {
        None => (RetryPolicy::BASE_INTERVAL, RetryPolicy::BASE_INTERVAL * 10),
        Some(b) => {
            let base = match &b.base_interval {
                Some(d) => dur("retry_policy.retry_back_off.base_interval", d)?,
                None => RetryPolicy::BASE_INTERVAL,
            };
            let max = match &b.max_interval {
                Some(d) => dur("retry_policy.retry_back_off.max_interval", d)?,
                None => base * 10,
            };
            (base, max)
        }
    };
    Ok(RetryPolicy {
        // Envoy: num_retries defaults to 1.
        num_retries: rp.num_retries.map_or(1, |n| n.value),
        retry_on: RetryOn::parse(&rp.retry_on, &codes),
        per_try_timeout: match &rp.per_try_timeout {
            Some(d) => Some(dur("retry_policy.per_try_timeout", d)?).filter(|d| !d.is_zero()),
            None => None,
        },
        base_interval,
        max_interval,
        avoid_previous_hosts: rp
            .retry_host_predicate
            .iter()
            .any(|p| p.name == "envoy.retry_host_predicates.previous_hosts"),
    })
}

/// The route's `hash_policy` (filter-state policies are refused).
pub fn hash_policies(
    policies: &[mesh_proto::envoy::envoy::config::route::v3::route_action::HashPolicy],
) -> Result<Vec<HashPolicy>, FieldError> {
    use mesh_proto::envoy::envoy::config::route::v3::route_action::hash_policy::PolicySpecifier;
    policies
        .iter()
        .enumerate()
        .map(|(i, p)| match &p.policy_specifier {
            Some(PolicySpecifier::Header(h)) => {
                Ok(HashPolicy::Header(h.header_name.to_ascii_lowercase()))
            }
            Some(PolicySpecifier::Cookie(c)) => Ok(HashPolicy::Cookie(c.name.clone())),
            Some(PolicySpecifier::ConnectionProperties(c)) if c.source_ip => {
                Ok(HashPolicy::SourceIp)
            }
            Some(PolicySpecifier::QueryParameter(q)) => {
                Ok(HashPolicy::QueryParameter(q.name.clone()))
            }
            _ => Err(err(&format!("hash_policy[{i}]"), "unsupported hash policy")),
        })
        .collect()
}

/// The route's `request_mirror_policies`.
pub fn mirrors(policies: &[RequestMirrorPolicy]) -> Result<Vec<Mirror>, FieldError> {
    policies
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if m.cluster.is_empty() {
                return Err(err(
                    &format!("request_mirror_policies[{i}].cluster"),
                    "empty",
                ));
            }
            Ok(Mirror {
                cluster: m.cluster.clone(),
                share: match &m.runtime_fraction {
                    None => PerMillion::ALL,
                    Some(f) => share(f.default_value.as_ref()),
                },
            })
        })
        .collect()
}

/// The route's `typed_per_filter_config[envoy.filters.http.cors]`, if any.
pub fn cors(per_filter: &HashMap<String, Any>) -> Result<Option<Cors>, FieldError> {
    let Some(any) = per_filter.get(CORS_FILTER) else {
        return Ok(None);
    };
    let field = format!("typed_per_filter_config[{CORS_FILTER}]");
    let c: CorsPolicy = unpack(any, &field)?;
    let mut allow_origins = Vec::new();
    for (i, m) in c.allow_origin_string_match.iter().enumerate() {
        allow_origins.push(match &m.match_pattern {
            Some(MatchPattern::Exact(e)) => OriginMatch::Exact(e.clone()),
            Some(MatchPattern::Prefix(p)) => OriginMatch::Prefix(p.clone()),
            Some(MatchPattern::SafeRegex(r)) => OriginMatch::Regex(
                regex::Regex::new(&format!("^(?:{})$", r.regex)).map_err(|e| {
                    err(
                        &format!("{field}.allow_origin_string_match[{i}]"),
                        e.to_string(),
                    )
                })?,
            ),
            _ => {
                return Err(err(
                    &format!("{field}.allow_origin_string_match[{i}]"),
                    "unsupported matcher",
                ));
            }
        });
    }
    Ok(Some(Cors {
        allow_origins,
        allow_methods: c.allow_methods,
        allow_headers: c.allow_headers,
        expose_headers: c.expose_headers,
        max_age: c.max_age,
        allow_credentials: c.allow_credentials.is_some_and(|b| b.value),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::envoy::envoy::config::core::v3::HeaderValue as PbHeader;
    use mesh_proto::envoy::envoy::config::route::v3::retry_policy::RetryHostPredicate;
    use mesh_proto::envoy::envoy::extensions::filters::common::fault::v3::FaultDelay;
    use mesh_proto::envoy::envoy::extensions::filters::http::fault::v3::FaultAbort;
    use mesh_proto::envoy::google::protobuf::UInt32Value;

    fn pack<M: Message + Name>(m: &M) -> Any {
        Any {
            type_url: M::type_url(),
            value: m.encode_to_vec(),
        }
    }

    #[test]
    fn fault_from_http_fault() {
        let f = HttpFault {
            delay: Some(FaultDelay {
                percentage: Some(FractionalPercent {
                    numerator: 500_000,
                    denominator: fractional_percent::DenominatorType::Million as i32,
                }),
                fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(
                    PbDuration {
                        seconds: 7,
                        nanos: 0,
                    },
                )),
            }),
            abort: Some(FaultAbort {
                percentage: Some(FractionalPercent {
                    numerator: 10,
                    denominator: fractional_percent::DenominatorType::Hundred as i32,
                }),
                error_type: Some(fault_abort::ErrorType::HttpStatus(503)),
                ..FaultAbort::default()
            }),
            ..HttpFault::default()
        };
        let mut per_filter = HashMap::new();
        per_filter.insert(FAULT_FILTER.to_string(), pack(&f));
        let got = fault(&per_filter).unwrap().unwrap();
        assert_eq!(
            got.delay,
            Some((Duration::from_secs(7), PerMillion(500_000)))
        );
        assert_eq!(got.abort, Some((503, PerMillion(100_000))));
        assert_eq!(fault(&HashMap::new()).unwrap(), None);
        // A wrong type under the fault key is refused, naming the field.
        per_filter.insert(FAULT_FILTER.to_string(), pack(&CorsPolicy::default()));
        let (field, _) = fault(&per_filter).unwrap_err();
        assert!(field.contains("envoy.filters.http.fault"), "{field}");
    }

    #[test]
    fn retry_policy_with_defaults() {
        let rp = EnvoyRetryPolicy {
            retry_on: "connect-failure,retriable-status-codes".into(),
            num_retries: Some(UInt32Value { value: 2 }),
            per_try_timeout: Some(PbDuration {
                seconds: 0,
                nanos: 500_000_000,
            }),
            retriable_status_codes: vec![503],
            retry_host_predicate: vec![RetryHostPredicate {
                name: "envoy.retry_host_predicates.previous_hosts".into(),
                config_type: None,
            }],
            ..EnvoyRetryPolicy::default()
        };
        let got = retry(&rp).unwrap();
        assert_eq!(got.num_retries, 2);
        assert_eq!(got.per_try_timeout, Some(Duration::from_millis(500)));
        assert_eq!(got.retry_on.status_codes, vec![503]);
        assert!(got.retry_on.connect_failure && !got.retry_on.server_error);
        assert!(got.avoid_previous_hosts);
        assert_eq!(got.base_interval, Duration::from_millis(25));
        assert_eq!(retry(&EnvoyRetryPolicy::default()).unwrap().num_retries, 1);
    }

    #[test]
    fn header_ops_validate_and_keep_append_mode() {
        let add = vec![
            HeaderValueOption {
                header: Some(PbHeader {
                    key: "X-Set".into(),
                    value: "v".into(),
                    ..PbHeader::default()
                }),
                append_action: header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd
                    as i32,
                ..HeaderValueOption::default()
            },
            HeaderValueOption {
                header: Some(PbHeader {
                    key: "x-add".into(),
                    value: "w".into(),
                    ..PbHeader::default()
                }),
                ..HeaderValueOption::default()
            },
        ];
        let ops = header_ops(&add, &["x-gone".into()], "request_headers").unwrap();
        assert_eq!(
            ops.add,
            vec![
                ("x-set".to_string(), "v".to_string(), false),
                ("x-add".to_string(), "w".to_string(), true)
            ]
        );
        assert_eq!(ops.remove, vec!["x-gone"]);
        let bad = header_ops(&[], &["bad header".into()], "request_headers").unwrap_err();
        assert_eq!(bad.0, "request_headers_to_remove[0]");
    }
}
