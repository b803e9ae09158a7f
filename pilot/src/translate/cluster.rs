//! CDS: one EDS cluster per service port, plus one per DestinationRule subset.

use std::time::Duration as StdDuration;

use mesh_proto::config::{Subset, TrafficPolicy};
use mesh_proto::envoy::envoy::config::cluster::v3::{Cluster, cluster};
use mesh_proto::envoy::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, TransportSocket, config_source,
    transport_socket,
};
use mesh_proto::envoy::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SdsSecretConfig, SubjectAltNameMatcher,
    UpstreamTlsContext, common_tls_context, subject_alt_name_matcher,
};
use mesh_proto::envoy::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use mesh_proto::type_url;

use super::duration::parse_duration;
use super::names::{cluster_name, sni, spiffe};
use super::resources::{duration, pack};
use crate::model::{Registry, Service};

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
    let mut out = Vec::new();
    for svc in reg.services.values() {
        let dr = reg.destination_rule(&svc.fqdn);
        let top = dr.and_then(|d| d.spec.traffic_policy.as_ref());
        let subsets: &[Subset] = dr.map(|d| d.spec.subsets.as_slice()).unwrap_or_default();
        let sans = service_sans(svc, trust_domain);
        for port in &svc.ports {
            out.push(build(svc, port.port, "", top, None, &sans));
            for subset in subsets {
                out.push(build(
                    svc,
                    port.port,
                    &subset.name,
                    top,
                    subset.traffic_policy.as_ref(),
                    &sans,
                ));
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    out
}

/// SPIFFE ids of every service account behind `svc`.
fn service_sans(svc: &Service, trust_domain: &str) -> Vec<String> {
    svc.service_accounts()
        .iter()
        .map(|sa| spiffe(trust_domain, &svc.namespace, sa))
        .collect()
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
    let pick = |f: fn(&TrafficPolicy) -> Option<&serde_json::Value>| {
        local.and_then(f).or_else(|| top.and_then(f))
    };
    let tls_mode = local
        .and_then(|p| p.tls.as_ref())
        .or_else(|| top.and_then(|p| p.tls.as_ref()))
        .and_then(|t| t.mode.clone());
    let connect_timeout = pick(|p| p.connection_pool.as_ref())
        .and_then(|cp| cp.pointer("/tcp/connectTimeout"))
        .and_then(|v| v.as_str())
        .and_then(|s| parse_duration(s).ok())
        .unwrap_or(CONNECT_TIMEOUT);
    let lb_policy = match pick(|p| p.load_balancer.as_ref())
        .and_then(|lb| lb.get("simple"))
        .and_then(|v| v.as_str())
    {
        Some("LEAST_CONN" | "LEAST_REQUEST") => cluster::LbPolicy::LeastRequest,
        Some("RANDOM") => cluster::LbPolicy::Random,
        _ => cluster::LbPolicy::RoundRobin,
    };
    let transport_socket = (tls_mode.as_deref() != Some("DISABLE"))
        .then(|| istio_mtls_socket(sans, &sni(port, subset, &svc.fqdn)));
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
        ..Cluster::default()
    }
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
