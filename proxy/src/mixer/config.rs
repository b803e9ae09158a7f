//! The `mixer` HTTP filter's configuration from Pilot (Istio 1.4's
//! `istio.mixer.v1.config.client.HttpClientConfig` on the HCM, `ServiceConfig` per route) and what
//! it asks of one request: whether to Check, the quotas to charge, the network fail policy.
//!
//! The ServiceConfig in force is the route's (`typed_per_filter_config["mixer"]`), else the one
//! for the request's destination service, else the default destination service's — the order of
//! Istio's mixer filter. A QuotaRule applies when it has no match, or any of its AttributeMatch
//! clauses holds (every attribute of the clause a string matching exact / prefix / whole regex).

use std::collections::BTreeMap;
use std::sync::Arc;

use mesh_proto::attributes::{Bag, Value};
use mesh_proto::envoy::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier, http_filter,
};
use mesh_proto::envoy::google::protobuf::Any;
use mesh_proto::istio::mixer::v1::Attributes;
use mesh_proto::istio::mixer::v1::attributes::attribute_value::Value as AttrValue;
use mesh_proto::istio::mixer::v1::config::client as pb;
use mesh_proto::type_url;
use prost::Message;
use serde::Serialize;

/// The filter's name in `http_filters` and `typed_per_filter_config`.
pub const MIXER_FILTER: &str = "mixer";

/// What the proxy does when Mixer cannot be reached or does not answer in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum FailPolicy {
    /// Forward the request (the mesh's behaviour without a mixer filter config).
    #[default]
    FailOpen,
    /// Answer 503 `UNAVAILABLE`.
    FailClose,
}

impl FailPolicy {
    fn from_proto(p: Option<&pb::NetworkFailPolicy>) -> Option<FailPolicy> {
        let p = p?;
        Some(
            match pb::network_fail_policy::FailPolicy::try_from(p.policy) {
                Ok(pb::network_fail_policy::FailPolicy::FailClose) => FailPolicy::FailClose,
                _ => FailPolicy::FailOpen,
            },
        )
    }
}

/// A regular expression matched against the whole value.
#[derive(Debug, Clone)]
pub struct Pattern(regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}
impl Eq for Pattern {}
impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

/// One attribute condition of a clause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(Pattern),
}

impl StringMatch {
    fn matches(&self, v: &str) -> bool {
        match self {
            StringMatch::Exact(e) => v == e,
            StringMatch::Prefix(p) => v.starts_with(p.as_str()),
            StringMatch::Regex(r) => r.0.is_match(v),
        }
    }
}

/// A QuotaRule: its clauses (any may match; none = every request) and quotas to charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaRule {
    pub clauses: Vec<Vec<(String, StringMatch)>>,
    /// (quota name, amount).
    pub quotas: Vec<(String, i64)>,
}

impl QuotaRule {
    fn applies(&self, bag: &Bag) -> bool {
        self.clauses.is_empty()
            || self.clauses.iter().any(|clause| {
                clause
                    .iter()
                    .all(|(name, m)| bag.get_string(name).is_some_and(|v| m.matches(v)))
            })
    }
}

/// A decoded `ServiceConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServiceConfig {
    pub disable_check_calls: bool,
    pub disable_report_calls: bool,
    /// Overrides the transport's policy when set.
    pub network_fail_policy: Option<FailPolicy>,
    /// Static attributes added to Check and Report (string values).
    pub mixer_attributes: BTreeMap<String, String>,
    pub quota_rules: Vec<QuotaRule>,
}

/// A decoded `HttpClientConfig` (plus the inline route's override on `virtualInbound`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MixerFilter {
    pub fail_policy: FailPolicy,
    pub default_destination_service: String,
    pub service_configs: BTreeMap<String, Arc<ServiceConfig>>,
    pub mixer_attributes: BTreeMap<String, String>,
    /// The route's `typed_per_filter_config["mixer"]` (inline route config only).
    pub route: Option<Arc<ServiceConfig>>,
}

/// What the filter asks of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestPolicy {
    /// Skip Check (the request goes on).
    pub skip_check: bool,
    /// Skip Report (`disable_report_calls`: MeshConfig `disableMixerHttpReports`).
    pub skip_report: bool,
    /// Quotas to charge: (name, amount), each name once.
    pub quotas: Vec<(String, i64)>,
    pub fail_policy: FailPolicy,
}

/// A config Pilot sent that cannot be used: (field, reason).
pub type ConfigError = (String, String);

fn strings(a: Option<&Attributes>) -> BTreeMap<String, String> {
    a.map(|a| {
        a.attributes
            .iter()
            .filter_map(|(k, v)| match &v.value {
                Some(AttrValue::StringValue(s)) => Some((k.clone(), s.clone())),
                _ => None,
            })
            .collect()
    })
    .unwrap_or_default()
}

impl ServiceConfig {
    /// Decodes a ServiceConfig (regexes compiled; a bad one is an error naming its field).
    pub fn decode(sc: &pb::ServiceConfig) -> Result<ServiceConfig, ConfigError> {
        let mut quota_rules = Vec::new();
        for (si, spec) in sc.quota_spec.iter().enumerate() {
            for (ri, rule) in spec.rules.iter().enumerate() {
                let field = format!("quota_spec[{si}].rules[{ri}]");
                let mut clauses = Vec::new();
                for (mi, m) in rule.r#match.iter().enumerate() {
                    let mut clause = Vec::new();
                    for (name, sm) in &m.clause {
                        use pb::string_match::MatchType;
                        let at = || format!("{field}.match[{mi}].clause[{name}]");
                        let m = match &sm.match_type {
                            Some(MatchType::Exact(e)) => StringMatch::Exact(e.clone()),
                            Some(MatchType::Prefix(p)) => StringMatch::Prefix(p.clone()),
                            Some(MatchType::Regex(r)) => StringMatch::Regex(Pattern(
                                regex::Regex::new(&format!("^(?:{r})$"))
                                    .map_err(|e| (at(), format!("invalid regex: {e}")))?,
                            )),
                            None => return Err((at(), "no match type".into())),
                        };
                        clause.push((name.clone(), m));
                    }
                    clauses.push(clause);
                }
                let quotas = rule
                    .quotas
                    .iter()
                    .filter(|q| !q.quota.is_empty())
                    .map(|q| (q.quota.clone(), i64::from(q.charge.max(0))))
                    .collect();
                quota_rules.push(QuotaRule { clauses, quotas });
            }
        }
        Ok(ServiceConfig {
            disable_check_calls: sc.disable_check_calls,
            disable_report_calls: sc.disable_report_calls,
            network_fail_policy: FailPolicy::from_proto(sc.network_fail_policy.as_ref()),
            mixer_attributes: strings(sc.mixer_attributes.as_ref()),
            quota_rules,
        })
    }

    /// The quotas the rules matching `bag` charge, summed per name, in first-seen order.
    pub fn quotas(&self, bag: &Bag) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = Vec::new();
        for rule in self.quota_rules.iter().filter(|r| r.applies(bag)) {
            for (name, amount) in &rule.quotas {
                match out.iter_mut().find(|(n, _)| n == name) {
                    Some((_, a)) => *a += amount,
                    None => out.push((name.clone(), *amount)),
                }
            }
        }
        out
    }
}

fn decode_any(any: &Any, expected: &str) -> Result<Vec<u8>, String> {
    if any.type_url != expected {
        return Err(format!("type {}, expected {expected}", any.type_url));
    }
    Ok(any.value.clone())
}

impl MixerFilter {
    /// The mixer filter of an HTTP connection manager, when it has one; an inline route
    /// config's first route's per-filter config becomes the route override.
    pub fn from_hcm(hcm: &HttpConnectionManager) -> Result<Option<MixerFilter>, ConfigError> {
        let Some((i, f)) = hcm
            .http_filters
            .iter()
            .enumerate()
            .find(|(_, f)| f.name == MIXER_FILTER)
        else {
            return Ok(None);
        };
        let field = format!("http_filters[{i}]");
        let Some(http_filter::ConfigType::TypedConfig(tc)) = &f.config_type else {
            return Ok(Some(MixerFilter::default()));
        };
        let bytes =
            decode_any(tc, type_url::MIXER_HTTP_CLIENT_CONFIG).map_err(|e| (field.clone(), e))?;
        let cfg = pb::HttpClientConfig::decode(bytes.as_slice())
            .map_err(|e| (field.clone(), e.to_string()))?;
        let mut filter = MixerFilter::decode(&cfg).map_err(|(f, r)| (format!("{field}.{f}"), r))?;
        if let Some(RouteSpecifier::RouteConfig(rc)) = &hcm.route_specifier
            && let Some(any) = rc
                .virtual_hosts
                .first()
                .and_then(|vh| vh.routes.first())
                .and_then(|r| r.typed_per_filter_config.get(MIXER_FILTER))
        {
            let field = "route_config.virtual_hosts[0].routes[0].typed_per_filter_config[mixer]";
            filter.route = Some(Arc::new(Self::route_config(any).map_err(|(f, r)| {
                (
                    if f.is_empty() {
                        field.to_string()
                    } else {
                        format!("{field}.{f}")
                    },
                    r,
                )
            })?));
        }
        Ok(Some(filter))
    }

    /// A route's `typed_per_filter_config["mixer"]` (a `ServiceConfig`).
    pub fn route_config(any: &Any) -> Result<ServiceConfig, ConfigError> {
        let bytes =
            decode_any(any, type_url::MIXER_SERVICE_CONFIG).map_err(|e| (String::new(), e))?;
        let sc = pb::ServiceConfig::decode(bytes.as_slice())
            .map_err(|e| (String::new(), e.to_string()))?;
        ServiceConfig::decode(&sc)
    }

    /// Decodes an `HttpClientConfig`.
    pub fn decode(cfg: &pb::HttpClientConfig) -> Result<MixerFilter, ConfigError> {
        let mut service_configs = BTreeMap::new();
        for (name, sc) in &cfg.service_configs {
            let decoded = ServiceConfig::decode(sc)
                .map_err(|(f, r)| (format!("service_configs[{name}].{f}"), r))?;
            service_configs.insert(name.clone(), Arc::new(decoded));
        }
        Ok(MixerFilter {
            fail_policy: FailPolicy::from_proto(
                cfg.transport
                    .as_ref()
                    .and_then(|t| t.network_fail_policy.as_ref()),
            )
            .unwrap_or_default(),
            default_destination_service: cfg.default_destination_service.clone(),
            service_configs,
            mixer_attributes: strings(cfg.mixer_attributes.as_ref()),
            route: None,
        })
    }

    /// The ServiceConfig in force for a request to `destination_service` (FQDN).
    pub fn service_config(&self, destination_service: &str) -> Option<&ServiceConfig> {
        self.route
            .as_deref()
            .or_else(|| self.service_configs.get(destination_service).map(|s| &**s))
            .or_else(|| {
                self.service_configs
                    .get(&self.default_destination_service)
                    .map(|s| &**s)
            })
    }

    /// Adds the static attributes (filter's, then the service's) that `bag` does not have, and
    /// says what the request needs: Check or not, quotas, fail policy.
    pub fn apply(&self, destination_service: &str, bag: &mut Bag) -> RequestPolicy {
        let sc = self.service_config(destination_service);
        let statics = self
            .mixer_attributes
            .iter()
            .chain(sc.into_iter().flat_map(|s| s.mixer_attributes.iter()));
        for (k, v) in statics {
            if !bag.contains(k) {
                bag.set(k.clone(), Value::String(v.clone()));
            }
        }
        RequestPolicy {
            skip_check: sc.is_some_and(|s| s.disable_check_calls),
            skip_report: sc.is_some_and(|s| s.disable_report_calls),
            quotas: sc.map(|s| s.quotas(bag)).unwrap_or_default(),
            fail_policy: sc
                .and_then(|s| s.network_fail_policy)
                .unwrap_or(self.fail_policy),
        }
    }
}

/// The policy for a listener without a mixer filter config: Check, no quotas, fail open.
pub fn default_policy(
    filter: Option<&MixerFilter>,
    destination: &str,
    bag: &mut Bag,
) -> RequestPolicy {
    match filter {
        Some(f) => f.apply(destination, bag),
        None => RequestPolicy::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::istio::mixer::v1::attributes::AttributeValue;
    use mesh_proto::istio::mixer::v1::config::client::string_match::MatchType;

    fn quota_spec(clauses: Vec<Vec<(&str, MatchType)>>, quotas: &[(&str, i32)]) -> pb::QuotaSpec {
        pb::QuotaSpec {
            rules: vec![pb::QuotaRule {
                r#match: clauses
                    .into_iter()
                    .map(|c| pb::AttributeMatch {
                        clause: c
                            .into_iter()
                            .map(|(k, m)| {
                                (
                                    k.to_string(),
                                    pb::StringMatch {
                                        match_type: Some(m),
                                    },
                                )
                            })
                            .collect(),
                    })
                    .collect(),
                quotas: quotas
                    .iter()
                    .map(|(q, c)| pb::Quota {
                        quota: q.to_string(),
                        charge: *c,
                    })
                    .collect(),
            }],
        }
    }

    fn attrs(kv: &[(&str, &str)]) -> Attributes {
        Attributes {
            attributes: kv
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        AttributeValue {
                            value: Some(AttrValue::StringValue(v.to_string())),
                        },
                    )
                })
                .collect(),
        }
    }

    fn filter(fail: pb::network_fail_policy::FailPolicy) -> pb::HttpClientConfig {
        let pp = pb::ServiceConfig {
            mixer_attributes: Some(attrs(&[("destination.service.name", "productpage")])),
            quota_spec: vec![
                quota_spec(vec![], &[("requestcountquota", 1)]),
                quota_spec(
                    vec![
                        vec![("request.path", MatchType::Prefix("/api".into()))],
                        vec![
                            ("request.method", MatchType::Exact("POST".into())),
                            ("request.path", MatchType::Regex("/books/[0-9]+".into())),
                        ],
                    ],
                    &[("writes", 2), ("requestcountquota", 4)],
                ),
            ],
            ..Default::default()
        };
        pb::HttpClientConfig {
            transport: Some(pb::TransportConfig {
                network_fail_policy: Some(pb::NetworkFailPolicy {
                    policy: fail as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            service_configs: [
                ("productpage.default.svc.cluster.local".to_string(), pp),
                (
                    "default".to_string(),
                    pb::ServiceConfig {
                        disable_check_calls: true,
                        ..Default::default()
                    },
                ),
            ]
            .into_iter()
            .collect(),
            default_destination_service: "default".into(),
            mixer_attributes: Some(attrs(&[("destination.uid", "kubernetes://pp.default")])),
            forward_attributes: None,
        }
    }

    const PP: &str = "productpage.default.svc.cluster.local";

    #[test]
    fn quotas_of_matching_rules_are_summed_and_statics_fill_absent_attributes() {
        let f =
            MixerFilter::decode(&filter(pb::network_fail_policy::FailPolicy::FailClose)).unwrap();
        let mut bag = Bag::new()
            .with("request.path", "/productpage")
            .with("request.method", "GET")
            .with("destination.uid", "kubernetes://own.default");
        let p = f.apply(PP, &mut bag);
        assert_eq!(p.quotas, vec![("requestcountquota".to_string(), 1)]);
        assert_eq!(p.fail_policy, FailPolicy::FailClose);
        assert!(!p.skip_check);
        assert_eq!(
            bag.get_string("destination.service.name"),
            Some("productpage")
        );
        // Attributes of the request win over the static ones.
        assert_eq!(
            bag.get_string("destination.uid"),
            Some("kubernetes://own.default")
        );

        let mut api = Bag::new().with("request.path", "/api/v1");
        assert_eq!(
            f.apply(PP, &mut api).quotas,
            vec![
                ("requestcountquota".to_string(), 5),
                ("writes".to_string(), 2)
            ]
        );
        // The second clause needs both attributes, the regex the whole path.
        let mut post = Bag::new()
            .with("request.path", "/books/12")
            .with("request.method", "POST");
        assert_eq!(f.apply(PP, &mut post).quotas.len(), 2);
        let mut partial = Bag::new()
            .with("request.path", "/books/12/x")
            .with("request.method", "POST");
        assert_eq!(f.apply(PP, &mut partial).quotas.len(), 1);
    }

    #[test]
    fn unknown_service_takes_the_default_and_route_config_wins() {
        let mut f =
            MixerFilter::decode(&filter(pb::network_fail_policy::FailPolicy::FailOpen)).unwrap();
        let p = f.apply("details.default.svc.cluster.local", &mut Bag::new());
        assert!(p.skip_check);
        assert!(p.quotas.is_empty());
        assert_eq!(p.fail_policy, FailPolicy::FailOpen);
        f.route = Some(Arc::new(ServiceConfig {
            network_fail_policy: Some(FailPolicy::FailClose),
            quota_rules: vec![QuotaRule {
                clauses: vec![],
                quotas: vec![("r".into(), 3)],
            }],
            ..Default::default()
        }));
        let p = f.apply(PP, &mut Bag::new());
        assert_eq!(p.quotas, vec![("r".to_string(), 3)]);
        assert_eq!(p.fail_policy, FailPolicy::FailClose);
    }

    #[test]
    fn disable_report_calls_skips_report_only() {
        let mut cfg = filter(pb::network_fail_policy::FailPolicy::FailOpen);
        if let Some(sc) = cfg.service_configs.get_mut(PP) {
            sc.disable_report_calls = true;
        }
        let f = MixerFilter::decode(&cfg).unwrap();
        let p = f.apply(PP, &mut Bag::new());
        assert!(p.skip_report);
        assert!(!p.skip_check);
        let other = f.apply("details.default.svc.cluster.local", &mut Bag::new());
        assert!(!other.skip_report);
        assert!(other.skip_check);
        assert!(!default_policy(None, PP, &mut Bag::new()).skip_report);
    }

    #[test]
    fn bad_regex_is_an_error_naming_the_field() {
        let mut cfg = filter(pb::network_fail_policy::FailPolicy::FailOpen);
        cfg.service_configs.insert(
            "x".into(),
            pb::ServiceConfig {
                quota_spec: vec![quota_spec(
                    vec![vec![("request.path", MatchType::Regex("(".into()))]],
                    &[("q", 1)],
                )],
                ..Default::default()
            },
        );
        let (field, reason) = MixerFilter::decode(&cfg).unwrap_err();
        assert_eq!(
            field,
            "service_configs[x].quota_spec[0].rules[0].match[0].clause[request.path]"
        );
        assert!(reason.contains("invalid regex"), "{reason}");
    }

    #[test]
    fn no_filter_means_check_without_quota_and_fail_open() {
        let p = default_policy(None, PP, &mut Bag::new());
        assert_eq!(p, RequestPolicy::default());
        assert_eq!(p.fail_policy, FailPolicy::FailOpen);
    }

    #[test]
    fn hcm_filter_and_inline_route_override_are_decoded() {
        use mesh_proto::envoy::envoy::config::route::v3::{Route, RouteConfiguration, VirtualHost};
        use mesh_proto::envoy::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
        let any = |url: &str, m: &dyn Fn() -> Vec<u8>| Any {
            type_url: url.to_string(),
            value: m(),
        };
        let route_sc = pb::ServiceConfig {
            quota_spec: vec![quota_spec(vec![], &[("requestcountquota", 1)])],
            ..Default::default()
        };
        let cfg = filter(pb::network_fail_policy::FailPolicy::FailClose);
        let hcm = HttpConnectionManager {
            http_filters: vec![HttpFilter {
                name: MIXER_FILTER.into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(any(
                    type_url::MIXER_HTTP_CLIENT_CONFIG,
                    &|| cfg.encode_to_vec(),
                ))),
                ..Default::default()
            }],
            route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
                virtual_hosts: vec![VirtualHost {
                    routes: vec![Route {
                        typed_per_filter_config: [(
                            MIXER_FILTER.to_string(),
                            any(type_url::MIXER_SERVICE_CONFIG, &|| route_sc.encode_to_vec()),
                        )]
                        .into_iter()
                        .collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })),
            ..Default::default()
        };
        let f = MixerFilter::from_hcm(&hcm).unwrap().unwrap();
        assert_eq!(f.fail_policy, FailPolicy::FailClose);
        let p = f.apply("anything", &mut Bag::new());
        assert_eq!(p.quotas, vec![("requestcountquota".to_string(), 1)]);
        // Wrong type URL: an error naming the filter.
        let mut bad = hcm.clone();
        if let Some(http_filter::ConfigType::TypedConfig(tc)) = &mut bad.http_filters[0].config_type
        {
            tc.type_url = type_url::STRUCT.into();
        }
        assert_eq!(
            MixerFilter::from_hcm(&bad).unwrap_err().0,
            "http_filters[0]"
        );
        // No mixer filter: none.
        assert_eq!(
            MixerFilter::from_hcm(&HttpConnectionManager::default()).unwrap(),
            None
        );
    }
}
