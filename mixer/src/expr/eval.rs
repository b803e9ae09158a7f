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

/// A [`Reference`] borrowed from the expression (no allocation), as the Check path records
/// them; [`Read::to_reference`] makes the owned form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Read<'a> {
    pub name: &'a str,
    pub map_key: Option<&'a str>,
    pub present: bool,
}

impl Read<'_> {
    pub fn to_reference(&self) -> Reference {
        Reference {
            name: self.name.to_string(),
            map_key: self.map_key.map(str::to_string),
            present: self.present,
        }
    }
}

/// Where evaluation reads attributes: a [`Bag`], or a bag with generated attributes on top
/// (see `check::CheckAttributes`).
pub trait Attributes {
    fn attribute(&self, name: &str) -> Option<&Value>;
}

impl Attributes for Bag {
    fn attribute(&self, name: &str) -> Option<&Value> {
        self.get(name)
    }
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
pub fn evaluate_value<B: Attributes + ?Sized>(expr: &Expr, bag: &B) -> Evaluation<Value> {
    let mut reads = Vec::new();
    let result = eval_value_reads(expr, bag, &mut reads);
    Evaluation {
        result,
        references: reads.iter().map(Read::to_reference).collect(),
    }
}

/// Evaluates `expr` as a boolean (a rule's `match`).
pub fn evaluate<B: Attributes + ?Sized>(expr: &Expr, bag: &B) -> Evaluation<bool> {
    let mut reads = Vec::new();
    let result = eval_bool_reads(expr, bag, &mut reads);
    Evaluation {
        result,
        references: reads.iter().map(Read::to_reference).collect(),
    }
}

/// Evaluates `expr` as a boolean, appending what it read to `reads` (allocation-free unless an
/// error or a function call).
pub fn eval_bool_reads<'a, B: Attributes + ?Sized>(
    expr: &'a Expr,
    bag: &'a B,
    reads: &mut Vec<Read<'a>>,
) -> Result<bool, EvalError> {
    eval_bool(expr, bag, reads)
}

/// Evaluates `expr` to a value, appending what it read to `reads`.
pub fn eval_value_reads<'a, B: Attributes + ?Sized>(
    expr: &'a Expr,
    bag: &'a B,
    reads: &mut Vec<Read<'a>>,
) -> Result<Value, EvalError> {
    eval(expr, bag, reads).map(Val::into_value)
}

/// A value during evaluation: borrowed from the bag or the expression where possible.
#[derive(Debug)]
enum Val<'a> {
    Ref(&'a Value),
    Str(&'a str),
    Bool(bool),
    Own(Value),
}

impl Val<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            Val::Ref(Value::String(s)) | Val::Own(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Val::Ref(v) => v.type_name(),
            Val::Own(v) => v.type_name(),
            Val::Str(_) => "STRING",
            Val::Bool(_) => "BOOL",
        }
    }

    fn into_value(self) -> Value {
        match self {
            Val::Ref(v) => v.clone(),
            Val::Str(s) => Value::String(s.to_string()),
            Val::Bool(b) => Value::Bool(b),
            Val::Own(v) => v,
        }
    }
}

fn eval_bool<'a, B: Attributes + ?Sized>(
    expr: &'a Expr,
    bag: &'a B,
    refs: &mut Vec<Read<'a>>,
) -> Result<bool, EvalError> {
    match eval(expr, bag, refs)? {
        Val::Bool(b) | Val::Ref(&Value::Bool(b)) | Val::Own(Value::Bool(b)) => Ok(b),
        other => Err(EvalError::NotBool(other.type_name())),
    }
}

fn eval<'a, B: Attributes + ?Sized>(
    expr: &'a Expr,
    bag: &'a B,
    refs: &mut Vec<Read<'a>>,
) -> Result<Val<'a>, EvalError> {
    match expr {
        Expr::Literal(Literal::String(s)) => Ok(Val::Str(s)),
        Expr::Literal(Literal::Int(i)) => Ok(Val::Own(Value::Int64(*i))),
        Expr::Literal(Literal::Bool(b)) => Ok(Val::Bool(*b)),
        Expr::Attr(name) => {
            let v = bag.attribute(name);
            refs.push(Read {
                name,
                map_key: None,
                present: v.is_some(),
            });
            v.map(Val::Ref)
                .ok_or_else(|| EvalError::Missing(name.clone()))
        }
        Expr::Index { attr, key } => {
            let Some(v) = bag.attribute(attr) else {
                refs.push(Read {
                    name: attr,
                    map_key: None,
                    present: false,
                });
                return Err(EvalError::Missing(attr.clone()));
            };
            let Value::StringMap(m) = v else {
                refs.push(Read {
                    name: attr,
                    map_key: None,
                    present: true,
                });
                return Err(EvalError::NotAMap {
                    attr: attr.clone(),
                    found: v.type_name(),
                });
            };
            let found = m.get(key.as_str());
            refs.push(Read {
                name: attr,
                map_key: Some(key),
                present: found.is_some(),
            });
            found
                .map(|s| Val::Str(s))
                .ok_or_else(|| EvalError::MissingKey {
                    attr: attr.clone(),
                    key: key.clone(),
                })
        }
        Expr::Eq(a, b) => Ok(Val::Bool(equal(a, b, bag, refs)?)),
        Expr::Ne(a, b) => Ok(Val::Bool(!equal(a, b, bag, refs)?)),
        Expr::And(a, b) => Ok(Val::Bool(
            eval_bool(a, bag, refs)? && eval_bool(b, bag, refs)?,
        )),
        Expr::Or(a, b) => Ok(Val::Bool(
            eval_bool(a, bag, refs)? || eval_bool(b, bag, refs)?,
        )),
        Expr::Not(a) => Ok(Val::Bool(!eval_bool(a, bag, refs)?)),
        Expr::Default(a, b) => match eval(a, bag, refs) {
            Ok(v) if v.as_str().is_some_and(str::is_empty) => eval(b, bag, refs),
            Ok(v) => Ok(v),
            Err(EvalError::Missing(_) | EvalError::MissingKey { .. }) => eval(b, bag, refs),
            Err(e) => Err(e),
        },
        Expr::Call { func, args } => {
            let mut values = Vec::with_capacity(args.len());
            for a in args {
                values.push(eval(a, bag, refs)?.into_value());
            }
            call(func, values).map(Val::Own)
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

fn equal<'a, B: Attributes + ?Sized>(
    a: &'a Expr,
    b: &'a Expr,
    bag: &'a B,
    refs: &mut Vec<Read<'a>>,
) -> Result<bool, EvalError> {
    let left = eval(a, bag, refs)?;
    let right = eval(b, bag, refs)?;
    // Strings (the common case) compare without building values.
    if let (Some(l), Some(r)) = (left.as_str(), right.as_str()) {
        return Ok(l == r);
    }
    let (left, right) = (left.into_value(), right.into_value());
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
