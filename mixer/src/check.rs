//! Check: decode the bag, fill in workload attributes, evaluate the rules, answer a
//! precondition (allow, or the status of the denier that matched) with the attributes read.

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use mesh_proto::attributes::{Bag, Value, decompress_with_word_count};
use mesh_proto::dictionary;
use mesh_proto::google::rpc::Status as RpcStatus;
use mesh_proto::istio::mixer::v1::check_request::QuotaParams;
use mesh_proto::istio::mixer::v1::check_response::{PreconditionResult, QuotaResult};
use mesh_proto::istio::mixer::v1::referenced_attributes::{AttributeMatch, Condition};
use mesh_proto::istio::mixer::v1::{CheckRequest, CheckResponse, ReferencedAttributes};

use crate::adapter::{Adapter, Verdict, code_name};
use crate::config::policy::{CompiledRule, DEFAULT_CONFIG_NAMESPACE};
use crate::config::{Policy, Workload};
use crate::expr::{Attributes, Read, Reference, eval_bool_reads, eval_value_reads};
use crate::wire::WireCheck;

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
    check_bag(policy, &bag, &req.quotas)
}

/// [`check_with_quotas`] of a request read from its bytes ([`WireCheck`]): the same checks in
/// the same order (dictionary size, word indexes, vocabulary types), then the same decision.
pub fn check_wire(policy: &Policy, req: &WireCheck<'_>) -> Result<Checked, RequestError> {
    let words = word_count(req.global_word_count)?;
    let bag = req.bag(words)?;
    check_bag(policy, &bag, &req.quotas)
}

/// Decides a decoded bag with the quotas the request asks for.
fn check_bag(
    policy: &Policy,
    bag: &Bag,
    requested: &HashMap<String, QuotaParams>,
) -> Result<Checked, RequestError> {
    mesh_proto::attributes::check_types(bag)?;
    let attrs = CheckAttributes::new(policy, bag);
    let mut o = decide_reads(policy, &attrs, |name| requested.contains_key(name));
    let mut quotas = HashMap::new();
    if o.code == 0 {
        for (name, q) in requested {
            if o.calls.iter().any(|c| &c.quota == name) {
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
                code: o.code,
                message: std::mem::take(&mut o.message),
                details: Vec::new(),
            }),
            valid_duration: Some(proto_duration(o.valid_duration)),
            valid_use_count: o.valid_use_count,
            referenced_attributes: Some(referenced_reads(&mut o.reads)),
            route_directive: None,
        }),
        quotas,
    };
    Ok(Checked {
        response,
        quota_calls: if o.code == 0 { o.calls } else { Vec::new() },
    })
}

pub(crate) fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// The attributes a Check's rules read: what the client sent and, where it sent nothing, the
/// workload attributes of the pods its `source.uid`/`destination.uid` name and `source.user`
/// from `source.principal` — what [`with_workload_attributes`] adds, without copying the bag.
pub struct CheckAttributes<'a> {
    sent: &'a Bag,
    source: Option<&'a Workload>,
    destination: Option<&'a Workload>,
    /// `source.user`, made on first read.
    source_user: OnceCell<Option<Value>>,
}

impl<'a> CheckAttributes<'a> {
    pub fn new(policy: &'a Policy, sent: &'a Bag) -> Self {
        let side = |uid_attr: &str| {
            sent.get_string(uid_attr)
                .and_then(|uid| policy.workload_by_uid(uid))
        };
        CheckAttributes {
            sent,
            source: side("source.uid"),
            destination: side("destination.uid"),
            source_user: OnceCell::new(),
        }
    }

    /// A generated attribute and the client attribute it came from.
    fn generated(&self, name: &str) -> Option<(&Value, &'static str)> {
        if name == "source.user" {
            let user = self.source_user.get_or_init(|| {
                self.sent.get_string("source.principal").map(|p| {
                    // The older name of the peer identity (`cluster.local/ns/N/sa/S`).
                    Value::String(p.strip_prefix("spiffe://").unwrap_or(p).to_string())
                })
            });
            return user.as_ref().map(|v| (v, "source.principal"));
        }
        let (workload, field, uid) = if let Some(f) = name.strip_prefix("destination.") {
            (self.destination?, f, "destination.uid")
        } else if let Some(f) = name.strip_prefix("source.") {
            (self.source?, f, "source.uid")
        } else {
            return None;
        };
        let value = match field {
            "labels" => &workload.labels,
            "name" => &workload.name,
            "namespace" => &workload.namespace,
            "service_account_name" => workload.service_account.as_ref()?,
            _ => return None,
        };
        Some((value, uid))
    }

    /// A read as the client must key its cache: a generated attribute is the uid (or principal)
    /// it was derived from.
    fn client_read(&self, r: Read<'a>) -> Read<'a> {
        if self.sent.contains(r.name) {
            return r;
        }
        match self.generated(r.name) {
            Some((_, origin)) => Read {
                name: origin,
                map_key: None,
                present: true,
            },
            None => r,
        }
    }
}

impl Attributes for CheckAttributes<'_> {
    fn attribute(&self, name: &str) -> Option<&Value> {
        self.sent
            .get(name)
            .or_else(|| self.generated(name).map(|(v, _)| v))
    }
}

/// The rules that apply to `bag` (namespace scope and `match`), by index; what was read is
/// added to `refs`.
pub fn matching_rules(policy: &Policy, bag: &Bag, refs: &mut Vec<Reference>) -> Vec<usize> {
    let mut reads = Vec::new();
    let mut out = Vec::new();
    matching_rules_reads(policy, bag, &mut reads, &mut out);
    refs.extend(reads.iter().map(Read::to_reference));
    out
}

/// [`matching_rules`] over any attributes, recording borrowed reads.
pub(crate) fn matching_rules_reads<'a, B: Attributes + ?Sized>(
    policy: &'a Policy,
    bag: &'a B,
    reads: &mut Vec<Read<'a>>,
    out: &mut Vec<usize>,
) {
    let scoped = policy
        .rules
        .iter()
        .any(|r| r.namespace != DEFAULT_CONFIG_NAMESPACE);
    let dest_ns = if scoped {
        destination_namespace(bag, reads)
    } else {
        None
    };
    for (i, rule) in policy.rules.iter().enumerate() {
        if rule.namespace != DEFAULT_CONFIG_NAMESPACE && dest_ns != Some(rule.namespace.as_str()) {
            continue;
        }
        match eval_bool_reads(&rule.matcher, bag, reads) {
            Ok(true) => out.push(i),
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(rule = %rule.key, error = %e, "match not evaluated; rule skipped");
            }
        }
    }
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
    let attrs = CheckAttributes::new(policy, sent);
    let o = decide_reads(policy, &attrs, |name| quotas.contains(name));
    let decision = Decision {
        code: o.code,
        message: o.message,
        valid_duration: o.valid_duration,
        valid_use_count: o.valid_use_count,
        references: o.reads.iter().map(Read::to_reference).collect(),
    };
    (decision, o.calls)
}

/// A decision with the reads (in the client's terms) borrowed from the policy.
struct Outcome<'a> {
    code: i32,
    message: String,
    valid_duration: Duration,
    valid_use_count: i32,
    reads: Vec<Read<'a>>,
    calls: Vec<QuotaCall>,
}

impl Outcome<'_> {
    fn apply(&mut self, v: Verdict, rule: &CompiledRule, handler: &str) {
        self.valid_duration = self.valid_duration.min(v.valid_duration);
        self.valid_use_count = self.valid_use_count.min(v.valid_use_count);
        if v.code != 0 && self.code == 0 {
            self.code = v.code;
            self.message = format!("{}:{}:{}", code_name(v.code), handler, v.message);
            tracing::debug!(rule = %rule.key, handler = %handler, code = v.code, "check denied");
        }
    }
}

/// The Check decision over `attrs`; `requested` says which quota names the request asks for.
fn decide_reads<'a>(
    policy: &'a Policy,
    attrs: &'a CheckAttributes<'a>,
    requested: impl Fn(&str) -> bool,
) -> Outcome<'a> {
    let mut o = Outcome {
        code: 0,
        message: String::new(),
        valid_duration: DEFAULT_VALID_DURATION,
        valid_use_count: DEFAULT_VALID_USE_COUNT,
        reads: Vec::with_capacity(16),
        calls: Vec::new(),
    };
    let mut rules = Vec::new();
    matching_rules_reads(policy, attrs, &mut o.reads, &mut rules);
    let matched = o.reads.len();
    for ri in rules {
        let rule = &policy.rules[ri];
        for (ai, action) in rule.actions.iter().enumerate() {
            match &action.adapter {
                Adapter::Denier(p) => o.apply(p.check(), rule, &action.handler),
                Adapter::List(p) => {
                    for inst in &action.instances {
                        let value = inst.value.as_ref().and_then(|e| {
                            eval_value_reads(e, attrs, &mut o.reads)
                                .map_err(|err| {
                                    tracing::debug!(instance = %inst.key, error = %err, "instance value not evaluated");
                                })
                                .ok()
                        });
                        o.apply(p.check(value.as_ref()), rule, &action.handler);
                    }
                }
                Adapter::MemQuota(_) | Adapter::RedisQuota(_) => {
                    for inst in &action.instances {
                        if !requested(inst.short_name()) {
                            continue;
                        }
                        let mut call_reads: Vec<Read<'a>> = o.reads[..matched].to_vec();
                        let mut dimensions = BTreeMap::new();
                        let mut ok = true;
                        for (name, e) in &inst.dimensions {
                            match eval_value_reads(e, attrs, &mut call_reads) {
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
                            o.calls.push(QuotaCall {
                                quota: inst.short_name().to_string(),
                                rule: ri,
                                action: ai,
                                instance: inst.full_name(),
                                dimensions,
                                references: call_reads
                                    .into_iter()
                                    .map(|r| attrs.client_read(r).to_reference())
                                    .collect(),
                            });
                        }
                    }
                }
                Adapter::Prometheus(_)
                | Adapter::Stdio(_)
                | Adapter::OpenTelemetry(_)
                | Adapter::Ignored { .. } => {}
            }
        }
    }
    for r in &mut o.reads {
        *r = attrs.client_read(*r);
    }
    o
}

/// The destination's namespace: from `destination.service.host` (`name.ns.svc...`), else
/// `destination.namespace`.
fn destination_namespace<'a, B: Attributes + ?Sized>(
    bag: &'a B,
    reads: &mut Vec<Read<'a>>,
) -> Option<&'a str> {
    let string = |v: &'a Value| match v {
        Value::String(s) => Some(s.as_str()),
        _ => None,
    };
    let host = bag.attribute("destination.service.host").and_then(string);
    reads.push(Read {
        name: "destination.service.host",
        map_key: None,
        present: host.is_some(),
    });
    if let Some(ns) = host.and_then(|h| h.split('.').nth(1)) {
        return Some(ns);
    }
    let ns = bag.attribute("destination.namespace").and_then(string);
    reads.push(Read {
        name: "destination.namespace",
        map_key: None,
        present: ns.is_some(),
    });
    ns
}

/// Fills `source.*`/`destination.*` `labels`, `name`, `namespace`, `service_account_name`
/// from the pod named by the `.uid` attribute, where the client did not send them (what Istio's
/// kubernetesenv adapter does), and `source.user` from `source.principal`. Returns the bag and, per generated attribute, the uid attribute
/// it came from. (Check reads the same attributes through [`CheckAttributes`] without copying.)
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
    let mut reads: Vec<Read<'_>> = refs
        .iter()
        .map(|r| Read {
            name: &r.name,
            map_key: r.map_key.as_deref(),
            present: r.present,
        })
        .collect();
    referenced_reads(&mut reads)
}

/// [`referenced`] over reads (sorted and deduplicated here).
fn referenced_reads(reads: &mut Vec<Read<'_>>) -> ReferencedAttributes {
    reads.sort_unstable();
    // An attribute both present and absent cannot happen in one bag; keep the first.
    reads.dedup_by(|b, a| a.name == b.name && a.map_key == b.map_key);
    let mut words: Vec<String> = Vec::new();
    let mut index = |w: &str| -> i32 {
        if let Some(i) = dictionary::index_of(w) {
            return i;
        }
        if let Some(i) = words.iter().position(|x| x == w) {
            return -(i as i32 + 1);
        }
        words.push(w.to_string());
        -(words.len() as i32)
    };
    let mut matches = Vec::with_capacity(reads.len());
    for r in reads.iter() {
        let condition = if r.present {
            Condition::Exact
        } else {
            Condition::Absence
        };
        matches.push(AttributeMatch {
            name: index(r.name),
            condition: condition as i32,
            regex: String::new(),
            map_key: r.map_key.map_or(0, &mut index),
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
    fn check_attributes_read_what_with_workload_attributes_adds() {
        let p = deny_policy("true", "default");
        let sent = Bag::new()
            .with("destination.uid", "kubernetes://ratings-v1.default")
            .with("source.uid", "kubernetes://nobody.default")
            .with("source.principal", "spiffe://cluster.local/ns/default/sa/x")
            .with("destination.name", "sent-name")
            .with("request.path", "/x");
        let (copied, generated) = with_workload_attributes(&p, &sent);
        assert!(
            generated.contains_key("destination.labels"),
            "{generated:?}"
        );
        let attrs = CheckAttributes::new(&p, &sent);
        for name in [
            "destination.labels",
            "destination.name",
            "destination.namespace",
            "destination.service_account_name",
            "destination.other",
            "source.user",
            "source.labels",
            "source.principal",
            "request.path",
            "request.host",
        ] {
            assert_eq!(attrs.attribute(name), copied.get(name), "{name}");
            let read = attrs.client_read(Read {
                name,
                map_key: Some("k"),
                present: copied.contains(name),
            });
            match generated.get(name) {
                Some(origin) => {
                    assert_eq!((read.name, read.map_key), (origin.as_str(), None), "{name}")
                }
                None => assert_eq!((read.name, read.map_key), (name, Some("k")), "{name}"),
            }
        }
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
