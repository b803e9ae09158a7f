//! A cluster as the proxy uses it.

use std::time::Duration;

use serde::Serialize;

/// Settings of one upstream cluster (from CDS).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    pub name: String,
    /// The EDS resource name holding its endpoints (`service_name`, else the cluster name).
    pub eds_name: String,
    pub connect_timeout: Duration,
    /// mTLS to the endpoints, when the cluster has a TLS transport socket.
    pub tls: Option<UpstreamTls>,
    /// How an endpoint is chosen (`lb_policy`).
    pub lb: LbPolicy,
    /// Default-priority `circuit_breakers` thresholds (`None`: unlimited).
    pub limits: Limits,
    /// `max_requests_per_connection` (only 1 changes anything: no connection reuse).
    pub max_requests_per_connection: Option<u32>,
    /// `outlier_detection`, when set.
    pub outlier: Option<OutlierDetection>,
    /// The service of Pilot's `metadata.filter_metadata["istio"].services[0]` (host, name,
    /// namespace), resolved once per CDS update for the telemetry labels; `None`: derived
    /// from the cluster name.
    #[serde(skip)]
    pub service: Option<crate::http::Service>,
}

/// Envoy `lb_policy` values the proxy implements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum LbPolicy {
    #[default]
    RoundRobin,
    /// Power of two choices by active requests.
    LeastRequest,
    Random,
    /// Consistent hashing on the route's hash policy (Envoy RING_HASH / MAGLEV); implemented as
    /// rendezvous hashing, so a key keeps its host while the host set is unchanged.
    RingHash,
}

/// Circuit breaker thresholds; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Limits {
    pub max_connections: Option<u32>,
    pub max_pending_requests: Option<u32>,
    pub max_requests: Option<u32>,
    pub max_retries: Option<u32>,
}

/// Envoy outlier detection, consecutive-error kinds only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OutlierDetection {
    /// Eject after this many consecutive 5xx (connect failures count), when enforced.
    pub consecutive_5xx: Option<u32>,
    /// Eject after this many consecutive 502/503/504 (connect failures count), when enforced.
    pub consecutive_gateway: Option<u32>,
    pub interval: Duration,
    /// Ejection time = base × times ejected (at most `max_ejection_time`).
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

/// TLS towards a cluster's endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct UpstreamTls {
    /// The peer's URI SAN must be one of these (exact match).
    pub expected_sans: Vec<String>,
    pub sni: String,
    /// TLS origination with the cluster's own certificates (DestinationRule SIMPLE/MUTUAL)
    /// instead of the workload's mesh identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origination: Option<crate::tls::Origination>,
}
