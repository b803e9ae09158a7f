//! The `mixer` HTTP filter, as Istio 1.4's Pilot configured it (pilot/pkg/networking/plugin/mixer):
//! on the HCM a `HttpClientConfig` (transport with the network fail policy, per-service
//! `ServiceConfig`s), and per route a `ServiceConfig` in `typed_per_filter_config["mixer"]`.
//!
//! QuotaSpecs reach a service through QuotaSpecBindings (`services[]` by name/namespace, FQDN, or
//! `service: "*"`; `quotaSpecs[]` by name, namespace defaulting to the binding's) and are put, in
//! `namespace/name` order, into the `quota_spec` of the ServiceConfig of the service's inbound
//! side (where Istio 1.4 enforced them: the destination's sidecar).

use std::collections::BTreeMap;

use mesh_proto::config::{ConfigObject, Kind};
use mesh_proto::envoy::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use mesh_proto::envoy::google::protobuf::Any;
use mesh_proto::istio::mixer::v1::Attributes;
use mesh_proto::istio::mixer::v1::attributes::AttributeValue;
use mesh_proto::istio::mixer::v1::attributes::attribute_value::Value as AttrValue;
use mesh_proto::istio::mixer::v1::config::client as pb;
use mesh_proto::type_url;
use serde::{Deserialize, Serialize};

use super::proxy_info::{ProxyInfo, ProxyType};
use super::resources::pack;
use crate::galley_client::Snapshot;
use crate::model::{Registry, service_fqdn};

/// The filter's name (Istio 1.4's `mixer`), also the `typed_per_filter_config` key.
pub const MIXER_FILTER: &str = "mixer";
/// Istio's default check/report cluster name (the proxy calls its `--mixer-addr`).
const MIXER_CLUSTER: &str = "mixer_server";
/// The `service_configs` key Istio used for outbound listeners.
const DEFAULT_CONFIG: &str = "default";

/// QuotaSpecs and their bindings, read from the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QuotaConfig {
    /// QuotaSpecs by `namespace/name`.
    pub specs: BTreeMap<String, QuotaSpecModel>,
    /// Bindings in `namespace/name` order.
    pub bindings: Vec<QuotaBinding>,
    /// MeshConfig `policyCheckFailOpen`: the mesh-wide network fail policy.
    pub fail_open: bool,
}

/// A binding with its references resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuotaBinding {
    /// `namespace/name` of the binding.
    pub name: String,
    /// Service FQDNs, or `*` for every service.
    pub services: Vec<String>,
    /// `namespace/name` of each QuotaSpec.
    pub specs: Vec<String>,
}

/// `QuotaSpec.spec` (Istio's field names).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QuotaSpecModel {
    pub rules: Vec<QuotaRuleModel>,
}

/// `QuotaRule`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QuotaRuleModel {
    #[serde(rename = "match")]
    pub matches: Vec<AttributeMatchModel>,
    pub quotas: Vec<QuotaModel>,
}

/// `AttributeMatch`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AttributeMatchModel {
    pub clause: BTreeMap<String, StringMatchModel>,
}

/// `StringMatch` (one of exact, prefix, regex).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StringMatchModel {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// `Quota`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QuotaModel {
    pub quota: String,
    pub charge: i32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct BindingSpec {
    services: Vec<IstioServiceModel>,
    quota_specs: Vec<SpecRef>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct IstioServiceModel {
    name: String,
    namespace: String,
    domain: String,
    service: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SpecRef {
    name: String,
    namespace: String,
}

impl QuotaConfig {
    /// Reads the QuotaSpec and QuotaSpecBinding collections; objects that cannot be read are
    /// reported in `problems` and left out.
    pub fn from_snapshot(
        snapshot: &Snapshot,
        domain_suffix: &str,
        problems: &mut Vec<String>,
    ) -> QuotaConfig {
        let mut out = QuotaConfig {
            fail_open: snapshot.mesh_config().policy_check_fail_open,
            ..QuotaConfig::default()
        };
        let mut problem = |obj: &ConfigObject, reason: String| {
            tracing::warn!(object = %obj.key(), kind = %obj.kind, %reason, "config object left out of the registry");
            problems.push(format!("{} {}: {reason}", obj.kind, obj.key()));
        };
        for obj in snapshot.objects(Kind::QuotaSpec) {
            match obj.spec::<QuotaSpecModel>() {
                Ok(spec) => {
                    out.specs.insert(obj.key(), spec);
                }
                Err(e) => problem(obj, e.to_string()),
            }
        }
        for obj in snapshot.objects(Kind::QuotaSpecBinding) {
            let spec: BindingSpec = match obj.spec() {
                Ok(s) => s,
                Err(e) => {
                    problem(obj, e.to_string());
                    continue;
                }
            };
            let ns = &obj.metadata.namespace;
            let or_ns = |n: &str| {
                if n.is_empty() {
                    ns.clone()
                } else {
                    n.to_string()
                }
            };
            let services = spec
                .services
                .iter()
                .map(|s| {
                    if !s.service.is_empty() {
                        s.service.clone()
                    } else {
                        let domain = if s.domain.is_empty() {
                            domain_suffix
                        } else {
                            &s.domain
                        };
                        service_fqdn(&s.name, &or_ns(&s.namespace), domain)
                    }
                })
                .collect();
            let specs = spec
                .quota_specs
                .iter()
                .map(|r| format!("{}/{}", or_ns(&r.namespace), r.name))
                .collect();
            out.bindings.push(QuotaBinding {
                name: obj.key(),
                services,
                specs,
            });
        }
        out.bindings.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The QuotaSpecs bound to the service `fqdn`, in `namespace/name` order, each once.
    pub fn specs_for(&self, fqdn: &str) -> Vec<(&str, &QuotaSpecModel)> {
        let mut names: Vec<&str> = self
            .bindings
            .iter()
            .filter(|b| b.services.iter().any(|s| s == "*" || s == fqdn))
            .flat_map(|b| b.specs.iter().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
            .into_iter()
            .filter_map(|n| self.specs.get_key_value(n))
            .map(|(k, v)| (k.as_str(), v))
            .collect()
    }
}

impl QuotaSpecModel {
    fn to_proto(&self) -> pb::QuotaSpec {
        pb::QuotaSpec {
            rules: self
                .rules
                .iter()
                .map(|r| pb::QuotaRule {
                    r#match: r
                        .matches
                        .iter()
                        .map(|m| pb::AttributeMatch {
                            clause: m
                                .clause
                                .iter()
                                .map(|(k, v)| (k.clone(), v.to_proto()))
                                .collect(),
                        })
                        .collect(),
                    quotas: r
                        .quotas
                        .iter()
                        .map(|q| pb::Quota {
                            quota: q.quota.clone(),
                            charge: q.charge,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl StringMatchModel {
    fn to_proto(&self) -> pb::StringMatch {
        use pb::string_match::MatchType;
        let match_type = match (&self.exact, &self.prefix, &self.regex) {
            (Some(e), _, _) => Some(MatchType::Exact(e.clone())),
            (None, Some(p), _) => Some(MatchType::Prefix(p.clone())),
            (None, None, Some(r)) => Some(MatchType::Regex(r.clone())),
            _ => None,
        };
        pb::StringMatch { match_type }
    }
}

/// The mesh-wide network fail policy: MeshConfig `policyCheckFailOpen` (Istio 1.4's default,
/// false, is FAIL_CLOSE).
pub fn fail_policy(reg: &Registry) -> pb::network_fail_policy::FailPolicy {
    use pb::network_fail_policy::FailPolicy;
    if reg.quotas.fail_open {
        FailPolicy::FailOpen
    } else {
        FailPolicy::FailClose
    }
}

/// MeshConfig `disablePolicyChecks`: proxies make no Check calls (reports go on). Istio 1.4's
/// default is true (no MeshConfig from Galley means checks off); `meshctl up` and the chart set
/// it to false.
pub fn policy_checks_disabled(reg: &Registry) -> bool {
    reg.mesh_config.disable_policy_checks
}

/// MeshConfig `disableMixerHttpReports` (Istio 1.4, default false): proxies send no HTTP
/// Report calls (checks go on).
pub fn http_reports_disabled(reg: &Registry) -> bool {
    reg.mesh_config
        .other
        .get("disableMixerHttpReports")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false)
}

fn transport(reg: &Registry) -> pb::TransportConfig {
    pb::TransportConfig {
        network_fail_policy: Some(pb::NetworkFailPolicy {
            policy: fail_policy(reg) as i32,
            ..pb::NetworkFailPolicy::default()
        }),
        check_cluster: MIXER_CLUSTER.to_string(),
        report_cluster: MIXER_CLUSTER.to_string(),
        ..pb::TransportConfig::default()
    }
}

fn string_attr(v: &str) -> AttributeValue {
    AttributeValue {
        value: Some(AttrValue::StringValue(v.to_string())),
    }
}

/// Istio's `destination.service.*` attributes of a service.
fn destination_attributes(reg: &Registry, fqdn: &str) -> Attributes {
    let mut attributes = BTreeMap::new();
    attributes.insert("destination.service.host".to_string(), string_attr(fqdn));
    if let Some(svc) = reg.services.get(fqdn) {
        let uid = format!("istio://{}/services/{}", svc.namespace, svc.name);
        attributes.insert("destination.service.uid".to_string(), string_attr(&uid));
        attributes.insert(
            "destination.service.name".to_string(),
            string_attr(&svc.name),
        );
        attributes.insert(
            "destination.service.namespace".to_string(),
            string_attr(&svc.namespace),
        );
    }
    Attributes { attributes }
}

/// The inbound ServiceConfig of the service `fqdn`: its attributes and bound QuotaSpecs, and
/// Check/Report turned off as the MeshConfig says.
pub fn service_config(reg: &Registry, fqdn: &str) -> pb::ServiceConfig {
    pb::ServiceConfig {
        disable_check_calls: policy_checks_disabled(reg),
        disable_report_calls: http_reports_disabled(reg),
        mixer_attributes: Some(destination_attributes(reg, fqdn)),
        quota_spec: reg
            .quotas
            .specs_for(fqdn)
            .into_iter()
            .map(|(_, s)| s.to_proto())
            .collect(),
        ..pb::ServiceConfig::default()
    }
}

/// The services whose instances are `proxy` (its pod, or its IP when that is not loopback).
pub fn services_of(reg: &Registry, proxy: &ProxyInfo) -> Vec<String> {
    let pod = format!("{}/{}", proxy.namespace, proxy.pod);
    let loopback = proxy
        .ip
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified());
    reg.services
        .values()
        .filter(|s| {
            s.instances
                .values()
                .flatten()
                .any(|i| i.pod.as_deref() == Some(pod.as_str()) || (!loopback && i.ip == proxy.ip))
        })
        .map(|s| s.fqdn.clone())
        .collect()
}

fn filter_of(config: &pb::HttpClientConfig) -> HttpFilter {
    HttpFilter {
        name: MIXER_FILTER.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack(
            type_url::MIXER_HTTP_CLIENT_CONFIG,
            config,
        ))),
        ..HttpFilter::default()
    }
}

/// The `mixer` filter of a sidecar's inbound HCM: one ServiceConfig per service the proxy is an
/// instance of (keyed by FQDN, the first the default destination service).
pub fn inbound_filter(reg: &Registry, proxy: &ProxyInfo) -> HttpFilter {
    let services = services_of(reg, proxy);
    let mut mixer_attributes = BTreeMap::new();
    mixer_attributes.insert(
        "destination.uid".to_string(),
        string_attr(&format!("kubernetes://{}.{}", proxy.pod, proxy.namespace)),
    );
    let config = pb::HttpClientConfig {
        transport: Some(transport(reg)),
        default_destination_service: services.first().cloned().unwrap_or_default(),
        service_configs: services
            .iter()
            .map(|fqdn| (fqdn.clone(), service_config(reg, fqdn)))
            .collect(),
        mixer_attributes: Some(Attributes {
            attributes: mixer_attributes,
        }),
        forward_attributes: None,
    };
    filter_of(&config)
}

/// The inbound route's `typed_per_filter_config["mixer"]`, when the proxy is an instance of
/// exactly one service (one inline route serves every service of the workload; with several,
/// the proxy picks the HCM's ServiceConfig by destination service).
pub fn inbound_route_config(reg: &Registry, proxy: &ProxyInfo) -> Option<Any> {
    match services_of(reg, proxy).as_slice() {
        [only] => Some(pack(
            type_url::MIXER_SERVICE_CONFIG,
            &service_config(reg, only),
        )),
        _ => None,
    }
}

/// The `mixer` filter of an outbound HCM (the sidecar's `virtualOutbound`, a gateway's
/// listeners): the transport, and checks disabled on sidecars (Istio: outbound policy checks
/// only on gateways) or mesh-wide by the MeshConfig, reports by the MeshConfig.
pub fn outbound_filter(reg: &Registry, proxy_type: ProxyType) -> HttpFilter {
    let default = pb::ServiceConfig {
        disable_check_calls: proxy_type == ProxyType::Sidecar || policy_checks_disabled(reg),
        disable_report_calls: http_reports_disabled(reg),
        ..pb::ServiceConfig::default()
    };
    let config = pb::HttpClientConfig {
        transport: Some(transport(reg)),
        default_destination_service: DEFAULT_CONFIG.to_string(),
        service_configs: [(DEFAULT_CONFIG.to_string(), default)]
            .into_iter()
            .collect(),
        ..pb::HttpClientConfig::default()
    };
    filter_of(&config)
}

#[cfg(test)]
mod tests;
