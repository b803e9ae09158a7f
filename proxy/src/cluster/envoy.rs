//! Envoy `Cluster` fields → discovery type, load balancing, circuit breaker and outlier
//! detection settings, TLS origination from `UpstreamTlsContext`, and
//! `ClusterLoadAssignment`s → endpoints. Called by `xds::decode`;
//! errors are `(field, reason)`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mesh_proto::envoy::envoy::config::cluster::v3::{Cluster as EnvoyCluster, cluster};
use mesh_proto::envoy::envoy::config::core::v3::{RoutingPriority, address, socket_address};
use mesh_proto::envoy::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use mesh_proto::envoy::google::protobuf::Duration as PbDuration;

use std::path::PathBuf;

use mesh_proto::envoy::envoy::config::core::v3::{DataSource, data_source};
use mesh_proto::envoy::envoy::extensions::transport_sockets::tls::v3::{
    UpstreamTlsContext, certificate_validation_context, common_tls_context,
    subject_alt_name_matcher,
};
use mesh_proto::envoy::envoy::r#type::matcher::v3::string_matcher::MatchPattern;

use crate::tls::{Origination, OriginationSpec, SanKind, SanMatch};

use super::discovery::{
    DEFAULT_DNS_REFRESH, Discovery, DnsMode, DnsSpec, DnsTarget, Locality, LookupFamily,
};
use super::endpoints::Endpoint;
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
        // The only policy an ORIGINAL_DST cluster may have: its one host is the destination.
        Ok(cluster::LbPolicy::ClusterProvided)
            if discovery_type(c) == Ok(DiscoveryType::OriginalDst) =>
        {
            Ok(LbPolicy::RoundRobin)
        }
        other => Err((
            "lb_policy".into(),
            format!(
                "{other:?} is not supported (ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV)"
            ),
        )),
    }
}

use cluster::DiscoveryType;

/// The cluster's `type`. Absent, it is EDS unless the cluster carries a `load_assignment`
/// (then STATIC, Envoy's default).
fn discovery_type(c: &EnvoyCluster) -> Result<DiscoveryType, FieldError> {
    match &c.cluster_discovery_type {
        None if c.load_assignment.is_some() => Ok(DiscoveryType::Static),
        None => Ok(DiscoveryType::Eds),
        Some(cluster::ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(*t)
            .map_err(|_| ("type".to_string(), format!("unknown discovery type {t}"))),
        Some(cluster::ClusterDiscoveryType::ClusterType(ct)) => Err((
            "cluster_type".into(),
            format!("custom cluster type {:?} is not supported", ct.name),
        )),
    }
}

/// The discovery type and, for STATIC clusters, the endpoints of `load_assignment`.
#[allow(deprecated)] // `dns_refresh_rate`: still what Istio sends
pub fn discovery(c: &EnvoyCluster) -> Result<(Discovery, Option<Vec<Endpoint>>), FieldError> {
    let ty = discovery_type(c)?;
    let inline = || -> Result<Vec<LbHost>, FieldError> {
        match &c.load_assignment {
            Some(cla) => lb_hosts(cla).map_err(|(f, r)| (format!("load_assignment.{f}"), r)),
            None => Ok(Vec::new()),
        }
    };
    Ok(match ty {
        DiscoveryType::Eds => (Discovery::Eds, None),
        DiscoveryType::OriginalDst => (Discovery::OriginalDst, None),
        DiscoveryType::Static => {
            let mut endpoints = Vec::new();
            for (i, h) in inline()?.into_iter().enumerate() {
                endpoints.push(h.resolved().ok_or_else(|| {
                    (
                        format!("load_assignment.endpoint[{i}]"),
                        format!("address {:?} is not an IP (STATIC cluster)", h.host),
                    )
                })?);
            }
            (Discovery::Static, Some(endpoints))
        }
        DiscoveryType::StrictDns | DiscoveryType::LogicalDns => {
            let mode = if ty == DiscoveryType::StrictDns {
                DnsMode::Strict
            } else {
                DnsMode::Logical
            };
            let hosts = inline()?;
            if mode == DnsMode::Logical && hosts.len() > 1 {
                return Err((
                    "load_assignment".into(),
                    "a LOGICAL_DNS cluster takes a single lb_endpoint".into(),
                ));
            }
            let family = match cluster::DnsLookupFamily::try_from(c.dns_lookup_family) {
                Ok(cluster::DnsLookupFamily::Auto) => LookupFamily::Auto,
                Ok(cluster::DnsLookupFamily::V4Only) => LookupFamily::V4Only,
                Ok(cluster::DnsLookupFamily::V6Only) => LookupFamily::V6Only,
                Ok(cluster::DnsLookupFamily::V4Preferred) => LookupFamily::V4Preferred,
                Ok(cluster::DnsLookupFamily::All) => LookupFamily::All,
                Err(_) => {
                    return Err((
                        "dns_lookup_family".into(),
                        format!("unknown value {}", c.dns_lookup_family),
                    ));
                }
            };
            let refresh = match &c.dns_refresh_rate {
                None => DEFAULT_DNS_REFRESH,
                Some(d) => {
                    let d = dur_field("dns_refresh_rate", d)?;
                    // Envoy: must be > 1 ms.
                    if d <= Duration::from_millis(1) {
                        return Err(("dns_refresh_rate".into(), "must be above 1ms".into()));
                    }
                    d
                }
            };
            let targets = hosts
                .into_iter()
                .map(|h| DnsTarget {
                    host: h.host,
                    port: h.port,
                    weight: h.weight,
                    priority: h.priority,
                    locality: h.locality,
                })
                .collect();
            (
                Discovery::Dns(Arc::new(DnsSpec {
                    mode,
                    family,
                    refresh,
                    targets,
                })),
                None,
            )
        }
    })
}

/// One healthy `lb_endpoint`: an address that may still be a host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbHost {
    pub host: String,
    pub port: u16,
    pub weight: u32,
    pub priority: u32,
    pub locality: Option<Locality>,
}

impl LbHost {
    /// The endpoint, when the host is an IP address.
    pub fn resolved(&self) -> Option<Endpoint> {
        let ip: IpAddr = self.host.parse().ok()?;
        Some(Endpoint {
            addr: SocketAddr::new(ip, self.port),
            weight: self.weight,
            priority: self.priority,
            locality: self.locality.clone(),
        })
    }
}

/// The healthy endpoints of a load assignment (UNHEALTHY, DRAINING and TIMEOUT ones dropped),
/// with the endpoint's `load_balancing_weight` (unset or 0: 1), its locality's `priority`
/// and `locality`.
pub fn lb_hosts(cla: &ClusterLoadAssignment) -> Result<Vec<LbHost>, FieldError> {
    let mut out = Vec::new();
    for (li, loc) in cla.endpoints.iter().enumerate() {
        let locality = loc.locality.as_ref().map(|l| Locality {
            region: l.region.clone(),
            zone: l.zone.clone(),
            sub_zone: l.sub_zone.clone(),
        });
        for (ei, lb) in loc.lb_endpoints.iter().enumerate() {
            // UNHEALTHY = 2, DRAINING = 3, TIMEOUT = 4
            if matches!(lb.health_status, 2..=4) {
                continue;
            }
            let field = format!("endpoints[{li}].lb_endpoints[{ei}]");
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &lb.host_identifier else {
                return Err((field, "no endpoint".into()));
            };
            let Some(address::Address::SocketAddress(sa)) =
                ep.address.as_ref().and_then(|a| a.address.as_ref())
            else {
                return Err((field, "no socket address".into()));
            };
            let port = match sa.port_specifier {
                Some(socket_address::PortSpecifier::PortValue(p)) => u16::try_from(p)
                    .map_err(|_| (field.clone(), format!("port {p} out of range")))?,
                _ => return Err((field, "no port_value".into())),
            };
            if sa.address.is_empty() {
                return Err((field, "empty address".into()));
            }
            out.push(LbHost {
                host: sa.address.clone(),
                port,
                weight: lb.load_balancing_weight.map_or(1, |w| w.value.max(1)),
                priority: loc.priority,
                locality: locality.clone(),
            });
        }
    }
    Ok(out)
}

fn dur_field(field: &str, d: &PbDuration) -> Result<Duration, FieldError> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err((field.into(), "negative or malformed duration".into()));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
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

/// TLS origination (DestinationRule SIMPLE/MUTUAL) from an `UpstreamTlsContext`; `None` when
/// the context is Istio's mesh mTLS (SDS secrets, ALPN `istio`, or an `outbound_.` SNI), which
/// uses the workload identity. Certificates and the CA are filename data sources, read now: a
/// missing file refuses the cluster, as Envoy does.
pub fn origination(ctx: &UpstreamTlsContext) -> Result<Option<Origination>, FieldError> {
    use common_tls_context::ValidationContextType as V;
    let common = ctx.common_tls_context.clone().unwrap_or_default();
    let sds_validation = matches!(
        &common.validation_context_type,
        Some(V::CombinedValidationContext(c)) if c.validation_context_sds_secret_config.is_some()
    ) || matches!(
        &common.validation_context_type,
        Some(V::ValidationContextSdsSecretConfig(_))
    );
    let mesh = !common.tls_certificate_sds_secret_configs.is_empty()
        || sds_validation
        || common.alpn_protocols.iter().any(|p| p == "istio")
        || ctx.sni.starts_with("outbound_.");
    if mesh {
        return Ok(None);
    }
    let field = "common_tls_context";
    let file = |d: &Option<DataSource>, what: &str| -> Result<PathBuf, FieldError> {
        match d.as_ref().and_then(|d| d.specifier.as_ref()) {
            Some(data_source::Specifier::Filename(f)) if !f.is_empty() => Ok(PathBuf::from(f)),
            _ => Err((
                format!("{field}.{what}"),
                "only filename data sources are supported".into(),
            )),
        }
    };
    let client_cert = match common.tls_certificates.as_slice() {
        [] => None,
        [c] => Some((
            file(
                &c.certificate_chain,
                "tls_certificates[0].certificate_chain",
            )?,
            file(&c.private_key, "tls_certificates[0].private_key")?,
        )),
        _ => {
            return Err((
                format!("{field}.tls_certificates"),
                "at most one certificate".into(),
            ));
        }
    };
    let validation = match common.validation_context_type {
        None => None,
        Some(V::ValidationContext(v)) => Some(v),
        Some(V::CombinedValidationContext(c)) => c.default_validation_context,
        Some(_) => {
            return Err((
                format!("{field}.validation_context_type"),
                "not supported for TLS origination".into(),
            ));
        }
    };
    let mut spec = OriginationSpec {
        client_cert,
        sni: ctx.sni.clone(),
        ..OriginationSpec::default()
    };
    if let Some(v) = validation {
        let vf = format!("{field}.validation_context");
        if v.trusted_ca.is_some() {
            spec.trusted_ca = Some(file(&v.trusted_ca, "validation_context.trusted_ca")?);
        }
        spec.insecure_skip_verify = v.trust_chain_verification
            == certificate_validation_context::TrustChainVerification::AcceptUntrusted as i32;
        for (i, m) in v.match_typed_subject_alt_names.iter().enumerate() {
            let at = format!("{vf}.match_typed_subject_alt_names[{i}]");
            let kind = match subject_alt_name_matcher::SanType::try_from(m.san_type) {
                Ok(subject_alt_name_matcher::SanType::Dns) => SanKind::Dns,
                Ok(subject_alt_name_matcher::SanType::Uri) => SanKind::Uri,
                Ok(subject_alt_name_matcher::SanType::IpAddress) => SanKind::Ip,
                _ => return Err((at, "only DNS, URI and IP_ADDRESS SANs".into())),
            };
            let Some(MatchPattern::Exact(value)) =
                m.matcher.as_ref().and_then(|m| m.match_pattern.clone())
            else {
                return Err((at, "only exact matchers".into()));
            };
            spec.sans.push(SanMatch { kind, value });
        }
    }
    Origination::build(spec)
        .map(Some)
        .map_err(|e| (field.to_string(), e.to_string()))
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

    use mesh_proto::envoy::envoy::config::core::v3::{
        Address, Locality as PbLocality, SocketAddress,
    };
    use mesh_proto::envoy::envoy::config::endpoint::v3::{
        Endpoint as PbEndpoint, LbEndpoint, LocalityLbEndpoints,
    };

    fn lb(host: &str, port: u32, weight: Option<u32>, health: i32) -> LbEndpoint {
        LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(PbEndpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: host.into(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            load_balancing_weight: weight.map(|value| UInt32Value { value }),
            health_status: health,
            ..Default::default()
        }
    }

    fn typed(t: DiscoveryType, hosts: Vec<LocalityLbEndpoints>) -> EnvoyCluster {
        EnvoyCluster {
            name: "c".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(t as i32)),
            load_assignment: Some(ClusterLoadAssignment {
                cluster_name: "c".into(),
                endpoints: hosts,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn discovery_types_and_inline_endpoints() {
        let locs = vec![
            LocalityLbEndpoints {
                locality: Some(PbLocality {
                    region: "us-east".into(),
                    zone: "a".into(),
                    ..Default::default()
                }),
                lb_endpoints: vec![lb("10.0.0.1", 80, Some(3), 0), lb("10.0.0.9", 80, None, 2)],
                priority: 1,
                ..Default::default()
            },
            LocalityLbEndpoints {
                lb_endpoints: vec![lb("10.0.0.2", 81, None, 1)],
                ..Default::default()
            },
        ];
        // STATIC: IPs only, unhealthy dropped, weight/priority/locality kept.
        let (d, eps) = discovery(&typed(DiscoveryType::Static, locs.clone())).unwrap();
        assert_eq!(d, Discovery::Static);
        let eps = eps.unwrap();
        assert_eq!(eps.len(), 2);
        assert_eq!((eps[0].weight, eps[0].priority), (3, 1));
        assert_eq!(eps[0].locality.as_ref().unwrap().zone, "a");
        assert_eq!(
            (eps[1].addr.port(), eps[1].weight, eps[1].priority),
            (81, 1, 0)
        );
        // BlackHoleCluster: STATIC without endpoints.
        let bh = EnvoyCluster {
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                DiscoveryType::Static as i32,
            )),
            ..Default::default()
        };
        assert_eq!(discovery(&bh).unwrap(), (Discovery::Static, Some(vec![])));
        let named = typed(
            DiscoveryType::Static,
            vec![LocalityLbEndpoints {
                lb_endpoints: vec![lb("db.example", 80, None, 0)],
                ..Default::default()
            }],
        );
        assert!(discovery(&named).unwrap_err().1.contains("not an IP"));
        // STRICT_DNS: names allowed, V4_ONLY, refresh rate.
        let mut dns = named.clone();
        dns.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
            DiscoveryType::StrictDns as i32,
        ));
        dns.dns_lookup_family = cluster::DnsLookupFamily::V4Only as i32;
        #[allow(deprecated)]
        {
            dns.dns_refresh_rate = Some(PbDuration {
                seconds: 2,
                nanos: 0,
            });
        }
        let Discovery::Dns(spec) = discovery(&dns).unwrap().0 else {
            panic!("not dns")
        };
        assert_eq!(spec.mode, DnsMode::Strict);
        assert_eq!(spec.family, LookupFamily::V4Only);
        assert_eq!(spec.refresh, Duration::from_secs(2));
        assert_eq!(spec.targets[0].host, "db.example");
        // LOGICAL_DNS: default refresh 5 s, AUTO; a single lb_endpoint only.
        let logical = typed(DiscoveryType::LogicalDns, locs[1..].to_vec());
        let Discovery::Dns(spec) = discovery(&logical).unwrap().0 else {
            panic!("not dns")
        };
        assert_eq!(
            (spec.mode, spec.family, spec.refresh),
            (DnsMode::Logical, LookupFamily::Auto, DEFAULT_DNS_REFRESH)
        );
        let two = typed(DiscoveryType::LogicalDns, locs.clone());
        assert_eq!(discovery(&two).unwrap_err().0, "load_assignment");
        // ORIGINAL_DST takes CLUSTER_PROVIDED.
        let od = EnvoyCluster {
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32,
            )),
            lb_policy: cluster::LbPolicy::ClusterProvided as i32,
            ..Default::default()
        };
        assert_eq!(discovery(&od).unwrap().0, Discovery::OriginalDst);
        assert_eq!(lb_policy(&od).unwrap(), LbPolicy::RoundRobin);
        // No type: EDS (STATIC when endpoints are inline); custom types are refused.
        assert_eq!(
            discovery(&EnvoyCluster::default()).unwrap().0,
            Discovery::Eds
        );
        let custom = EnvoyCluster {
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::ClusterType(
                Default::default(),
            )),
            ..Default::default()
        };
        assert_eq!(discovery(&custom).unwrap_err().0, "cluster_type");
    }

    #[test]
    fn upstream_tls_contexts_are_mesh_or_origination() {
        use mesh_proto::envoy::envoy::extensions::transport_sockets::tls::v3::{
            CertificateValidationContext, CommonTlsContext, SdsSecretConfig, SubjectAltNameMatcher,
            TlsCertificate,
        };
        use mesh_proto::envoy::envoy::r#type::matcher::v3::StringMatcher;
        let file = |p: &std::path::Path| DataSource {
            specifier: Some(data_source::Specifier::Filename(p.display().to_string())),
            ..Default::default()
        };
        // Istio mTLS (SDS secrets): the workload identity, no origination.
        let mesh = UpstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificate_sds_secret_configs: vec![SdsSecretConfig {
                    name: "default".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            sni: "x".into(),
            ..Default::default()
        };
        assert!(origination(&mesh).unwrap().is_none());
        // Pilot's MUTUAL: files, SNI, SANs.
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let mutual = |ca: &std::path::Path| UpstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificates: vec![TlsCertificate {
                    certificate_chain: Some(file(&cert_path)),
                    private_key: Some(file(&key_path)),
                    ..Default::default()
                }],
                validation_context_type: Some(
                    common_tls_context::ValidationContextType::ValidationContext(
                        CertificateValidationContext {
                            trusted_ca: Some(file(ca)),
                            match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
                                san_type: subject_alt_name_matcher::SanType::Dns as i32,
                                matcher: Some(StringMatcher {
                                    match_pattern: Some(MatchPattern::Exact(
                                        "api.example.com".into(),
                                    )),
                                    ignore_case: false,
                                }),
                                oid: String::new(),
                            }],
                            ..Default::default()
                        },
                    ),
                ),
                ..Default::default()
            }),
            sni: "api.example.com".into(),
            ..Default::default()
        };
        let o = origination(&mutual(&cert_path)).unwrap().unwrap();
        assert_eq!(o.spec.sni, "api.example.com");
        assert_eq!(
            o.spec.client_cert,
            Some((cert_path.clone(), key_path.clone()))
        );
        assert_eq!(o.spec.trusted_ca.as_deref(), Some(cert_path.as_path()));
        assert_eq!(
            o.spec.sans,
            vec![SanMatch {
                kind: SanKind::Dns,
                value: "api.example.com".into()
            }]
        );
        assert!(!o.spec.insecure_skip_verify);
        // A CA file that is not there refuses the cluster.
        let missing = origination(&mutual(&dir.path().join("nope.pem"))).unwrap_err();
        assert_eq!(missing.0, "common_tls_context");
        assert!(missing.1.contains("nope.pem"), "{}", missing.1);
        // SIMPLE without a CA: the system roots; ACCEPT_UNTRUSTED: insecure.
        let simple = UpstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                validation_context_type: Some(
                    common_tls_context::ValidationContextType::ValidationContext(
                        CertificateValidationContext {
                            trust_chain_verification:
                                certificate_validation_context::TrustChainVerification::AcceptUntrusted
                                    as i32,
                            ..Default::default()
                        },
                    ),
                ),
                ..Default::default()
            }),
            sni: "api.example.com".into(),
            ..Default::default()
        };
        let o = origination(&simple).unwrap().unwrap();
        assert!(o.spec.insecure_skip_verify && o.spec.trusted_ca.is_none());
        assert!(o.spec.client_cert.is_none());
    }
}
