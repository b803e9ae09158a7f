//! Rules compiled from the configuration: each rule's `match` parsed, each action's handler
//! resolved to an adapter Mixer can run.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mesh_proto::attributes::Value;

use parking_lot::RwLock;

use super::state::{ConfigState, PodInfo};
use crate::adapter::Adapter;
use crate::expr::{Expr, parse};

/// Rules in this namespace apply to every request; rules elsewhere only to requests whose
/// destination is in their namespace (Istio's default config namespace).
pub const DEFAULT_CONFIG_NAMESPACE: &str = "istio-system";

/// An instance an action sends to its handler, with its fields compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// `namespace/name`.
    pub key: String,
    pub template: String,
    /// `listentry`'s and `metric`'s `value` expression.
    pub value: Option<Expr>,
    /// `quota`'s and `metric`'s `dimensions`, by name.
    pub dimensions: Vec<(String, Expr)>,
    /// Written as `kind: <template>` (Istio's legacy form): its full name is
    /// `name.<template>.namespace`.
    pub legacy: bool,
    /// `logentry`'s and `tracespan`'s other scalar params (`severity`, `timestamp`, `traceId`,
    /// ...), by name.
    pub fields: Vec<(String, Expr)>,
    /// `logentry`'s `variables` and `tracespan`'s `spanTags`: map params, by name.
    pub maps: Vec<(String, Vec<(String, Expr)>)>,
}

impl Instance {
    /// The scalar param `name` (`severity`, `traceId`, ...).
    pub fn field(&self, name: &str) -> Option<&Expr> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, e)| e)
    }

    /// The map param `name` (`variables`, `spanTags`); empty when not given.
    pub fn map(&self, name: &str) -> &[(String, Expr)] {
        self.maps
            .iter()
            .find(|(n, _)| n == name)
            .map_or(&[], |(_, m)| m.as_slice())
    }
}

impl Instance {
    /// The short name (`requestcountquota`), as a CheckRequest names a quota.
    pub fn short_name(&self) -> &str {
        self.key
            .split_once('/')
            .map_or(self.key.as_str(), |(_, n)| n)
    }

    /// Whether `full` is [`Instance::full_name`] (compared without allocating).
    pub fn is_named(&self, full: &str) -> bool {
        let kind = if self.legacy {
            self.template.as_str()
        } else {
            "instance"
        };
        let (name, ns) = match self.key.split_once('/') {
            Some((ns, name)) => (name, Some(ns)),
            None => (self.key.as_str(), None),
        };
        let Some(rest) = full
            .strip_prefix(name)
            .and_then(|r| r.strip_prefix('.'))
            .and_then(|r| r.strip_prefix(kind))
        else {
            return false;
        };
        match ns {
            Some(ns) => rest.strip_prefix('.') == Some(ns),
            None => rest.is_empty(),
        }
    }

    /// The fully-qualified name (`requestcountquota.instance.istio-system`, or for the legacy
    /// form `requestcount.quota.istio-system`), as handler params name instances.
    pub fn full_name(&self) -> String {
        let kind = if self.legacy {
            self.template.as_str()
        } else {
            "instance"
        };
        match self.key.split_once('/') {
            Some((ns, name)) => format!("{name}.{kind}.{ns}"),
            None => format!("{}.{kind}", self.key),
        }
    }
}

/// One action of a rule, its handler and instances resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// `name.adapter.namespace`, as Istio names handlers in status messages.
    pub handler: String,
    pub adapter: Adapter,
    pub instances: Vec<Instance>,
}

/// A rule ready to evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRule {
    /// `namespace/name`.
    pub key: String,
    pub namespace: String,
    pub matcher: Expr,
    pub actions: Vec<Action>,
}

/// Every usable rule of the current configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<CompiledRule>,
    /// Rules left out, with the reason (bad expression, unknown handler).
    pub problems: Vec<String>,
    /// Pods by `namespace/name`, for workload attributes (`destination.labels`, ...).
    pub pods: BTreeMap<String, PodInfo>,
    /// The same pods' workload attributes as values, by uid (`kubernetes://<pod>.<namespace>`),
    /// built once per configuration for the Check path.
    pub workloads: HashMap<String, Workload>,
}

/// A pod's workload attributes as Check adds them to a bag (`<side>.labels`, `.name`,
/// `.namespace`, `.service_account_name`).
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// A `StringMap`.
    pub labels: Value,
    pub name: Value,
    pub namespace: Value,
    pub service_account: Option<Value>,
}

// Values here are strings and string maps only (no doubles), so equality is total.
impl Eq for Workload {}

impl Workload {
    fn of(pod: &PodInfo) -> Workload {
        Workload {
            labels: Value::StringMap(pod.labels.clone()),
            name: Value::String(pod.name.clone()),
            namespace: Value::String(pod.namespace.clone()),
            service_account: pod.service_account.clone().map(Value::String),
        }
    }
}

/// The current policy, shared by the sink (writer) and the Check path (readers).
#[derive(Debug, Clone, Default)]
pub struct PolicyHandle {
    inner: Arc<RwLock<Arc<Policy>>>,
}

impl PolicyHandle {
    pub fn current(&self) -> Arc<Policy> {
        self.inner.read().clone()
    }

    pub fn set(&self, policy: Policy) {
        *self.inner.write() = Arc::new(policy);
    }
}

impl Policy {
    /// Compiles every rule of `state`. A rule whose expression does not parse, or whose handler
    /// does not exist, is left out and named in `problems`.
    pub fn compile(state: &ConfigState) -> Policy {
        let mut policy = Policy {
            pods: state.pods.clone(),
            // Keyed as `pod_by_uid` finds them (`namespace/name` → `kubernetes://name.namespace`).
            workloads: state
                .pods
                .iter()
                .filter_map(|(key, p)| {
                    let (ns, name) = key.split_once('/')?;
                    Some((format!("kubernetes://{name}.{ns}"), Workload::of(p)))
                })
                .collect(),
            ..Policy::default()
        };
        'rules: for (key, spec) in &state.rules {
            let namespace = key.split_once('/').map_or("", |(ns, _)| ns).to_string();
            let text = spec.match_.as_deref().unwrap_or("");
            let matcher = match parse(text) {
                Ok(m) => m,
                Err(e) => {
                    policy
                        .problems
                        .push(format!("rule {key}: match {text:?}: {e}"));
                    continue;
                }
            };
            let mut actions = Vec::new();
            for a in &spec.actions {
                let Some((hkey, handler)) = resolve_handler(state, &namespace, &a.handler) else {
                    policy
                        .problems
                        .push(format!("rule {key}: handler {:?} not found", a.handler));
                    continue 'rules;
                };
                let adapter_name = handler
                    .compiled_adapter
                    .clone()
                    .or_else(|| handler.adapter.clone())
                    .unwrap_or_default();
                let (hns, hname) = hkey.split_once('/').unwrap_or(("", hkey.as_str()));
                let fq = format!("{hname}.{adapter_name}.{hns}");
                let adapter = match Adapter::build(&adapter_name, handler.params.as_ref()) {
                    Ok(a) => a,
                    Err(e) => {
                        policy
                            .problems
                            .push(format!("rule {key}: handler {hkey}: {e}"));
                        continue 'rules;
                    }
                };
                if let Adapter::Ignored { adapter } = &adapter {
                    tracing::info!(rule = %key, handler = %hkey, adapter = %adapter, "adapter not supported; action ignored");
                }
                let mut instances = Vec::new();
                if let Some(template) = adapter.template() {
                    for name in &a.instances {
                        match compile_instance(state, &namespace, name, template) {
                            Ok(i) => instances.push(i),
                            Err(e) => {
                                policy.problems.push(format!("rule {key}: {e}"));
                                continue 'rules;
                            }
                        }
                    }
                }
                actions.push(Action {
                    handler: fq,
                    adapter,
                    instances,
                });
            }
            policy.rules.push(CompiledRule {
                key: key.clone(),
                namespace,
                matcher,
                actions,
            });
        }
        policy
    }

    /// The workload attributes of the pod behind a `kubernetes://<pod>.<namespace>` uid.
    pub fn workload_by_uid(&self, uid: &str) -> Option<&Workload> {
        self.workloads.get(uid)
    }

    /// The pod behind a `kubernetes://<pod>.<namespace>` uid.
    pub fn pod_by_uid(&self, uid: &str) -> Option<&PodInfo> {
        let rest = uid.strip_prefix("kubernetes://")?;
        let (name, ns) = rest.rsplit_once('.')?;
        self.pods.get(&format!("{ns}/{name}"))
    }
}

/// The keys an action's reference may mean: `name` (in the rule's namespace), `name.namespace`,
/// or the legacy `name.kind[.namespace]`.
fn candidates(rule_ns: &str, name: &str) -> Vec<String> {
    let mut out = vec![format!("{rule_ns}/{name}")];
    let segs: Vec<&str> = name.split('.').collect();
    if segs.len() >= 2 {
        out.push(format!("{}/{}", segs[1], segs[0]));
        out.push(format!("{rule_ns}/{}", segs[0]));
    }
    if segs.len() >= 3 {
        out.push(format!("{}/{}", segs[2], segs[0]));
    }
    out
}

fn resolve_handler<'a>(
    state: &'a ConfigState,
    rule_ns: &str,
    name: &str,
) -> Option<(String, &'a mesh_proto::config::HandlerSpec)> {
    candidates(rule_ns, name)
        .into_iter()
        .find_map(|k| state.handler(&k).map(|h| (k, h)))
}

/// Resolves and compiles an instance an adapter reads (`template` is what it expects).
fn compile_instance(
    state: &ConfigState,
    rule_ns: &str,
    name: &str,
    template: &str,
) -> Result<Instance, String> {
    let (key, spec) = candidates(rule_ns, name)
        .into_iter()
        .find_map(|k| state.instance(&k).map(|i| (k, i)))
        .ok_or_else(|| format!("instance {name:?} not found"))?;
    let found = spec
        .compiled_template
        .clone()
        .or_else(|| spec.template.clone())
        .unwrap_or_default();
    if found != template {
        return Err(format!(
            "instance {key} has template {found:?}, its handler needs {template:?}"
        ));
    }
    let value = match spec.params.as_ref().and_then(|p| p.get("value")) {
        None => None,
        Some(v) => {
            let text = v
                .as_str()
                .ok_or_else(|| format!("instance {key}: params.value {v} is not an expression"))?;
            Some(parse(text).map_err(|e| format!("instance {key}: params.value {text:?}: {e}"))?)
        }
    };
    let mut dimensions = Vec::new();
    if let Some(dims) = spec.params.as_ref().and_then(|p| p.get("dimensions")) {
        let map = dims
            .as_object()
            .ok_or_else(|| format!("instance {key}: params.dimensions is not a map"))?;
        for (name, v) in map {
            let text = v.as_str().ok_or_else(|| {
                format!("instance {key}: params.dimensions.{name} {v} is not an expression")
            })?;
            let e = parse(text)
                .map_err(|e| format!("instance {key}: params.dimensions.{name} {text:?}: {e}"))?;
            dimensions.push((name.clone(), e));
        }
    }
    let (mut fields, mut maps) = (Vec::new(), Vec::new());
    if matches!(found.as_str(), "logentry" | "tracespan")
        && let Some(params) = spec.params.as_ref().and_then(|p| p.as_object())
    {
        for (name, v) in params {
            if name == "value" || name == "dimensions" {
                continue;
            }
            match v {
                serde_json::Value::String(text) => {
                    let e = parse(text)
                        .map_err(|e| format!("instance {key}: params.{name} {text:?}: {e}"))?;
                    fields.push((name.clone(), e));
                }
                serde_json::Value::Object(m) => {
                    let mut entries = Vec::with_capacity(m.len());
                    for (k, v) in m {
                        let text = v.as_str().ok_or_else(|| {
                            format!("instance {key}: params.{name}.{k} {v} is not an expression")
                        })?;
                        let e = parse(text).map_err(|e| {
                            format!("instance {key}: params.{name}.{k} {text:?}: {e}")
                        })?;
                        entries.push((k.clone(), e));
                    }
                    maps.push((name.clone(), entries));
                }
                // Booleans and numbers written without quotes are literal expressions.
                serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {
                    let text = v.to_string();
                    let e = parse(&text)
                        .map_err(|e| format!("instance {key}: params.{name} {text}: {e}"))?;
                    fields.push((name.clone(), e));
                }
                _ => {}
            }
        }
    }
    let legacy = !state.instances.contains_key(&key);
    Ok(Instance {
        legacy,
        key,
        template: found,
        value,
        dimensions,
        fields,
        maps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::config::{HandlerSpec, RuleAction, RuleSpec};
    use serde_json::json;

    fn state() -> ConfigState {
        let mut s = ConfigState::default();
        s.handlers.insert(
            "default/denyreviewsv3handler".into(),
            HandlerSpec {
                compiled_adapter: Some("denier".into()),
                params: Some(json!({"status": {"code": 7, "message": "Not allowed"}})),
                ..Default::default()
            },
        );
        s.handlers.insert(
            "istio-system/prometheus".into(),
            HandlerSpec {
                compiled_adapter: Some("prometheus".into()),
                ..Default::default()
            },
        );
        s.rules.insert(
            "default/denyreviewsv3".into(),
            RuleSpec {
                match_: Some(r#"destination.labels["app"] == "ratings""#.into()),
                actions: vec![RuleAction {
                    handler: "denyreviewsv3handler".into(),
                    instances: vec!["denyreviewsv3request".into()],
                    name: None,
                }],
                ..Default::default()
            },
        );
        s.rules.insert(
            "istio-system/promhttp".into(),
            RuleSpec {
                match_: None,
                actions: vec![RuleAction {
                    handler: "prometheus.istio-system".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        s
    }

    #[test]
    fn compiles_rules_and_resolves_handlers() {
        let p = Policy::compile(&state());
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(p.rules.len(), 2);
        let deny = &p.rules[0];
        assert_eq!(deny.key, "default/denyreviewsv3");
        assert_eq!(deny.namespace, "default");
        assert_eq!(
            deny.actions,
            vec![Action {
                handler: "denyreviewsv3handler.denier.default".into(),
                adapter: Adapter::Denier(crate::adapter::denier::Params {
                    code: 7,
                    message: "Not allowed".into(),
                    valid_duration: std::time::Duration::from_secs(5),
                    valid_use_count: 1000,
                }),
                instances: vec![],
            }]
        );
        assert_eq!(
            p.rules[1].actions[0].adapter,
            Adapter::Prometheus(Default::default())
        );
    }

    #[test]
    fn bad_rules_are_left_out_with_a_reason() {
        let mut s = state();
        s.rules.insert(
            "default/bad".into(),
            RuleSpec {
                match_: Some("a ==".into()),
                ..Default::default()
            },
        );
        s.rules.insert(
            "default/nohandler".into(),
            RuleSpec {
                actions: vec![RuleAction {
                    handler: "missing".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        let p = Policy::compile(&s);
        assert_eq!(p.rules.len(), 2);
        assert_eq!(p.problems.len(), 2);
        assert!(p.problems[0].contains("default/bad"), "{:?}", p.problems);
        assert!(p.problems[1].contains("missing"), "{:?}", p.problems);
    }

    #[test]
    fn listchecker_with_listentry_instance() {
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
        let rule = |instance: &str| RuleSpec {
            match_: Some(r#"destination.labels["app"] == "ratings""#.into()),
            actions: vec![RuleAction {
                handler: "whitelist".into(),
                instances: vec![instance.into()],
                name: None,
            }],
            ..Default::default()
        };
        s.rules
            .insert("default/checkversion".into(), rule("appversion"));
        s.rules.insert("default/missing".into(), rule("nosuch"));
        let p = Policy::compile(&s);
        assert_eq!(p.rules.len(), 1);
        assert_eq!(
            p.problems,
            vec![r#"rule default/missing: instance "nosuch" not found"#]
        );
        let a = &p.rules[0].actions[0];
        assert_eq!(a.handler, "whitelist.listchecker.default");
        assert_eq!(a.instances[0].key, "default/appversion");
        assert_eq!(
            a.instances[0].value.as_ref().map(|e| e.to_string()),
            Some(r#"source.labels["version"]"#.into())
        );
    }
}
