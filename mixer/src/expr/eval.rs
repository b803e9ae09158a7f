//! Evaluates an expression against an attribute bag, recording what it read.

use mesh_proto::attributes::{Bag, Value};

use super::ast::{Expr, Literal};

/// One attribute lookup made during evaluation: the attribute (and map key, for `m["k"]`) and
/// whether it was found. This is what Mixer reports as referenced attributes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    pub name: String,
    pub map_key: Option<String>,
    pub present: bool,
}

/// Why an expression has no value for a bag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("lookup failed: {0:?}")]
    Missing(String),
    #[error("lookup failed: {attr}[{key:?}]")]
    MissingKey { attr: String, key: String },
    #[error("attribute {attr} is {found}, not a STRING_MAP")]
    NotAMap { attr: String, found: &'static str },
    #[error("cannot compare {left} with {right}")]
    TypeMismatch {
        left: &'static str,
        right: &'static str,
    },
    #[error("expected a BOOL, found {0}")]
    NotBool(&'static str),
    #[error("unknown function {0}")]
    UnknownFunction(String),
    #[error("{func}: {message}")]
    BadArguments { func: String, message: String },
}

/// The result of evaluating an expression and the attributes it read.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation<T> {
    pub result: Result<T, EvalError>,
    pub references: Vec<Reference>,
}

/// Evaluates `expr` to a value (an instance field).
pub fn evaluate_value(expr: &Expr, bag: &Bag) -> Evaluation<Value> {
    let mut refs = Vec::new();
    let result = eval(expr, bag, &mut refs);
    Evaluation {
        result,
        references: refs,
    }
}

/// Evaluates `expr` as a boolean (a rule's `match`).
pub fn evaluate(expr: &Expr, bag: &Bag) -> Evaluation<bool> {
    let mut refs = Vec::new();
    let result = eval_bool(expr, bag, &mut refs);
    Evaluation {
        result,
        references: refs,
    }
}

fn eval_bool(expr: &Expr, bag: &Bag, refs: &mut Vec<Reference>) -> Result<bool, EvalError> {
    match eval(expr, bag, refs)? {
        Value::Bool(b) => Ok(b),
        other => Err(EvalError::NotBool(other.type_name())),
    }
}

fn eval(expr: &Expr, bag: &Bag, refs: &mut Vec<Reference>) -> Result<Value, EvalError> {
    match expr {
        Expr::Literal(Literal::String(s)) => Ok(Value::String(s.clone())),
        Expr::Literal(Literal::Int(i)) => Ok(Value::Int64(*i)),
        Expr::Literal(Literal::Bool(b)) => Ok(Value::Bool(*b)),
        Expr::Attr(name) => {
            let v = bag.get(name).cloned();
            refs.push(Reference {
                name: name.clone(),
                map_key: None,
                present: v.is_some(),
            });
            v.ok_or_else(|| EvalError::Missing(name.clone()))
        }
        Expr::Index { attr, key } => {
            let Some(v) = bag.get(attr) else {
                refs.push(Reference {
                    name: attr.clone(),
                    map_key: None,
                    present: false,
                });
                return Err(EvalError::Missing(attr.clone()));
            };
            let Value::StringMap(m) = v else {
                refs.push(Reference {
                    name: attr.clone(),
                    map_key: None,
                    present: true,
                });
                return Err(EvalError::NotAMap {
                    attr: attr.clone(),
                    found: v.type_name(),
                });
            };
            let found = m.get(key);
            refs.push(Reference {
                name: attr.clone(),
                map_key: Some(key.clone()),
                present: found.is_some(),
            });
            found
                .map(|s| Value::String(s.clone()))
                .ok_or_else(|| EvalError::MissingKey {
                    attr: attr.clone(),
                    key: key.clone(),
                })
        }
        Expr::Eq(a, b) => Ok(Value::Bool(equal(a, b, bag, refs)?)),
        Expr::Ne(a, b) => Ok(Value::Bool(!equal(a, b, bag, refs)?)),
        Expr::And(a, b) => Ok(Value::Bool(
            eval_bool(a, bag, refs)? && eval_bool(b, bag, refs)?,
        )),
        Expr::Or(a, b) => Ok(Value::Bool(
            eval_bool(a, bag, refs)? || eval_bool(b, bag, refs)?,
        )),
        Expr::Not(a) => Ok(Value::Bool(!eval_bool(a, bag, refs)?)),
        Expr::Default(a, b) => match eval(a, bag, refs) {
            Ok(Value::String(s)) if s.is_empty() => eval(b, bag, refs),
            Ok(v) => Ok(v),
            Err(EvalError::Missing(_) | EvalError::MissingKey { .. }) => eval(b, bag, refs),
            Err(e) => Err(e),
        },
        Expr::Call { func, args } => {
            let mut values = Vec::with_capacity(args.len());
            for a in args {
                values.push(eval(a, bag, refs)?);
            }
            call(func, values)
        }
    }
}

fn bad(func: &str, message: impl Into<String>) -> EvalError {
    EvalError::BadArguments {
        func: func.to_string(),
        message: message.into(),
    }
}

/// The built-in functions.
fn call(func: &str, args: Vec<Value>) -> Result<Value, EvalError> {
    match (func, args.as_slice()) {
        ("ip", [Value::String(s)]) => {
            let ip: std::net::IpAddr = s
                .parse()
                .map_err(|_| bad(func, format!("{s:?} is not an IP address")))?;
            Ok(Value::Bytes(match ip {
                std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
                std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
            }))
        }
        ("match", [Value::String(s), Value::String(pattern)]) => Ok(Value::Bool(glob(s, pattern))),
        ("toLower", [Value::String(s)]) => Ok(Value::String(s.to_lowercase())),
        ("emptyStringMap", []) => Ok(Value::StringMap(Default::default())),
        ("conditionalString", [Value::Bool(c), Value::String(a), Value::String(b)]) => {
            Ok(Value::String(if *c { a.clone() } else { b.clone() }))
        }
        ("conditional", [Value::Bool(c), a, b]) => Ok(if *c { a.clone() } else { b.clone() }),
        (
            "ip" | "match" | "toLower" | "emptyStringMap" | "conditionalString" | "conditional",
            _,
        ) => {
            let types: Vec<&str> = args.iter().map(Value::type_name).collect();
            Err(bad(func, format!("wrong arguments ({})", types.join(", "))))
        }
        _ => Err(EvalError::UnknownFunction(func.to_string())),
    }
}

/// CEXL `match`: `prefix*`, `*suffix`, or an exact string.
fn glob(s: &str, pattern: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix('*') {
        s.starts_with(prefix)
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        s.ends_with(suffix)
    } else {
        s == pattern
    }
}

fn equal(a: &Expr, b: &Expr, bag: &Bag, refs: &mut Vec<Reference>) -> Result<bool, EvalError> {
    let left = eval(a, bag, refs)?;
    let right = eval(b, bag, refs)?;
    if std::mem::discriminant(&left) != std::mem::discriminant(&right) {
        return Err(EvalError::TypeMismatch {
            left: left.type_name(),
            right: right.type_name(),
        });
    }
    Ok(left == right)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::expr::parse;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn bag() -> Bag {
        Bag::new()
            .with("destination.labels", labels(&[("app", "ratings")]))
            .with(
                "source.labels",
                labels(&[("app", "reviews"), ("version", "v3")]),
            )
            .with("request.path", "/ratings/0")
            .with("response.code", 200i64)
            .with("connection.mtls", true)
    }

    fn run(src: &str) -> Result<bool, EvalError> {
        evaluate(&parse(src).unwrap(), &bag()).result
    }

    #[test]
    fn equality_conjunctions() {
        let rule = r#"destination.labels["app"] == "ratings" && source.labels["app"]=="reviews" && source.labels["version"] == "v3""#;
        assert_eq!(run(rule), Ok(true));
        assert_eq!(
            run(r#"destination.labels["app"] == "ratings" && source.labels["version"] == "v2""#),
            Ok(false)
        );
        assert_eq!(run(r#"request.path != "/ratings/0""#), Ok(false));
        assert_eq!(
            run(r#"request.path == "/x" || response.code == 200"#),
            Ok(true)
        );
        assert_eq!(run("!(connection.mtls == true)"), Ok(false));
        assert_eq!(run("connection.mtls && !false"), Ok(true));
        assert_eq!(run(""), Ok(true));
        assert_eq!(run("true"), Ok(true));
        assert_eq!(run("false"), Ok(false));
    }

    #[test]
    fn missing_attributes_and_defaults() {
        assert_eq!(
            run(r#"source.user == "x""#),
            Err(EvalError::Missing("source.user".into()))
        );
        assert_eq!(
            run(r#"source.labels["zone"] == "x""#),
            Err(EvalError::MissingKey {
                attr: "source.labels".into(),
                key: "zone".into()
            })
        );
        assert_eq!(run(r#"(source.user | "anon") == "anon""#), Ok(true));
        assert_eq!(
            run(r#"(source.labels["zone"] | "none") == "none""#),
            Ok(true)
        );
        assert_eq!(
            run(r#"response.code == "200""#),
            Err(EvalError::TypeMismatch {
                left: "INT64",
                right: "STRING"
            })
        );
        assert_eq!(run("request.path"), Err(EvalError::NotBool("STRING")));
        assert!(matches!(
            run(r#"request.path["x"] == "y""#),
            Err(EvalError::NotAMap { .. })
        ));
    }

    #[test]
    fn functions() {
        assert_eq!(run(r#"match(request.path, "/ratings/*")"#), Ok(true));
        assert_eq!(run(r#"match(request.path, "*/1")"#), Ok(false));
        assert_eq!(run(r#"toLower("AbC") == "abc""#), Ok(true));
        assert_eq!(
            evaluate_value(&parse(r#"source.ip | ip("10.0.0.1")"#).unwrap(), &bag()).result,
            Ok(Value::Bytes(vec![10, 0, 0, 1]))
        );
        assert!(matches!(
            run(r#"ip("nope") == ip("1.1.1.1")"#),
            Err(EvalError::BadArguments { .. })
        ));
        assert!(matches!(run("ip(1)"), Err(EvalError::BadArguments { .. })));
        assert_eq!(
            run("nosuch()"),
            Err(EvalError::UnknownFunction("nosuch".into()))
        );
    }

    #[test]
    fn records_references_with_short_circuit() {
        let e = parse(
            r#"destination.labels["app"] == "productpage" && source.labels["version"] == "v3""#,
        )
        .unwrap();
        let ev = evaluate(&e, &bag());
        assert_eq!(ev.result, Ok(false));
        // The right-hand side was never evaluated.
        assert_eq!(
            ev.references,
            vec![Reference {
                name: "destination.labels".into(),
                map_key: Some("app".into()),
                present: true
            }]
        );
        let ev = evaluate(&parse(r#"source.user == "x""#).unwrap(), &bag());
        assert_eq!(
            ev.references,
            vec![Reference {
                name: "source.user".into(),
                map_key: None,
                present: false
            }]
        );
    }
}
