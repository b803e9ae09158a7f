//! Check: decode the bag, fill in workload attributes, evaluate the rules, answer a
//! precondition (allow, or the status of the denier that matched) with the attributes read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use mesh_proto::attributes::{Bag, Value, decompress_with_word_count};
use mesh_proto::dictionary;
use mesh_proto::google::rpc::Status as RpcStatus;
use mesh_proto::istio::mixer::v1::check_response::{PreconditionResult, QuotaResult};
use mesh_proto::istio::mixer::v1::referenced_attributes::{AttributeMatch, Condition};
use mesh_proto::istio::mixer::v1::{CheckRequest, CheckResponse, ReferencedAttributes};

use crate::adapter::{Adapter, Verdict, code_name};
use crate::config::Policy;
use crate::config::policy::DEFAULT_CONFIG_NAMESPACE;
use crate::expr::{Reference, evaluate, evaluate_value};

/// How long a client may reuse an answer that no adapter limited.
pub const DEFAULT_VALID_DURATION: Duration = Duration::from_secs(60);
/// How many times a client may reuse an answer that no adapter limited.
pub const DEFAULT_VALID_USE_COUNT: i32 = 10_000;

/// The outcome of the rules for one bag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub code: i32,
    pub message: String,
    pub valid_duration: Duration,
    pub valid_use_count: i32,
    /// Attributes the decision depended on, in the client's terms (what it sent).
    pub references: BTreeSet<Reference>,
}

/// Why a request was refused before any rule ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Istio answers this as `Internal`.
    #[error(
        "inconsistent global dictionary versions used: client has {client} words, server {server}"
    )]
    DictionaryMismatch { client: u32, server: usize },
    /// Istio answers this as `InvalidArgument`.
    #[error("invalid attributes: {0}")]
    Attributes(#[from] mesh_proto::attributes::AttributeError),
}

impl From<RequestError> for tonic::Status {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::DictionaryMismatch { .. } => {
                tonic::Status::internal("inconsistent global dictionary versions used")
            }
            RequestError::Attributes(a) => tonic::Status::invalid_argument(a.to_string()),
        }
    }
}

/// The number of global words the client's indexes may use: 0 means "not said" (all of ours);
/// more than we have is an error.
pub fn word_count(global_word_count: u32) -> Result<usize, RequestError> {
    let ours = dictionary::words().len();
    match global_word_count as usize {
        0 => Ok(ours),
        n if n > ours => Err(RequestError::DictionaryMismatch {
            client: global_word_count,
            server: ours,
        }),
        n => Ok(n),
    }
}

/// One quota allocation a Check asks for: which rule action serves it and with which
/// instance dimensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaCall {
    /// The quota name of the CheckRequest.
    pub quota: String,
    /// Index of the rule and of its action in the policy.
    pub rule: usize,
    pub action: usize,
    /// The instance's full name (`requestcountquota.instance.istio-system`).
    pub instance: String,
    pub dimensions: BTreeMap<String, String>,
    /// What the rule's match and the dimensions read.
    pub references: BTreeSet<Reference>,
}

/// The request decoded and decided: the response without quota results, and the quota
/// allocations to make (only when the precondition is OK, as Istio does).
#[derive(Debug, Clone)]
pub struct Checked {
    pub response: CheckResponse,
    pub quota_calls: Vec<QuotaCall>,
}

/// Answers one Check request against `policy`, granting every requested quota in full (no
/// quota adapter consulted). See [`check_with_quotas`] for the quota allocations.
pub fn check(policy: &Policy, req: &CheckRequest) -> Result<CheckResponse, RequestError> {
    Ok(check_with_quotas(policy, req)?.response)
}

/// Decodes and decides `req`: the precondition, and for each requested quota either the quota
/// calls to make or (no rule serves it) the whole amount granted, as Istio does.
pub fn check_with_quotas(policy: &Policy, req: &CheckRequest) -> Result<Checked, RequestError> {
    let words = word_count(req.global_word_count)?;
    let bag = match &req.attributes {
        Some(a) => decompress_with_word_count(a, words)?,
        None => Bag::new(),
    };
    mesh_proto::attributes::check_types(&bag)?;
    let names: BTreeSet<&str> = req.quotas.keys().map(String::as_str).collect();
    let (d, calls) = decide_with_quotas(policy, &bag, &names);
    let mut quotas = HashMap::new();
    if d.code == 0 {
        for (name, q) in &req.quotas {
            if calls.iter().any(|c| &c.quota == name) {
                continue;
            }
            quotas.insert(
                name.clone(),
                QuotaResult {
                    valid_duration: Some(proto_duration(DEFAULT_VALID_DURATION)),
                    granted_amount: q.amount,
                    status: Some(RpcStatus::default()),
                    referenced_attributes: Some(ReferencedAttributes::default()),
                },
            );
        }
    }
    let response = CheckResponse {
        precondition: Some(PreconditionResult {
            status: Some(RpcStatus {
                code: d.code,
                message: d.message.clone(),
                details: Vec::new(),
            }),
            valid_duration: Some(proto_duration(d.valid_duration)),
            valid_use_count: d.valid_use_count,
            referenced_attributes: Some(referenced(&d.references)),
            route_directive: None,
        }),
        quotas,
    };
    Ok(Checked {
        response,
        quota_calls: if d.code == 0 { calls } else { Vec::new() },
    })
}

pub(crate) fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// The rules that apply to `bag` (namespace scope and `match`), by index; what was read is
/// added to `refs`.
pub fn matching_rules(policy: &Policy, bag: &Bag, refs: &mut Vec<Reference>) -> Vec<usize> {
    let scoped = policy
        .rules
        .iter()
        .any(|r| r.namespace != DEFAULT_CONFIG_NAMESPACE);
    let dest_ns = if scoped {
        destination_namespace(bag, refs)
    } else {
        None
    };
    let mut out = Vec::new();
    for (i, rule) in policy.rules.iter().enumerate() {
        if rule.namespace != DEFAULT_CONFIG_NAMESPACE
            && dest_ns.as_deref() != Some(rule.namespace.as_str())
        {
            continue;
        }
        let ev = evaluate(&rule.matcher, bag);
        refs.extend(ev.references);
        match ev.result {
            Ok(true) => out.push(i),
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(rule = %rule.key, error = %e, "match not evaluated; rule skipped");
            }
        }
    }
    out
}

/// Evaluates every rule that applies to `bag`'s destination.
pub fn decide(policy: &Policy, sent: &Bag) -> Decision {
    decide_with_quotas(policy, sent, &BTreeSet::new()).0
}

/// Evaluates the rules for the precondition, and collects the quota calls for `quotas` (the
/// quota names requested): each action of a matching rule whose handler counts quotas, for
/// each of its instances whose short name is a requested quota.
pub fn decide_with_quotas(
    policy: &Policy,
    sent: &Bag,
    quotas: &BTreeSet<&str>,
) -> (Decision, Vec<QuotaCall>) {
    let (bag, generated) = with_workload_attributes(policy, sent);
    let mut refs: Vec<Reference> = Vec::new();
    let mut decision = Decision {
        code: 0,
        message: String::new(),
        valid_duration: DEFAULT_VALID_DURATION,
        valid_use_count: DEFAULT_VALID_USE_COUNT,
        references: BTreeSet::new(),
    };
    let mut calls = Vec::new();
    let mut denied = false;
    let rules = matching_rules(policy, &bag, &mut refs);
    let match_refs: BTreeSet<Reference> = refs.iter().cloned().collect();
    for ri in rules {
        let rule = &policy.rules[ri];
        for (ai, action) in rule.actions.iter().enumerate() {
            let verdicts: Vec<Verdict> = match &action.adapter {
                Adapter::Denier(p) => vec![p.check()],
                Adapter::List(p) => action
                    .instances
                    .iter()
                    .map(|inst| {
                        let value = inst.value.as_ref().and_then(|e| {
                            let ev = evaluate_value(e, &bag);
                            refs.extend(ev.references);
                            ev.result
                                .map_err(|err| {
                                    tracing::debug!(instance = %inst.key, error = %err, "instance value not evaluated");
                                })
                                .ok()
                        });
                        p.check(value.as_ref())
                    })
                    .collect(),
                Adapter::MemQuota(_) | Adapter::RedisQuota(_) => {
                    for inst in &action.instances {
                        if !quotas.contains(inst.short_name()) {
                            continue;
                        }
                        let mut call_refs = match_refs.clone();
                        let mut dimensions = BTreeMap::new();
                        let mut ok = true;
                        for (name, e) in &inst.dimensions {
                            let ev = evaluate_value(e, &bag);
                            call_refs.extend(ev.references);
                            match ev.result {
                                Ok(v) => {
                                    dimensions.insert(
                                        name.clone(),
                                        crate::adapter::prometheus::label_value(&v),
                                    );
                                }
                                Err(err) => {
                                    tracing::debug!(instance = %inst.key, dimension = %name, error = %err, "quota dimension not evaluated; quota not applied");
                                    ok = false;
                                }
                            }
                        }
                        if ok {
                            calls.push(QuotaCall {
                                quota: inst.short_name().to_string(),
                                rule: ri,
                                action: ai,
                                instance: inst.full_name(),
                                dimensions,
                                references: call_refs
                                    .into_iter()
                                    .map(|r| client_reference(&generated, r))
                                    .collect(),
                            });
                        }
                    }
                    Vec::new()
                }
                Adapter::Prometheus(_) | Adapter::Ignored { .. } => Vec::new(),
            };
            for v in verdicts {
                decision.valid_duration = decision.valid_duration.min(v.valid_duration);
                decision.valid_use_count = decision.valid_use_count.min(v.valid_use_count);
                if v.code != 0 && !denied {
                    denied = true;
                    decision.code = v.code;
                    decision.message =
                        format!("{}:{}:{}", code_name(v.code), action.handler, v.message);
                    tracing::debug!(rule = %rule.key, handler = %action.handler, code = v.code, "check denied");
                }
            }
        }
    }
    decision.references = refs
        .into_iter()
        .map(|r| client_reference(&generated, r))
        .collect();
    (decision, calls)
}

/// A generated attribute was derived from a uid the client sent: that uid is the reference.
fn client_reference(generated: &HashMap<String, String>, r: Reference) -> Reference {
    match generated.get(&r.name) {
        Some(uid) => Reference {
            name: uid.clone(),
            map_key: None,
            present: true,
        },
        None => r,
    }
}

/// The destination's namespace: from `destination.service.host` (`name.ns.svc...`), else
/// `destination.namespace`.
fn destination_namespace(bag: &Bag, refs: &mut Vec<Reference>) -> Option<String> {
    let host = bag.get_string("destination.service.host");
    refs.push(Reference {
        name: "destination.service.host".into(),
        map_key: None,
        present: host.is_some(),
    });
    if let Some(ns) = host.and_then(|h| h.split('.').nth(1)) {
        return Some(ns.to_string());
    }
    let ns = bag.get_string("destination.namespace");
    refs.push(Reference {
        name: "destination.namespace".into(),
        map_key: None,
        present: ns.is_some(),
    });
    ns.map(str::to_string)
}

/// Fills `source.*`/`destination.*` `labels`, `name`, `namespace`, `service_account_name`
/// from the pod named by the `.uid` attribute, where the client did not send them (what Istio's
/// kubernetesenv adapter does), and `source.user` from `source.principal`. Returns the bag and, per generated attribute, the uid attribute
/// it came from.
pub fn with_workload_attributes(policy: &Policy, sent: &Bag) -> (Bag, HashMap<String, String>) {
    let mut bag = sent.clone();
    let mut generated = HashMap::new();
    for side in ["source", "destination"] {
        let uid_attr = format!("{side}.uid");
        let Some(pod) = sent
            .get_string(&uid_attr)
            .and_then(|uid| policy.pod_by_uid(uid))
        else {
            continue;
        };
        let mut values: Vec<(String, Value)> = vec![
            (
                format!("{side}.labels"),
                Value::StringMap(pod.labels.clone()),
            ),
            (format!("{side}.name"), Value::String(pod.name.clone())),
            (
                format!("{side}.namespace"),
                Value::String(pod.namespace.clone()),
            ),
        ];
        if let Some(sa) = &pod.service_account {
            values.push((
                format!("{side}.service_account_name"),
                Value::String(sa.clone()),
            ));
        }
        for (name, value) in values {
            if !bag.contains(&name) {
                bag.set(name.clone(), value);
                generated.insert(name, uid_attr.clone());
            }
        }
    }
    // `source.user` is the older name of the peer identity (`cluster.local/ns/N/sa/S`).
    if !bag.contains("source.user")
        && let Some(principal) = sent.get_string("source.principal")
    {
        let user = principal.strip_prefix("spiffe://").unwrap_or(principal);
        bag.set("source.user", user);
        generated.insert("source.user".into(), "source.principal".into());
    }
    (bag, generated)
}

/// Encodes references: names and map keys by global index or response word, EXACT when the
/// attribute was present, ABSENCE when not.
pub fn referenced(refs: &BTreeSet<Reference>) -> ReferencedAttributes {
    let mut words: Vec<String> = Vec::new();
    let mut word_index: BTreeMap<String, i32> = BTreeMap::new();
    let mut index = |w: &str| -> i32 {
        if let Some(i) = dictionary::index_of(w) {
            return i;
        }
        if let Some(i) = word_index.get(w) {
            return *i;
        }
        words.push(w.to_string());
        let i = -(words.len() as i32);
        word_index.insert(w.to_string(), i);
        i
    };
    let mut matches = Vec::new();
    let mut seen = BTreeSet::new();
    for r in refs {
        // An attribute both present and absent cannot happen in one bag; keep the first.
        if !seen.insert((r.name.clone(), r.map_key.clone())) {
            continue;
        }
        let condition = if r.present {
            Condition::Exact
        } else {
            Condition::Absence
        };
        matches.push(AttributeMatch {
            name: index(&r.name),
            condition: condition as i32,
            regex: String::new(),
            map_key: r.map_key.as_deref().map_or(0, &mut index),
        });
    }
    ReferencedAttributes {
        words,
        attribute_matches: matches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigState, PodInfo};
    use mesh_proto::attributes::compress;
    use mesh_proto::config::{HandlerSpec, RuleAction, RuleSpec};
    use serde_json::json;

    fn deny_policy(match_: &str, ns: &str) -> Policy {
        let mut s = ConfigState::default();
        s.handlers.insert(
            format!("{ns}/denyhandler"),
            HandlerSpec {
                compiled_adapter: Some("denier".into()),
                params: Some(json!({"status": {"code": 7, "message": "Not allowed"}})),
                ..Default::default()
            },
        );
        s.rules.insert(
            format!("{ns}/deny"),
            RuleSpec {
                match_: Some(match_.into()),
                actions: vec![RuleAction {
                    handler: "denyhandler".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        s.pods.insert(
            "default/ratings-v1".into(),
            PodInfo {
                name: "ratings-v1".into(),
                namespace: "default".into(),
                labels: [("app".to_string(), "ratings".to_string())].into(),
                ..Default::default()
            },
        );
        let p = Policy::compile(&s);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        p
    }

    #[test]
    fn no_rules_allows_with_defaults() {
        let req = CheckRequest {
            attributes: Some(compress(&Bag::new().with("request.path", "/x"))),
            global_word_count: dictionary::words().len() as u32,
            deduplication_id: String::new(),
            quotas: [(
                "requestcount".to_string(),
                mesh_proto::istio::mixer::v1::check_request::QuotaParams {
                    amount: 3,
                    best_effort: false,
                },
            )]
            .into(),
        };
        let resp = check(&Policy::default(), &req).unwrap();
        let pre = resp.precondition.unwrap();
        assert_eq!(pre.status.unwrap().code, 0);
        assert_eq!(pre.valid_duration.unwrap().seconds, 60);
        assert_eq!(pre.valid_use_count, 10_000);
        assert_eq!(
            pre.referenced_attributes.unwrap(),
            ReferencedAttributes::default()
        );
        assert_eq!(resp.quotas["requestcount"].granted_amount, 3);
    }

    #[test]
    fn denier_denies_matching_requests_with_generated_labels() {
        let p = deny_policy(r#"destination.labels["app"] == "ratings""#, "default");
        let bag = Bag::new()
            .with("destination.uid", "kubernetes://ratings-v1.default")
            .with(
                "destination.service.host",
                "ratings.default.svc.cluster.local",
            );
        let d = decide(&p, &bag);
        assert_eq!(d.code, 7);
        assert_eq!(
            d.message,
            "PERMISSION_DENIED:denyhandler.denier.default:Not allowed"
        );
        assert_eq!(d.valid_duration, Duration::from_secs(5));
        // The labels came from the pod behind destination.uid: that is what the client must key on.
        let names: Vec<&str> = d.references.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["destination.service.host", "destination.uid"]);

        // Another namespace's destination: the default-namespace rule does not apply.
        let other = Bag::new()
            .with("destination.uid", "kubernetes://ratings-v1.default")
            .with("destination.service.host", "ratings.prod.svc.cluster.local");
        assert_eq!(decide(&p, &other).code, 0);
    }

    #[test]
    fn source_user_comes_from_the_principal() {
        let p = deny_policy(
            r#"source.user == "cluster.local/ns/default/sa/bookinfo-productpage""#,
            DEFAULT_CONFIG_NAMESPACE,
        );
        let bag = Bag::new().with(
            "source.principal",
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        );
        let d = decide(&p, &bag);
        assert_eq!(d.code, 7);
        let names: Vec<&str> = d.references.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["source.principal"]);
        let other = Bag::new().with("source.principal", "spiffe://cluster.local/ns/default/sa/x");
        assert_eq!(decide(&p, &other).code, 0);
    }

    #[test]
    fn listchecker_whitelist_denies_unlisted_values() {
        let mut s = ConfigState::default();
        s.handlers.insert(
            "default/whitelist".into(),
            HandlerSpec {
                compiled_adapter: Some("listchecker".into()),
                params: Some(json!({"overrides": ["v1", "v2"], "blacklist": false})),
                ..Default::default()
            },
        );
        s.instances.insert(
            "default/appversion".into(),
            mesh_proto::config::InstanceSpec {
                compiled_template: Some("listentry".into()),
                params: Some(json!({"value": "source.labels[\"version\"]"})),
                ..Default::default()
            },
        );
        s.rules.insert(
            "default/checkversion".into(),
            RuleSpec {
                match_: Some(r#"destination.labels["app"] == "ratings""#.into()),
                actions: vec![RuleAction {
                    handler: "whitelist".into(),
                    instances: vec!["appversion".into()],
                    name: None,
                }],
                ..Default::default()
            },
        );
        let p = Policy::compile(&s);
        let bag = |v: &str| {
            Bag::new()
                .with(
                    "destination.service.host",
                    "ratings.default.svc.cluster.local",
                )
                .with(
                    "destination.labels",
                    BTreeMap::from([("app".to_string(), "ratings".to_string())]),
                )
                .with(
                    "source.labels",
                    BTreeMap::from([("version".to_string(), v.to_string())]),
                )
        };
        let d = decide(&p, &bag("v3"));
        assert_eq!(d.code, 5);
        assert_eq!(
            d.message,
            "NOT_FOUND:whitelist.listchecker.default:v3 is not whitelisted"
        );
        assert!(d.references.contains(&Reference {
            name: "source.labels".into(),
            map_key: Some("version".into()),
            present: true
        }));
        assert_eq!(decide(&p, &bag("v2")).code, 0);
        // No version label at all: not in the whitelist.
        let d = decide(&p, &bag("v2").with("source.labels", BTreeMap::new()));
        assert_eq!(d.code, 5);
    }

    #[test]
    fn references_are_exact_or_absence_with_words() {
        let p = deny_policy(
            r#"request.headers["x-user"] == "bob" || custom.attr == "v""#,
            DEFAULT_CONFIG_NAMESPACE,
        );
        let bag = Bag::new().with(
            "request.headers",
            BTreeMap::from([("x-user".to_string(), "alice".to_string())]),
        );
        let d = decide(&p, &bag);
        assert_eq!(d.code, 0);
        let ra = referenced(&d.references);
        assert_eq!(
            ra.words,
            vec!["custom.attr".to_string(), "x-user".to_string()]
        );
        let headers = dictionary::index_of("request.headers").unwrap();
        assert_eq!(
            ra.attribute_matches,
            vec![
                AttributeMatch {
                    name: -1,
                    condition: Condition::Absence as i32,
                    regex: String::new(),
                    map_key: 0
                },
                AttributeMatch {
                    name: headers,
                    condition: Condition::Exact as i32,
                    regex: String::new(),
                    map_key: -2
                },
            ]
        );
    }

    #[test]
    fn quota_calls_carry_dimensions_and_skip_denied_requests() {
        let mut s = ConfigState::default();
        s.handlers.insert(
            "istio-system/quotahandler".into(),
            HandlerSpec {
                compiled_adapter: Some("memquota".into()),
                params: Some(json!({"quotas": [{"name": "rq.instance.istio-system", "maxAmount": 1, "validDuration": "5s"}]})),
                ..Default::default()
            },
        );
        s.instances.insert(
            "istio-system/rq".into(),
            mesh_proto::config::InstanceSpec {
                compiled_template: Some("quota".into()),
                params: Some(json!({"dimensions": {"path": "request.path | \"none\""}})),
                ..Default::default()
            },
        );
        s.rules.insert(
            "istio-system/quota".into(),
            RuleSpec {
                actions: vec![RuleAction {
                    handler: "quotahandler".into(),
                    instances: vec!["rq".into()],
                    name: None,
                }],
                ..Default::default()
            },
        );
        let p = Policy::compile(&s);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let names = BTreeSet::from(["rq"]);
        let (d, calls) = decide_with_quotas(&p, &Bag::new().with("request.path", "/x"), &names);
        assert_eq!(d.code, 0);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].instance, "rq.instance.istio-system");
        assert_eq!(calls[0].dimensions["path"], "/x");
        assert!(calls[0].references.iter().any(|r| r.name == "request.path"));
        // Not requested: no call.
        let (_, calls) = decide_with_quotas(&p, &Bag::new(), &BTreeSet::from(["other"]));
        assert!(calls.is_empty());

        // A denied request allocates nothing (and answers no quota).
        s.handlers.insert(
            "istio-system/deny".into(),
            HandlerSpec {
                compiled_adapter: Some("denier".into()),
                ..Default::default()
            },
        );
        s.rules.insert(
            "istio-system/deny".into(),
            RuleSpec {
                actions: vec![RuleAction {
                    handler: "deny".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        let p = Policy::compile(&s);
        let req = CheckRequest {
            quotas: [(
                "rq".to_string(),
                mesh_proto::istio::mixer::v1::check_request::QuotaParams {
                    amount: 1,
                    best_effort: false,
                },
            )]
            .into(),
            ..Default::default()
        };
        let checked = check_with_quotas(&p, &req).unwrap();
        assert_eq!(
            checked.response.precondition.unwrap().status.unwrap().code,
            7
        );
        assert!(checked.quota_calls.is_empty());
        assert!(checked.response.quotas.is_empty());
    }

    #[test]
    fn request_errors() {
        let too_many = CheckRequest {
            global_word_count: dictionary::words().len() as u32 + 1,
            ..Default::default()
        };
        let st: tonic::Status = check(&Policy::default(), &too_many).unwrap_err().into();
        assert_eq!(st.code(), tonic::Code::Internal);
        assert_eq!(st.message(), "inconsistent global dictionary versions used");

        let mut attrs = mesh_proto::istio::mixer::v1::CompressedAttributes::default();
        attrs.strings.insert(-7, 0);
        let bad = CheckRequest {
            attributes: Some(attrs),
            ..Default::default()
        };
        let st: tonic::Status = check(&Policy::default(), &bad).unwrap_err().into();
        assert_eq!(st.code(), tonic::Code::InvalidArgument);
    }
}
