//! What the quota adapters (`memquota`, `redisquota`) share: their `quotas[]` params (limits
//! per instance, overrides by dimensions) and the counter key of one allocation.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value as Json;

use super::{duration_param, int_param};

/// How a window of a limit moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// The budget is reset at the end of each `validDuration` window.
    FixedWindow,
    /// The budget covers the last `validDuration`, counted in `bucketDuration` buckets.
    RollingWindow,
}

/// One `overrides[]` entry: when every dimension matches, these limits apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub dimensions: BTreeMap<String, String>,
    pub max_amount: i64,
    /// Falls back to the quota's own `validDuration`.
    pub valid_duration: Option<Duration>,
}

/// One `quotas[]` entry, for the quota instance `name` (`instance.instance.namespace`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaLimit {
    pub name: String,
    pub max_amount: i64,
    /// Zero: the amount never expires (an allocation quota).
    pub valid_duration: Duration,
    pub bucket_duration: Duration,
    pub algorithm: Algorithm,
    pub overrides: Vec<Override>,
}

/// The limit that applies to one instance's dimensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The counter: the quota name, every dimension, and the override chosen.
    pub key: String,
    pub max_amount: i64,
    pub valid_duration: Duration,
    pub bucket_duration: Duration,
    pub algorithm: Algorithm,
}

/// The `quotas[]` of a quota handler.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Limits {
    pub quotas: Vec<QuotaLimit>,
}

impl Limits {
    /// Parses `params.quotas`; `rolling_default` says which algorithm a quota without
    /// `rateLimitAlgorithm` uses (memquota: rolling; redisquota: fixed, as in Istio).
    pub fn parse(p: &Json, rolling_default: bool) -> Result<Limits, String> {
        let list = match p.get("quotas") {
            None | Some(Json::Null) => return Ok(Limits::default()),
            Some(Json::Array(a)) => a,
            Some(other) => return Err(format!("params.quotas {other} is not a list")),
        };
        let mut quotas = Vec::with_capacity(list.len());
        for (i, q) in list.iter().enumerate() {
            let name = q
                .get("name")
                .and_then(Json::as_str)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| format!("params.quotas[{i}].name is missing"))?
                .to_string();
            let at = |e: String| format!("params.quotas[{i}] ({name}): {e}");
            let max_amount = int_param(q, &["maxAmount", "max_amount"], 0).map_err(at)?;
            let valid_duration =
                duration_param(q, &["validDuration", "valid_duration"], Duration::ZERO)
                    .map_err(at)?;
            let bucket_duration =
                duration_param(q, &["bucketDuration", "bucket_duration"], Duration::ZERO)
                    .map_err(at)?;
            let algorithm = match q
                .get("rateLimitAlgorithm")
                .or_else(|| q.get("rate_limit_algorithm"))
                .and_then(Json::as_str)
            {
                None if rolling_default => Algorithm::RollingWindow,
                None => Algorithm::FixedWindow,
                Some("FIXED_WINDOW") => Algorithm::FixedWindow,
                Some("ROLLING_WINDOW") => Algorithm::RollingWindow,
                Some(other) => return Err(at(format!("unknown rateLimitAlgorithm {other:?}"))),
            };
            let mut overrides = Vec::new();
            if let Some(list) = q.get("overrides").and_then(Json::as_array) {
                for (j, o) in list.iter().enumerate() {
                    let dimensions: BTreeMap<String, String> = match o.get("dimensions") {
                        Some(Json::Object(m)) => m
                            .iter()
                            .map(|(k, v)| {
                                let v = match v {
                                    Json::String(s) => s.clone(),
                                    other => other.to_string(),
                                };
                                (k.clone(), v)
                            })
                            .collect(),
                        _ => BTreeMap::new(),
                    };
                    if dimensions.is_empty() {
                        return Err(at(format!("overrides[{j}].dimensions is empty")));
                    }
                    let max_amount = int_param(o, &["maxAmount", "max_amount"], 0).map_err(&at)?;
                    let valid_duration = match o.get("validDuration").or(o.get("valid_duration")) {
                        None | Some(Json::Null) => None,
                        Some(_) => Some(
                            duration_param(o, &["validDuration", "valid_duration"], Duration::ZERO)
                                .map_err(&at)?,
                        ),
                    };
                    overrides.push(Override {
                        dimensions,
                        max_amount,
                        valid_duration,
                    });
                }
            }
            if algorithm == Algorithm::RollingWindow
                && !rolling_default
                && (bucket_duration.is_zero() || valid_duration <= bucket_duration)
            {
                return Err(at(
                    "ROLLING_WINDOW needs 0 < bucketDuration < validDuration".to_string(),
                ));
            }
            quotas.push(QuotaLimit {
                name,
                max_amount,
                valid_duration,
                bucket_duration,
                algorithm,
                overrides,
            });
        }
        Ok(Limits { quotas })
    }

    /// The limit for `instance` (its full name) with `dimensions`: the first override whose
    /// dimensions all match, else the quota's own. `None`: the handler has no limit for it.
    pub fn applied(
        &self,
        instance: &str,
        dimensions: &BTreeMap<String, String>,
    ) -> Option<Applied> {
        let q = self.quotas.iter().find(|q| q.name == instance)?;
        let mut key = q.name.clone();
        for (k, v) in dimensions {
            key.push_str(&format!(";{k}={v}"));
        }
        let chosen = q.overrides.iter().enumerate().find(|(_, o)| {
            o.dimensions
                .iter()
                .all(|(k, v)| dimensions.get(k).is_some_and(|d| d == v))
        });
        let (max_amount, valid_duration) = match chosen {
            Some((i, o)) => {
                key.push_str(&format!(";override={i}"));
                (o.max_amount, o.valid_duration.unwrap_or(q.valid_duration))
            }
            None => (q.max_amount, q.valid_duration),
        };
        Some(Applied {
            key,
            max_amount,
            valid_duration,
            bucket_duration: q.bucket_duration,
            algorithm: q.algorithm,
        })
    }
}

/// What a quota adapter granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub amount: i64,
    pub valid_duration: Duration,
    /// google.rpc code: 0, or why nothing could be granted (e.g. UNAVAILABLE).
    pub code: i32,
    pub message: String,
}

impl Grant {
    pub fn ok(amount: i64, valid_duration: Duration) -> Grant {
        Grant {
            amount,
            valid_duration,
            code: 0,
            message: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Limits {
        // The memquota params of mixer-rule-productpage-ratelimit.yaml.
        Limits::parse(
            &json!({"quotas": [{
                "name": "requestcountquota.instance.istio-system",
                "maxAmount": 500, "validDuration": "1s",
                "overrides": [
                    {"dimensions": {"destination": "reviews"}, "maxAmount": 1, "validDuration": "5s"},
                    {"dimensions": {"destination": "productpage", "source": "10.28.11.20"}, "maxAmount": 500, "validDuration": "1s"},
                    {"dimensions": {"destination": "productpage"}, "maxAmount": 2, "validDuration": "5s"}
                ]
            }]}),
            true,
        )
        .unwrap()
    }

    fn dims(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn first_matching_override_applies() {
        let l = sample();
        let name = "requestcountquota.instance.istio-system";
        let a = l
            .applied(
                name,
                &dims(&[("destination", "productpage"), ("source", "x")]),
            )
            .unwrap();
        assert_eq!(
            (a.max_amount, a.valid_duration),
            (2, Duration::from_secs(5))
        );
        assert!(a.key.ends_with(";override=2"), "{}", a.key);
        let a = l
            .applied(
                name,
                &dims(&[("destination", "productpage"), ("source", "10.28.11.20")]),
            )
            .unwrap();
        assert_eq!(a.max_amount, 500);
        let a = l
            .applied(name, &dims(&[("destination", "details")]))
            .unwrap();
        assert_eq!(
            (a.max_amount, a.valid_duration),
            (500, Duration::from_secs(1))
        );
        assert_eq!(a.algorithm, Algorithm::RollingWindow);
        // Different dimension values are different counters.
        let k1 = l
            .applied(name, &dims(&[("destination", "details")]))
            .unwrap()
            .key;
        let k2 = l
            .applied(name, &dims(&[("destination", "ratings")]))
            .unwrap()
            .key;
        assert_ne!(k1, k2);
        assert!(
            l.applied("other.instance.istio-system", &dims(&[]))
                .is_none()
        );
    }

    #[test]
    fn bad_params_are_errors() {
        assert!(Limits::parse(&json!({"quotas": [{"maxAmount": 1}]}), true).is_err());
        assert!(
            Limits::parse(
                &json!({"quotas": [{"name": "q", "rateLimitAlgorithm": "LEAKY"}]}),
                false
            )
            .is_err()
        );
        assert!(
            Limits::parse(
                &json!({"quotas": [{"name": "q", "validDuration": "1s", "rateLimitAlgorithm": "ROLLING_WINDOW"}]}),
                false
            )
            .is_err(),
            "rolling window without buckets"
        );
        assert!(
            Limits::parse(
                &json!({"quotas": [{"name": "q", "overrides": [{"maxAmount": 1}]}]}),
                false
            )
            .is_err()
        );
    }
}
