//! CDS: one EDS cluster per service port, plus one per DestinationRule subset.

use std::time::Duration as StdDuration;

use mesh_proto::config::{Subset, TrafficPolicy};
use mesh_proto::envoy::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection, circuit_breakers, cluster,
};
use mesh_proto::envoy::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, TransportSocket, config_source,
    transport_socket,
};
use mesh_proto::envoy::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SdsSecretConfig, SubjectAltNameMatcher,
    UpstreamTlsContext, common_tls_context, subject_alt_name_matcher,
};
use mesh_proto::envoy::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use mesh_proto::envoy::google::protobuf::UInt32Value;
use mesh_proto::type_url;
use serde_json::Value;

use super::duration::parse_duration;
use super::names::{cluster_name, sni, spiffe};
use super::resources::{duration, pack};
use crate::model::{Registry, Service};

#[path = "upstream_tls.rs"]
mod upstream_tls;

#[path = "cluster_metadata.rs"]
mod cluster_metadata;
use cluster_metadata::service_metadata;

/// Connect timeout when the DestinationRule sets none.
pub const CONNECT_TIMEOUT: StdDuration = StdDuration::from_secs(10);

/// The ADS config source every dynamic resource points at.
pub fn ads_config_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..ConfigSource::default()
    }
}

/// Every cluster of the mesh, sorted by name.
pub fn clusters(reg: &Registry, trust_domain: &str) -> Vec<Cluster> {
    clusters_of(reg, trust_domain, |_| true)
}

/// The clusters of the services `keep` selects, sorted by name.
pub fn clusters_of(
    reg: &Registry,
    trust_domain: &str,
    keep: impl Fn(&Service) -> bool,
) -> Vec<Cluster> {
    let mut out = Vec::new();
    for svc in reg.services.values().filter(|s| keep(s)) {
        let dr = reg.destination_rule(&svc.fqdn);
        let top = dr.and_then(|d| d.spec.traffic_policy.as_ref());
        let subsets: &[Subset] = dr.map(|d| d.spec.subsets.as_slice()).unwrap_or_default();
        let sans = service_sans(svc, trust_domain);
        for port in &svc.ports {
            let mut c = build(svc, port.port, "", top, None, &sans);
            super::passthrough::apply_resolution(&mut c, svc, port.port, None);
            out.push(c);
            for subset in subsets {
                let mut c = build(
                    svc,
                    port.port,
                    &subset.name,
                    top,
                    subset.traffic_policy.as_ref(),
                    &sans,
                );
                super::passthrough::apply_resolution(&mut c, svc, port.port, Some(&subset.labels));
                out.push(c);
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    out
}

/// SPIFFE ids of every service account behind `svc`, then its ServiceEntry
/// `subjectAltNames`.
fn service_sans(svc: &Service, trust_domain: &str) -> Vec<String> {
    let mut sans: Vec<String> = svc
        .service_accounts()
        .iter()
        .map(|sa| spiffe(trust_domain, &svc.namespace, sa))
        .collect();
    for san in &svc.subject_alt_names {
        if !sans.contains(san) {
            sans.push(san.clone());
        }
    }
    sans
}

fn build(
    svc: &Service,
    port: u16,
    subset: &str,
    top: Option<&TrafficPolicy>,
    local: Option<&TrafficPolicy>,
    sans: &[String],
) -> Cluster {
    let name = cluster_name(port, subset, &svc.fqdn);
    // The subset's policy wins over the rule's; in each, a `portLevelSettings` entry for this
    // port wins over the policy's own setting.
    let pick = |key: &str| {
        local
            .and_then(|p| policy_field(p, port, key))
            .or_else(|| top.and_then(|p| policy_field(p, port, key)))
    };
    let tls = upstream_tls::client_tls(local, top, port);
    let tls_mode = tls.as_ref().and_then(|t| t.mode.clone());
    let connection_pool = pick("connectionPool");
    let connect_timeout = connection_pool
        .and_then(|cp| cp.pointer("/tcp/connectTimeout"))
        .and_then(|v| v.as_str())
        .and_then(|s| parse_duration(s).ok())
        .unwrap_or(CONNECT_TIMEOUT);
    let lb = pick("loadBalancer");
    let lb_policy = match lb.and_then(|lb| lb.get("simple")).and_then(|v| v.as_str()) {
        Some("LEAST_CONN" | "LEAST_REQUEST") => cluster::LbPolicy::LeastRequest,
        Some("RANDOM") => cluster::LbPolicy::Random,
        _ if lb.is_some_and(|lb| lb.get("consistentHash").is_some()) => cluster::LbPolicy::RingHash,
        _ => cluster::LbPolicy::RoundRobin,
    };
    // Mesh services: Istio mTLS unless DISABLE. MESH_EXTERNAL ServiceEntries: only when the
    // DestinationRule asks for ISTIO_MUTUAL (their workloads have no sidecar).
    // SIMPLE / MUTUAL: TLS origination with the rule's own certificate files.
    let istio_mtls = match tls_mode.as_deref() {
        Some("DISABLE" | "SIMPLE" | "MUTUAL") => false,
        Some("ISTIO_MUTUAL") => true,
        _ => !svc.mesh_external,
    };
    let transport_socket = match (&tls, tls_mode.as_deref()) {
        (Some(t), Some("SIMPLE" | "MUTUAL")) => {
            Some(upstream_tls::origination_socket(t, &svc.fqdn))
        }
        _ => istio_mtls.then(|| istio_mtls_socket(sans, &sni(port, subset, &svc.fqdn))),
    };
    Cluster {
        name: name.clone(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads_config_source()),
            service_name: name,
        }),
        connect_timeout: Some(duration(connect_timeout)),
        lb_policy: lb_policy as i32,
        transport_socket,
        circuit_breakers: connection_pool.and_then(circuit_breakers),
        #[allow(deprecated)]
        max_requests_per_connection: connection_pool
            .and_then(|cp| cp.pointer("/http/maxRequestsPerConnection"))
            .and_then(|v| v.as_u64())
            .filter(|n| *n > 0)
            .map(|n| UInt32Value {
                value: u32::try_from(n).unwrap_or(u32::MAX),
            }),
        outlier_detection: pick("outlierDetection").and_then(outlier_detection),
        metadata: Some(service_metadata(svc)),
        ..Cluster::default()
    }
}

/// The `loadBalancer` that applies to cluster `outbound|P|SUBSET|FQDN` (subset policy, then the
/// rule's; port-level settings first in each).
pub fn load_balancer<'a>(reg: &'a Registry, cluster_name: &str) -> Option<&'a Value> {
    let mut parts = cluster_name.split('|');
    let (_, port, subset, fqdn) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let port: u16 = port.parse().ok()?;
    let dr = reg.destination_rule(fqdn)?;
    let local = dr
        .spec
        .subsets
        .iter()
        .find(|s| !subset.is_empty() && s.name == subset)
        .and_then(|s| s.traffic_policy.as_ref());
    let top = dr.spec.traffic_policy.as_ref();
    local
        .and_then(|p| policy_field(p, port, "loadBalancer"))
        .or_else(|| top.and_then(|p| policy_field(p, port, "loadBalancer")))
}

/// `key` (`loadBalancer`, `connectionPool`, `outlierDetection`) of a traffic policy, from its
/// `portLevelSettings` entry for `port` when there is one that sets it.
fn policy_field<'a>(p: &'a TrafficPolicy, port: u16, key: &str) -> Option<&'a Value> {
    let port_level = p
        .port_level_settings
        .iter()
        .find(|s| s.pointer("/port/number").and_then(Value::as_u64) == Some(u64::from(port)));
    if let Some(v) = port_level.and_then(|s| s.get(key)) {
        return Some(v);
    }
    match key {
        "loadBalancer" => p.load_balancer.as_ref(),
        "connectionPool" => p.connection_pool.as_ref(),
        "outlierDetection" => p.outlier_detection.as_ref(),
        _ => None,
    }
}

fn u32_at(v: &Value, pointer: &str) -> Option<UInt32Value> {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .map(|n| UInt32Value {
            value: u32::try_from(n).unwrap_or(u32::MAX),
        })
}

/// `connectionPool` → default-priority thresholds: `tcp.maxConnections` → `max_connections`,
/// `http.http1MaxPendingRequests` → `max_pending_requests`, `http.http2MaxRequests` →
/// `max_requests`, `http.maxRetries` → `max_retries`. Nothing set: no circuit breakers.
fn circuit_breakers(cp: &Value) -> Option<CircuitBreakers> {
    let t = circuit_breakers::Thresholds {
        max_connections: u32_at(cp, "/tcp/maxConnections"),
        max_pending_requests: u32_at(cp, "/http/http1MaxPendingRequests"),
        max_requests: u32_at(cp, "/http/http2MaxRequests"),
        max_retries: u32_at(cp, "/http/maxRetries"),
        ..circuit_breakers::Thresholds::default()
    };
    let any = t.max_connections.is_some()
        || t.max_pending_requests.is_some()
        || t.max_requests.is_some()
        || t.max_retries.is_some();
    any.then(|| CircuitBreakers {
        thresholds: vec![t],
        ..CircuitBreakers::default()
    })
}

/// `outlierDetection` → Envoy's: `consecutive5xxErrors` → `consecutive_5xx` (enforced 100%),
/// `consecutiveGatewayErrors` and the deprecated `consecutiveErrors` (502/503/504) →
/// `consecutive_gateway_failure` (enforced 100%), `interval`, `baseEjectionTime`,
/// `maxEjectionPercent`, `minHealthPercent`. Unset counters are not enforced.
fn outlier_detection(od: &Value) -> Option<OutlierDetection> {
    let dur = |key: &str| {
        od.get(key)
            .and_then(Value::as_str)
            .and_then(|s| parse_duration(s).ok())
            .map(duration)
    };
    let five = u32_at(od, "/consecutive5xxErrors");
    let gateway =
        u32_at(od, "/consecutiveGatewayErrors").or_else(|| u32_at(od, "/consecutiveErrors"));
    let enforce = |on: bool| {
        Some(UInt32Value {
            value: if on { 100 } else { 0 },
        })
    };
    Some(OutlierDetection {
        enforcing_consecutive_5xx: enforce(five.as_ref().is_some_and(|v| v.value > 0)),
        consecutive_5xx: five,
        enforcing_consecutive_gateway_failure: enforce(
            gateway.as_ref().is_some_and(|v| v.value > 0),
        ),
        consecutive_gateway_failure: gateway,
        interval: dur("interval"),
        base_ejection_time: dur("baseEjectionTime"),
        max_ejection_percent: u32_at(od, "/maxEjectionPercent"),
        enforcing_success_rate: Some(UInt32Value { value: 0 }),
        ..OutlierDetection::default()
    })
}

/// `envoy.transport_sockets.tls` with Istio's mutual TLS: SDS `default` cert, SDS `ROOTCA`
/// validation, URI SAN exact matches, ALPN `istio`.
fn istio_mtls_socket(sans: &[String], sni: &str) -> TransportSocket {
    let san_matchers = sans
        .iter()
        .map(|san| SubjectAltNameMatcher {
            san_type: subject_alt_name_matcher::SanType::Uri as i32,
            matcher: Some(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(san.clone())),
                ignore_case: false,
            }),
            oid: String::new(),
        })
        .collect();
    let sds = |name: &str| SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ads_config_source()),
    };
    let tls = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds("default")],
            alpn_protocols: vec!["istio".to_string()],
            validation_context_type: Some(
                common_tls_context::ValidationContextType::CombinedValidationContext(
                    common_tls_context::CombinedCertificateValidationContext {
                        default_validation_context: Some(CertificateValidationContext {
                            match_typed_subject_alt_names: san_matchers,
                            ..CertificateValidationContext::default()
                        }),
                        validation_context_sds_secret_config: Some(sds("ROOTCA")),
                        ..Default::default()
                    },
                ),
            ),
            ..CommonTlsContext::default()
        }),
        sni: sni.to_string(),
        ..UpstreamTlsContext::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(
            type_url::UPSTREAM_TLS_CONTEXT,
            &tls,
        ))),
    }
}
