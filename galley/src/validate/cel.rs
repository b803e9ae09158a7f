//! The CEL rules (`x-kubernetes-validations`) of the CRDs, evaluated for the rule shapes Istio's
//! CRDs use: each rule's text is recognised (whitespace-insensitively) and checked in Rust; a
//! failing rule reports its own `message` at the field that carries it, as the API server does.
//! A rule of another shape is not evaluated (and counted by [`unknown_rules`] in tests).

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

/// Walks `v` along `schema` and pushes `(field path, message)` for every failing rule.
pub(crate) fn check_rules(schema: &Value, v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    if let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for r in rules {
            let rule = r.get("rule").and_then(Value::as_str).unwrap_or_default();
            if eval(rule, v) == Some(false) {
                let message = r
                    .get("message")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("failed rule: {rule}"), str::to_string);
                out.push((path.to_string(), message));
            }
        }
    }
    match v {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, val) in map {
                if let Some(s) = props.and_then(|p| p.get(k)).or(additional) {
                    let at = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    check_rules(s, val, &at, out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check_rules(s, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// Every rule text in `schema` that [`eval`] does not understand.
#[cfg(test)]
pub(crate) fn unknown_rules(schema: &Value, out: &mut Vec<String>) {
    match schema {
        Value::Object(m) => {
            for r in m
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let rule = r.get("rule").and_then(Value::as_str).unwrap_or_default();
                if !understood(rule) {
                    out.push(rule.to_string());
                }
            }
            m.values().for_each(|v| unknown_rules(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| unknown_rules(v, out)),
        _ => {}
    }
}

fn normalize(rule: &str) -> String {
    rule.split_whitespace().collect::<Vec<_>>().join(" ")
}

static HAS_COUNT: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"^\(has\(self\.\w+\) \? 1 : 0\)( \+ \(has\(self\.\w+\) \? 1 : 0\))* <= 1$").ok()
});
static HAS_ANY: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^has\(self\.\w+\)( \|\| has\(self\.\w+\))*$").ok());
static HAS_FIELD: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"has\(self\.(\w+)\)").ok());
static NOT_CONTAINS: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"^!self\.contains\("([^"]*)"\)$"#).ok());
static KEYS_NOT_CONTAIN: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"^self\.all\(key, !key\.contains\("([^"]*)"\)\)$"#).ok());
static NOT_EQUAL: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"^self != "([^"]*)"$"#).ok());
static PORT_NAME: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$").ok());

fn matches(re: &LazyLock<Option<Regex>>, s: &str) -> bool {
    re.as_ref().is_some_and(|r| r.is_match(s))
}

fn capture(re: &LazyLock<Option<Regex>>, s: &str) -> Option<String> {
    re.as_ref()?
        .captures(s)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str().to_string())
}

fn has_fields(rule: &str) -> Vec<String> {
    HAS_FIELD.as_ref().map_or_else(Vec::new, |re| {
        re.captures_iter(rule)
            .filter_map(|c| c.get(1).map(|m| m.as_str().to_string()))
            .collect()
    })
}

const DURATION_1MS: &str = "duration(self) >= duration('1ms')";
const KEYS_NOT_EMPTY: &str = "self.all(key, key.size() != 0)";
const WAYPOINT: &str = r#"has(self.context) ? ((self.context == "WAYPOINT") ? has(self.waypoint) : !has(self.waypoint)) : !has(self.waypoint)"#;
const PORT_RANGE: &str = "0 < self && self <= 65535";
const EMPTY: &str = "self.size() == 0";
const CIDR: &str = r#"!((has(self.addresses) ? self.addresses : []).exists(k, k.contains("/")) && !((has(self.resolution) ? self.resolution : "NONE") in ["STATIC", "NONE"]))"#;
const NONE_NO_ENDPOINTS: &str = r#"((has(self.resolution) ? self.resolution : "NONE") == "NONE") ? !has(self.endpoints) : true"#;
const DNS_RR_ONE: &str = r#"((has(self.resolution) ? self.resolution : "") == "DNS_ROUND_ROBIN") ? ((has(self.endpoints) ? self.endpoints : []).size() <= 1) : true"#;
const UDS_NO_PORTS: &str =
    r#"(has(self.address) ? self.address : "").startsWith("unix://") ? !has(self.ports) : true"#;
const UDS_ABSOLUTE: &str = r#"self.startsWith("unix://") ? (self.substring(7, 8) == "/" || self.substring(7, 8) == "@") : true"#;
const UDS_NOT_DIR: &str = r#"self.startsWith("unix://") ? !self.endsWith("/") : true"#;
const PORT_NAMES: &str =
    r#"self.all(key, size(key) < 63 && key.matches("^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$"))"#;
const UNIQUE_PORTS: &str = "self.all(l1, self.exists_one(l2, l1.number == l2.number))";
const SERVICE_ACCOUNTS: &str = "(has(self.serviceAccounts) || has(self.notServiceAccounts)) ? (!has(self.principals) && !has(self.notPrincipals) && !has(self.namespaces) && !has(self.notNamespaces)) : true";
const PORT_LEVEL_SELECTOR: &str = "has(self.portLevelMtls) ? (((has(self.selector) && has(self.selector.matchLabels)) ? self.selector.matchLabels : {}).size() > 0) : true";
const PORT_KEYS: &str = "self.all(key, 0 < int(key) && int(key) <= 65535)";
const URL_SCHEME: &str = r#"url(self).getScheme() in ["http", "https"]"#;

#[cfg(test)]
fn understood(rule: &str) -> bool {
    let r = normalize(rule);
    [
        DURATION_1MS,
        KEYS_NOT_EMPTY,
        WAYPOINT,
        PORT_RANGE,
        EMPTY,
        CIDR,
        NONE_NO_ENDPOINTS,
        DNS_RR_ONE,
        UDS_NO_PORTS,
        UDS_ABSOLUTE,
        UDS_NOT_DIR,
        PORT_NAMES,
        UNIQUE_PORTS,
        SERVICE_ACCOUNTS,
        PORT_LEVEL_SELECTOR,
        PORT_KEYS,
        URL_SCHEME,
    ]
    .contains(&r.as_str())
        || [
            &HAS_COUNT,
            &HAS_ANY,
            &NOT_CONTAINS,
            &KEYS_NOT_CONTAIN,
            &NOT_EQUAL,
        ]
        .iter()
        .any(|re| matches(re, &r))
}

/// Whether `v` satisfies `rule`; `None` when the rule's shape is not known or `v` is not of
/// the type the rule expects (the structural check reports that).
pub(crate) fn eval(rule: &str, v: &Value) -> Option<bool> {
    let r = normalize(rule);
    let has = |f: &str| v.get(f).is_some_and(|x| !x.is_null());
    let str_of = |f: &str| v.get(f).and_then(Value::as_str);
    match r.as_str() {
        DURATION_1MS => Some(go_duration(v.as_str()?).is_some_and(|d| d >= 0.001)),
        KEYS_NOT_EMPTY => Some(v.as_object()?.keys().all(|k| !k.is_empty())),
        WAYPOINT => Some(match str_of("context") {
            Some("WAYPOINT") => has("waypoint"),
            _ => !has("waypoint"),
        }),
        PORT_RANGE => {
            let n = v.as_f64()?;
            Some(0.0 < n && n <= 65535.0)
        }
        EMPTY => Some(match v {
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(m) => m.is_empty(),
            _ => return None,
        }),
        CIDR => {
            let cidr = v
                .get("addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .any(|a| a.contains('/'));
            let resolution = str_of("resolution").unwrap_or("NONE");
            Some(!cidr || ["STATIC", "NONE"].contains(&resolution))
        }
        NONE_NO_ENDPOINTS => {
            Some(str_of("resolution").unwrap_or("NONE") != "NONE" || !has("endpoints"))
        }
        DNS_RR_ONE => Some(
            str_of("resolution") != Some("DNS_ROUND_ROBIN")
                || v.get("endpoints")
                    .and_then(Value::as_array)
                    .is_none_or(|e| e.len() <= 1),
        ),
        UDS_NO_PORTS => {
            Some(!str_of("address").unwrap_or_default().starts_with("unix://") || !has("ports"))
        }
        UDS_ABSOLUTE => {
            let s = v.as_str()?;
            Some(match s.strip_prefix("unix://") {
                Some(rest) => rest.starts_with('/') || rest.starts_with('@'),
                None => true,
            })
        }
        UDS_NOT_DIR => {
            let s = v.as_str()?;
            Some(!s.starts_with("unix://") || !s.ends_with('/'))
        }
        PORT_NAMES => Some(
            v.as_object()?
                .keys()
                .all(|k| k.chars().count() < 63 && matches(&PORT_NAME, k)),
        ),
        UNIQUE_PORTS => {
            let numbers: Vec<Option<&Value>> =
                v.as_array()?.iter().map(|p| p.get("number")).collect();
            Some(
                numbers
                    .iter()
                    .all(|n| numbers.iter().filter(|m| *m == n).count() == 1),
            )
        }
        SERVICE_ACCOUNTS => Some(
            !(has("serviceAccounts") || has("notServiceAccounts"))
                || !["principals", "notPrincipals", "namespaces", "notNamespaces"]
                    .iter()
                    .any(|f| has(f)),
        ),
        PORT_LEVEL_SELECTOR => Some(
            !has("portLevelMtls")
                || v.pointer("/selector/matchLabels")
                    .and_then(Value::as_object)
                    .is_some_and(|m| !m.is_empty()),
        ),
        PORT_KEYS => Some(
            v.as_object()?
                .keys()
                .all(|k| k.parse::<i64>().is_ok_and(|n| (1..=65535).contains(&n))),
        ),
        URL_SCHEME => {
            let s = v.as_str()?;
            let scheme = s.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
            Some(matches!(scheme.as_deref(), Some("http" | "https")))
        }
        _ if matches(&HAS_COUNT, &r) => Some(has_fields(&r).iter().filter(|f| has(f)).count() <= 1),
        _ if matches(&HAS_ANY, &r) => Some(has_fields(&r).iter().any(|f| has(f))),
        _ => {
            if let Some(needle) = capture(&NOT_CONTAINS, &r) {
                return Some(!v.as_str()?.contains(&needle));
            }
            if let Some(needle) = capture(&KEYS_NOT_CONTAIN, &r) {
                return Some(v.as_object()?.keys().all(|k| !k.contains(&needle)));
            }
            if let Some(other) = capture(&NOT_EQUAL, &r) {
                return Some(v.as_str()? != other);
            }
            None
        }
    }
}

/// Seconds of a Go duration (`1h2m3.5s`, `300ms`, `-1s`, `0`), or `None` when malformed.
pub(crate) fn go_duration(s: &str) -> Option<f64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0.0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        let n: f64 = num.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = tail;
    }
    Some(if neg { -total } else { total })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("1h2m3.5s"), Some(3723.5));
        assert_eq!(go_duration("300ms"), Some(0.3));
        assert_eq!(go_duration("0"), Some(0.0));
        assert_eq!(go_duration("-1s"), Some(-1.0));
        assert_eq!(go_duration("apple"), None);
        assert_eq!(go_duration("5"), None);
        assert_eq!(go_duration(""), None);
        assert_eq!(go_duration("1.2.3s"), None);
    }

    #[test]
    fn rule_shapes() {
        assert_eq!(eval(DURATION_1MS, &json!("5s")), Some(true));
        assert_eq!(eval(DURATION_1MS, &json!("0s")), Some(false));
        assert_eq!(eval(DURATION_1MS, &json!("apple")), Some(false));
        let count = "(has(self.selector) ? 1 : 0) + (has(self.targetRef) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1";
        assert_eq!(eval(count, &json!({"selector": {}})), Some(true));
        assert_eq!(
            eval(count, &json!({"selector": {}, "targetRef": {}})),
            Some(false)
        );
        assert_eq!(
            eval("has(self.address) || has(self.network)", &json!({})),
            Some(false)
        );
        assert_eq!(eval("!self.contains(\"*\")", &json!("a*")), Some(false));
        assert_eq!(eval("self != \"*\"", &json!("*")), Some(false));
        assert_eq!(eval(URL_SCHEME, &json!("https://x/jwks")), Some(true));
        assert_eq!(eval(URL_SCHEME, &json!("hTPp\\\\blah")), Some(false));
        assert_eq!(eval(UDS_ABSOLUTE, &json!("unix://a")), Some(false));
        assert_eq!(eval(UDS_ABSOLUTE, &json!("unix:///a")), Some(true));
        assert_eq!(
            eval(UNIQUE_PORTS, &json!([{"number": 1}, {"number": 1}])),
            Some(false)
        );
        assert_eq!(eval("self.magic()", &json!(1)), None);
        // multi-line rule text is recognised
        let sa = "(has(self.serviceAccounts) || has(self.notServiceAccounts)) ? (!has(self.principals) &&\n!has(self.notPrincipals) && !has(self.namespaces) && !has(self.notNamespaces)) : true";
        assert_eq!(
            eval(sa, &json!({"serviceAccounts": ["a"], "namespaces": ["b"]})),
            Some(false)
        );
    }

    #[test]
    fn walks_to_the_field_with_the_rule() {
        let schema = json!({"properties": {"spec": {"properties": {"ports": {"items": {
            "properties": {"number": {"x-kubernetes-validations": [
                {"rule": PORT_RANGE, "message": "port must be between 1-65535"}]}}}}}}}});
        let mut out = Vec::new();
        check_rules(
            &schema,
            &json!({"spec": {"ports": [{"number": 80}, {"number": 0}]}}),
            "",
            &mut out,
        );
        assert_eq!(
            out,
            vec![(
                "spec.ports[1].number".to_string(),
                "port must be between 1-65535".to_string()
            )]
        );
    }
}
