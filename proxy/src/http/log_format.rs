//! Envoy access log formats: a TEXT format string or a JSON object of `%OPERATOR%` strings
//! (Envoy's `SubstitutionFormatString`), rendered from an [`AccessLogEntry`].
//!
//! The operators the proxy knows are those the entry records (`%START_TIME%`,
//! `%REQ(:METHOD)%`, `%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%`, `%PROTOCOL%`, `%RESPONSE_CODE%`,
//! `%RESPONSE_FLAGS%`, `%BYTES_RECEIVED%`, `%BYTES_SENT%`, `%DURATION%`, `%UPSTREAM_HOST%`,
//! `%UPSTREAM_CLUSTER%`, `%REQ(X-REQUEST-ID)%`, `%REQ(:AUTHORITY)%`, `%REQ(USER-AGENT)%`,
//! `%DOWNSTREAM_REMOTE_ADDRESS%`, `%DOWNSTREAM_PEER_URI_SAN%`, `%UPSTREAM_PEER_URI_SAN%`,
//! `%ROUTE_NAME%`); any other renders as Envoy renders a missing value: `-` in text, `null` in
//! JSON. In JSON a value that is a single numeric operator is a number, as in Envoy.

use serde::Serialize;
use serde_json::{Map, Value};

use super::access_log::AccessLogEntry;

/// Istio's default JSON access log keys and operators (the same list Pilot sends), plus the
/// peers' SPIFFE ids. `--access-log` writes this format.
pub const DEFAULT_JSON_FORMAT: &[(&str, &str)] = mesh_proto::config::ACCESS_LOG_JSON_FORMAT;

/// Envoy's default TEXT format (used when a TEXT format is empty).
pub const ENVOY_DEFAULT_TEXT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// One command operator the entry can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Operator {
    StartTime,
    Method,
    Path,
    Protocol,
    ResponseCode,
    ResponseFlags,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamHost,
    UpstreamCluster,
    RequestId,
    Authority,
    UserAgent,
    DownstreamRemoteAddress,
    DownstreamPeerUriSan,
    UpstreamPeerUriSan,
    RouteName,
    /// An operator the proxy does not record: rendered as missing.
    Unsupported,
}

/// A piece of a format: literal text or an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Part {
    Literal(String),
    Op(Operator),
}

/// A parsed access log format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum LogFormat {
    /// One JSON object per line: key → parts.
    Json(Vec<(String, Vec<Part>)>),
    /// One format string per entry (its own newline, if any).
    Text(Vec<Part>),
}

fn header_operator(name: &str) -> Operator {
    match name.to_ascii_lowercase().as_str() {
        ":method" => Operator::Method,
        ":path" | "x-envoy-original-path" => Operator::Path,
        ":authority" | "host" => Operator::Authority,
        "x-request-id" => Operator::RequestId,
        "user-agent" => Operator::UserAgent,
        _ => Operator::Unsupported,
    }
}

/// The operator of `%body%` (without the percent signs), or `None` when `body` is not shaped
/// like a command operator.
fn operator(body: &str) -> Option<Operator> {
    // Drop a `:LEN` truncation suffix after the closing parenthesis (or after the name).
    let (head, args) = match body.find('(') {
        Some(open) => {
            let close = body.rfind(')')?;
            (&body[..open], Some(&body[open + 1..close]))
        }
        None => (body.split(':').next().unwrap_or(body), None),
    };
    if head.is_empty() || !head.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
        return None;
    }
    Some(match (head, args) {
        ("START_TIME", _) => Operator::StartTime,
        ("REQ", Some(a)) => {
            // `MAIN?ALT`: the first one the proxy records.
            a.split('?')
                .map(header_operator)
                .find(|o| *o != Operator::Unsupported)
                .unwrap_or(Operator::Unsupported)
        }
        ("PROTOCOL", None) => Operator::Protocol,
        ("RESPONSE_CODE", None) => Operator::ResponseCode,
        ("RESPONSE_FLAGS", None) => Operator::ResponseFlags,
        ("BYTES_RECEIVED", None) => Operator::BytesReceived,
        ("BYTES_SENT", None) => Operator::BytesSent,
        ("DURATION", None) => Operator::Duration,
        ("UPSTREAM_HOST", None) => Operator::UpstreamHost,
        ("UPSTREAM_CLUSTER" | "UPSTREAM_CLUSTER_RAW", None) => Operator::UpstreamCluster,
        ("DOWNSTREAM_REMOTE_ADDRESS", None) => Operator::DownstreamRemoteAddress,
        ("DOWNSTREAM_PEER_URI_SAN", None) => Operator::DownstreamPeerUriSan,
        ("UPSTREAM_PEER_URI_SAN", None) => Operator::UpstreamPeerUriSan,
        ("ROUTE_NAME", None) => Operator::RouteName,
        _ => Operator::Unsupported,
    })
}

/// Splits a format string into literals and operators.
pub fn parse_parts(format: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = format;
    while let Some(start) = rest.find('%') {
        literal.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after
            .find('%')
            .and_then(|end| Some((end, operator(&after[..end])?)))
        {
            Some((end, op)) => {
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(Part::Op(op));
                rest = &after[end + 1..];
            }
            None => {
                literal.push('%');
                rest = after;
            }
        }
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    parts
}

/// A rendered operator value.
enum Rendered {
    Missing,
    Number(u64),
    Text(String),
}

fn value(e: &AccessLogEntry, op: Operator) -> Rendered {
    let text = |s: &Option<String>| s.clone().map_or(Rendered::Missing, Rendered::Text);
    // A TCP connection has no request: its method, path and protocol are empty, rendered as Envoy
    // renders an absent header (`-` in text, null in JSON).
    let request = |s: &str| {
        if s.is_empty() {
            Rendered::Missing
        } else {
            Rendered::Text(s.to_string())
        }
    };
    match op {
        Operator::StartTime => Rendered::Text(e.start_time.clone()),
        Operator::Method => request(&e.method),
        Operator::Path => request(&e.path),
        Operator::Protocol => request(e.protocol),
        Operator::ResponseCode => Rendered::Number(u64::from(e.response_code)),
        Operator::ResponseFlags => Rendered::Text(e.response_flags.to_string()),
        Operator::BytesReceived => Rendered::Number(e.bytes_received),
        Operator::BytesSent => Rendered::Number(e.bytes_sent),
        Operator::Duration => Rendered::Number(e.duration),
        Operator::UpstreamHost => text(&e.upstream_host),
        Operator::UpstreamCluster => text(&e.upstream_cluster),
        Operator::RequestId => text(&e.x_request_id),
        Operator::Authority => text(&e.authority),
        Operator::UserAgent => text(&e.user_agent),
        Operator::DownstreamRemoteAddress => text(&e.downstream_remote_address),
        Operator::DownstreamPeerUriSan => text(&e.downstream_peer_principal),
        Operator::UpstreamPeerUriSan => text(&e.upstream_peer_principal),
        Operator::RouteName => text(&e.route_name),
        Operator::Unsupported => Rendered::Missing,
    }
}

fn render_text(parts: &[Part], e: &AccessLogEntry, out: &mut String) {
    for p in parts {
        match p {
            Part::Literal(s) => out.push_str(s),
            Part::Op(op) => match value(e, *op) {
                Rendered::Missing => out.push('-'),
                Rendered::Number(n) => out.push_str(&n.to_string()),
                Rendered::Text(s) => out.push_str(&s),
            },
        }
    }
}

impl LogFormat {
    /// Istio's default JSON format.
    pub fn default_json() -> LogFormat {
        LogFormat::json(
            DEFAULT_JSON_FORMAT
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    /// A JSON format from `key → format string` pairs.
    pub fn json(fields: impl IntoIterator<Item = (String, String)>) -> LogFormat {
        LogFormat::Json(
            fields
                .into_iter()
                .map(|(k, v)| (k, parse_parts(&v)))
                .collect(),
        )
    }

    /// A TEXT format; empty is Envoy's default format.
    pub fn text(format: &str) -> LogFormat {
        let format = if format.is_empty() {
            ENVOY_DEFAULT_TEXT_FORMAT
        } else {
            format
        };
        LogFormat::Text(parse_parts(format))
    }

    /// One line for `e` (JSON lines end with a newline; text as the format says).
    pub fn render(&self, e: &AccessLogEntry) -> Vec<u8> {
        match self {
            LogFormat::Text(parts) => {
                let mut out = String::new();
                render_text(parts, e, &mut out);
                out.into_bytes()
            }
            LogFormat::Json(fields) => {
                let mut obj = Map::new();
                for (key, parts) in fields {
                    let v = match parts.as_slice() {
                        [Part::Op(op)] => match value(e, *op) {
                            Rendered::Missing => Value::Null,
                            Rendered::Number(n) => Value::from(n),
                            Rendered::Text(s) => Value::String(s),
                        },
                        _ => {
                            let mut s = String::new();
                            render_text(parts, e, &mut s);
                            Value::String(s)
                        }
                    };
                    obj.insert(key.clone(), v);
                }
                let mut line = serde_json::to_vec(&Value::Object(obj)).unwrap_or_default();
                line.push(b'\n');
                line
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Reporter;

    fn entry() -> AccessLogEntry {
        let req = http::Request::get("http://reviews:9080/reviews/1?x=1")
            .header("x-request-id", "abc")
            .header("user-agent", "curl/8")
            .body(())
            .unwrap();
        let mut e = AccessLogEntry::start(
            &req,
            Some("127.0.0.1:5555".parse().unwrap()),
            Reporter::Destination,
            3,
        );
        e.response_code = 200;
        e.bytes_sent = 10;
        e.duration = 7;
        e.downstream_peer_principal = Some("spiffe://cluster.local/ns/default/sa/a".into());
        e
    }

    #[test]
    fn parses_operators_and_keeps_stray_percent() {
        assert_eq!(
            parse_parts("[%START_TIME%] 100% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %FOO(x):10%"),
            vec![
                Part::Literal("[".into()),
                Part::Op(Operator::StartTime),
                Part::Literal("] 100% ".into()),
                Part::Op(Operator::Path),
                Part::Literal(" ".into()),
                Part::Op(Operator::Unsupported),
            ]
        );
        assert_eq!(
            parse_parts("%REQ(:METHOD)%"),
            vec![Part::Op(Operator::Method)]
        );
        assert_eq!(parse_parts("%a b%"), vec![Part::Literal("%a b%".into())]);
    }

    #[test]
    fn json_default_has_istios_keys_typed_values_and_nulls() {
        let line = LogFormat::default_json().render(&entry());
        assert_eq!(line.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/reviews/1?x=1");
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["response_code"], 200);
        assert_eq!(v["response_flags"], "-");
        assert_eq!(v["bytes_received"], 3);
        assert_eq!(v["bytes_sent"], 10);
        assert_eq!(v["duration"], 7);
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["authority"], "reviews:9080");
        assert_eq!(v["user_agent"], "curl/8");
        assert_eq!(v["downstream_remote_address"], "127.0.0.1:5555");
        assert_eq!(
            v["downstream_peer_uri_san"],
            "spiffe://cluster.local/ns/default/sa/a"
        );
        assert!(v["upstream_host"].is_null());
        assert!(v["istio_policy_status"].is_null());
        assert_eq!(
            v.as_object().unwrap().len(),
            DEFAULT_JSON_FORMAT.len(),
            "every key present"
        );
    }

    #[test]
    fn text_renders_from_the_same_entry() {
        let line = LogFormat::text(
            "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% \"%UPSTREAM_HOST%\" %REQ(X-REQUEST-ID)%\n",
        )
        .render(&entry());
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "GET /reviews/1?x=1 200 \"-\" abc\n"
        );
        let default = String::from_utf8(LogFormat::text("").render(&entry())).unwrap();
        assert!(
            default.contains(
                "\"GET /reviews/1?x=1 HTTP/1.1\" 200 - 3 10 7 - \"-\" \"curl/8\" \"abc\""
            ),
            "{default}"
        );
        let mixed = LogFormat::json([("m".to_string(), "%REQ(:METHOD)% x".to_string())]);
        let v: serde_json::Value = serde_json::from_slice(&mixed.render(&entry())).unwrap();
        assert_eq!(v["m"], "GET x");
    }
}
