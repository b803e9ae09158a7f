//! Envoy `Cluster` fields → load balancing, circuit breaker and outlier detection settings.
//! Called by `xds::decode`; errors are `(field, reason)`.

use std::time::Duration;

use mesh_proto::envoy::envoy::config::cluster::v3::{Cluster as EnvoyCluster, cluster};
use mesh_proto::envoy::envoy::config::core::v3::RoutingPriority;
use mesh_proto::envoy::google::protobuf::Duration as PbDuration;

use super::model::{LbPolicy, Limits, OutlierDetection};

/// A decoding failure: the field and why.
pub type FieldError = (String, String);

/// `lb_policy`; policies the proxy does not implement are refused.
pub fn lb_policy(c: &EnvoyCluster) -> Result<LbPolicy, FieldError> {
    match cluster::LbPolicy::try_from(c.lb_policy) {
        Ok(cluster::LbPolicy::RoundRobin) => Ok(LbPolicy::RoundRobin),
        Ok(cluster::LbPolicy::LeastRequest) => Ok(LbPolicy::LeastRequest),
        Ok(cluster::LbPolicy::Random) => Ok(LbPolicy::Random),
        Ok(cluster::LbPolicy::RingHash | cluster::LbPolicy::Maglev) => Ok(LbPolicy::RingHash),
        other => Err((
            "lb_policy".into(),
            format!(
                "{other:?} is not supported (ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV)"
            ),
        )),
    }
}

/// The DEFAULT-priority `circuit_breakers.thresholds` entry.
pub fn limits(c: &EnvoyCluster) -> Limits {
    let Some(t) = c.circuit_breakers.as_ref().and_then(|cb| {
        cb.thresholds
            .iter()
            .find(|t| t.priority == RoutingPriority::Default as i32)
    }) else {
        return Limits::default();
    };
    Limits {
        max_connections: t.max_connections.map(|v| v.value),
        max_pending_requests: t.max_pending_requests.map(|v| v.value),
        max_requests: t.max_requests.map(|v| v.value),
        max_retries: t.max_retries.map(|v| v.value),
    }
}

/// `max_requests_per_connection` (cluster field, else the common HTTP protocol options).
#[allow(deprecated)]
pub fn max_requests_per_connection(c: &EnvoyCluster) -> Option<u32> {
    let direct = c.max_requests_per_connection.map(|v| v.value);
    direct
        .or_else(|| {
            c.common_http_protocol_options
                .as_ref()
                .and_then(|o| o.max_requests_per_connection.map(|v| v.value))
        })
        .filter(|n| *n > 0)
}

fn dur(field: &str, d: Option<&PbDuration>, default: Duration) -> Result<Duration, FieldError> {
    match d {
        None => Ok(default),
        Some(d) if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 => Err((
            format!("outlier_detection.{field}"),
            "negative or malformed duration".into(),
        )),
        Some(d) => Ok(Duration::new(d.seconds as u64, d.nanos as u32)),
    }
}

/// `outlier_detection` with Envoy's defaults (5 consecutive 5xx enforced 100%, gateway
/// failures counted but not enforced, interval 10 s, base ejection 30 s, max 10%).
pub fn outlier_detection(c: &EnvoyCluster) -> Result<Option<OutlierDetection>, FieldError> {
    let Some(od) = &c.outlier_detection else {
        return Ok(None);
    };
    let enforced = |v: Option<u32>, default: u32| v.unwrap_or(default) > 0;
    let five = od.consecutive_5xx.map_or(5, |v| v.value);
    let gateway = od.consecutive_gateway_failure.map_or(5, |v| v.value);
    let base = dur(
        "base_ejection_time",
        od.base_ejection_time.as_ref(),
        Duration::from_secs(30),
    )?;
    Ok(Some(OutlierDetection {
        consecutive_5xx: (enforced(od.enforcing_consecutive_5xx.map(|v| v.value), 100) && five > 0)
            .then_some(five),
        consecutive_gateway: (enforced(
            od.enforcing_consecutive_gateway_failure.map(|v| v.value),
            0,
        ) && gateway > 0)
            .then_some(gateway),
        interval: dur("interval", od.interval.as_ref(), Duration::from_secs(10))?,
        base_ejection_time: base,
        max_ejection_time: dur(
            "max_ejection_time",
            od.max_ejection_time.as_ref(),
            Duration::from_secs(300),
        )?
        .max(base),
        max_ejection_percent: od.max_ejection_percent.map_or(10, |v| v.value.min(100)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::envoy::envoy::config::cluster::v3::{
        CircuitBreakers, OutlierDetection as EnvoyOd, circuit_breakers,
    };
    use mesh_proto::envoy::google::protobuf::UInt32Value;

    fn u(v: u32) -> Option<UInt32Value> {
        Some(UInt32Value { value: v })
    }

    #[test]
    fn circuit_breakers_lb_and_outlier_detection() {
        let c = EnvoyCluster {
            name: "c".into(),
            lb_policy: cluster::LbPolicy::LeastRequest as i32,
            circuit_breakers: Some(CircuitBreakers {
                thresholds: vec![circuit_breakers::Thresholds {
                    max_connections: u(1),
                    max_pending_requests: u(2),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            outlier_detection: Some(EnvoyOd {
                consecutive_5xx: u(3),
                enforcing_consecutive_5xx: u(100),
                consecutive_gateway_failure: u(2),
                enforcing_consecutive_gateway_failure: u(0),
                base_ejection_time: Some(PbDuration {
                    seconds: 180,
                    nanos: 0,
                }),
                max_ejection_percent: u(100),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(lb_policy(&c).unwrap(), LbPolicy::LeastRequest);
        assert_eq!(
            limits(&c),
            Limits {
                max_connections: Some(1),
                max_pending_requests: Some(2),
                max_requests: None,
                max_retries: None,
            }
        );
        let od = outlier_detection(&c).unwrap().unwrap();
        assert_eq!(od.consecutive_5xx, Some(3));
        assert_eq!(od.consecutive_gateway, None, "not enforced");
        assert_eq!(od.base_ejection_time, Duration::from_secs(180));
        assert_eq!(od.max_ejection_time, Duration::from_secs(300));
        assert_eq!(od.max_ejection_percent, 100);
        assert_eq!(od.interval, Duration::from_secs(10));
        let plain = EnvoyCluster::default();
        assert_eq!(limits(&plain), Limits::default());
        assert_eq!(outlier_detection(&plain).unwrap(), None);
        let ring = EnvoyCluster {
            lb_policy: cluster::LbPolicy::RingHash as i32,
            ..Default::default()
        };
        assert_eq!(lb_policy(&ring).unwrap(), LbPolicy::RingHash);
        let original = EnvoyCluster {
            lb_policy: cluster::LbPolicy::ClusterProvided as i32,
            ..Default::default()
        };
        assert_eq!(lb_policy(&original).unwrap_err().0, "lb_policy");
    }
}
