//! Per-kind checks: the typed model must read, then the semantic rules of each kind.

use mesh_proto::config::{
    ConfigObject, DestinationRule, Endpoints, Gateway, HandlerSpec, InstanceSpec, Kind, ModelError,
    Pod, RuleSpec, ServiceSpec, VirtualService,
};
use std::sync::LazyLock;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::{ErrorContext, ValidationError};
use super::expr::check_expression;

/// Every problem of `obj`'s body. A body that does not fit the typed model yields that one
/// error (the semantic rules need the typed view).
pub(crate) fn check_body(
    kind: Kind,
    obj: &ConfigObject,
    cx: &ErrorContext,
) -> Vec<ValidationError> {
    let typed = |e: ModelError| vec![cx.error(e.field, e.message)];
    match kind {
        Kind::VirtualService => match spec::<VirtualService>(obj) {
            Ok(vs) => virtual_service(&vs, obj, cx),
            Err(e) => typed(e),
        },
        Kind::DestinationRule => match spec::<DestinationRule>(obj) {
            Ok(dr) => destination_rule(&dr, cx),
            Err(e) => typed(e),
        },
        Kind::Gateway => match spec::<Gateway>(obj) {
            Ok(gw) => gateway(&gw, cx),
            Err(e) => typed(e),
        },
        Kind::Service => match spec::<ServiceSpec>(obj) {
            Ok(svc) => service(&svc, cx),
            Err(e) => typed(e),
        },
        Kind::Endpoints => body_as::<Endpoints>(obj).err().map_or_else(Vec::new, typed),
        Kind::Pod => body_as::<Pod>(obj).err().map_or_else(Vec::new, typed),
        Kind::Rule => match spec::<RuleSpec>(obj) {
            Ok(rule) => mixer_rule(&rule, cx),
            Err(e) => typed(e),
        },
        Kind::Handler => spec::<HandlerSpec>(obj).err().map_or_else(Vec::new, typed),
        Kind::Instance => match spec::<InstanceSpec>(obj) {
            Ok(instance) => {
                let mut errs = Vec::new();
                if let Some(params) = &instance.params {
                    instance_params(params, "spec.params", cx, &mut errs);
                }
                errs
            }
            Err(e) => typed(e),
        },
        // A legacy `kind: <template>` instance: its spec is the params.
        Kind::Legacy(l) if !l.is_adapter() => {
            let mut errs = Vec::new();
            if let Some(spec) = obj.body.get("spec") {
                instance_params(spec, "spec", cx, &mut errs);
            }
            errs
        }
        _ => Vec::new(),
    }
}

/// The `spec` read as `T` (an empty spec when absent), like [`ConfigObject::spec`] but
/// straight from the stored value, without copying it first.
fn spec<T: DeserializeOwned>(obj: &ConfigObject) -> Result<T, ModelError> {
    static EMPTY: LazyLock<Value> = LazyLock::new(|| Value::Object(Map::new()));
    typed_at("spec", obj.body.get("spec").unwrap_or(&EMPTY))
}

/// The whole body read as `T`, like [`ConfigObject::body_as`], without copying it first.
fn body_as<T: DeserializeOwned>(obj: &ConfigObject) -> Result<T, ModelError> {
    serde_path_to_error::deserialize(&obj.body).map_err(|e| model_error("", e))
}

fn typed_at<T: DeserializeOwned>(prefix: &str, v: &Value) -> Result<T, ModelError> {
    serde_path_to_error::deserialize(v).map_err(|e| model_error(prefix, e))
}

/// The error as [`mesh_proto::config::from_value_at`] words it.
fn model_error(prefix: &str, e: serde_path_to_error::Error<serde_json::Error>) -> ModelError {
    let inner = e.path().to_string();
    let field = match (prefix.is_empty(), inner == ".") {
        (true, _) => inner,
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}.{inner}"),
    };
    ModelError {
        field,
        message: e.into_inner().to_string(),
    }
}

/// The rule's `match` must parse as a Mixer expression.
fn mixer_rule(rule: &RuleSpec, cx: &ErrorContext) -> Vec<ValidationError> {
    let Some(text) = rule.match_.as_deref() else {
        return Vec::new();
    };
    match check_expression(text) {
        Ok(()) => Vec::new(),
        Err(e) => vec![cx.error("spec.match", format!("invalid expression {text:?}: {e}"))],
    }
}

/// Every string in an instance's `params` is an attribute expression (map keys are names).
fn instance_params(v: &Value, at: &str, cx: &ErrorContext, errs: &mut Vec<ValidationError>) {
    match v {
        Value::String(text) => {
            if let Err(e) = check_expression(text) {
                errs.push(cx.error(at, format!("invalid expression {text:?}: {e}")));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                instance_params(item, &format!("{at}[{i}]"), cx, errs);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                instance_params(item, &format!("{at}.{k}"), cx, errs);
            }
        }
        _ => {}
    }
}

fn virtual_service(
    vs: &VirtualService,
    obj: &ConfigObject,
    cx: &ErrorContext,
) -> Vec<ValidationError> {
    let mut errs = Vec::new();
    if vs.hosts.is_empty() {
        errs.push(cx.error("spec.hosts", "at least one host is required"));
    }
    for (i, h) in vs.hosts.iter().enumerate() {
        if h.is_empty() {
            errs.push(cx.error(format!("spec.hosts[{i}]"), "host must not be empty"));
        }
    }
    let raw_http = obj
        .body
        .get("spec")
        .and_then(|s| s.get("http"))
        .and_then(Value::as_array);
    for (i, rule) in vs.http.iter().enumerate() {
        let at = format!("spec.http[{i}]");
        let direct_response = raw_http
            .and_then(|h| h.get(i))
            .and_then(|r| r.get("directResponse"))
            .is_some_and(|v| !v.is_null());
        if rule.route.is_empty() && rule.redirect.is_none() && !direct_response {
            errs.push(cx.error(
                at.clone(),
                "an http rule needs a route, a redirect or a directResponse",
            ));
        }
        if !rule.route.is_empty() && (rule.redirect.is_some() || direct_response) {
            errs.push(cx.error(
                at.clone(),
                "route cannot be set together with redirect or directResponse",
            ));
        }
        for (j, dest) in rule.route.iter().enumerate() {
            if dest.destination.host.is_empty() {
                errs.push(cx.error(
                    format!("{at}.route[{j}].destination.host"),
                    "host must not be empty",
                ));
            }
            if let Some(w) = dest.weight
                && !(0..=100).contains(&w)
            {
                errs.push(cx.error(
                    format!("{at}.route[{j}].weight"),
                    format!("weight {w} must be between 0 and 100"),
                ));
            }
        }
        if rule.route.len() > 1 {
            let sum: i64 = rule
                .route
                .iter()
                .map(|d| i64::from(d.weight.unwrap_or(0)))
                .sum();
            if sum != 100 {
                errs.push(cx.error(
                    format!("{at}.route"),
                    format!("weights of the destinations sum to {sum}, must be 100"),
                ));
            }
        }
    }
    errs
}

fn destination_rule(dr: &DestinationRule, cx: &ErrorContext) -> Vec<ValidationError> {
    let mut errs = Vec::new();
    if dr.host.is_empty() {
        errs.push(cx.error("spec.host", "host must not be empty"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, s) in dr.subsets.iter().enumerate() {
        let field = format!("spec.subsets[{i}].name");
        if s.name.is_empty() {
            errs.push(cx.error(field, "subset name must not be empty"));
        } else if !seen.insert(s.name.as_str()) {
            errs.push(cx.error(field, format!("duplicate subset name {:?}", s.name)));
        }
    }
    errs
}

fn gateway(gw: &Gateway, cx: &ErrorContext) -> Vec<ValidationError> {
    let mut errs = Vec::new();
    if gw.servers.is_empty() {
        errs.push(cx.error("spec.servers", "at least one server is required"));
    }
    for (i, s) in gw.servers.iter().enumerate() {
        if !(1..=65535).contains(&s.port.number) {
            errs.push(cx.error(
                format!("spec.servers[{i}].port.number"),
                format!("port {} must be between 1 and 65535", s.port.number),
            ));
        }
        if s.hosts.is_empty() {
            errs.push(cx.error(
                format!("spec.servers[{i}].hosts"),
                "at least one host is required",
            ));
        }
    }
    errs
}

fn service(svc: &ServiceSpec, cx: &ErrorContext) -> Vec<ValidationError> {
    svc.ports
        .iter()
        .enumerate()
        .filter(|(_, p)| p.port == 0)
        .map(|(i, _)| {
            cx.error(
                format!("spec.ports[{i}].port"),
                "port must be between 1 and 65535",
            )
        })
        .collect()
}
