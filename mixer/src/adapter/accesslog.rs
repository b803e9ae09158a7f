//! The proxy's access-log shape for Istio's standard `accesslog` logentry instance, so that a
//! request logged by Mixer (stdio adapter) and by the proxy (`--access-log`) reads the same.
//!
//! An instance is in this shape when its `variables` include all of [`MARKERS`] (Istio 1.4's
//! default `accesslog` instance does). Its line then has exactly the proxy's keys — Istio's
//! default JSON access-log format, [`KEYS`], in that order — filled from the variables, with the
//! same value formats (numbers for codes, sizes and milliseconds; `null` for what is unknown):
//!
//! | proxy key | from the accesslog variables |
//! |---|---|
//! | `start_time` | `timestamp` (`request.time`), else the record's arrival minus `latency`; `YYYY-MM-DDTHH:MM:SS.mmmZ` |
//! | `method` | `method` |
//! | `path` | `url` |
//! | `protocol` | `protocol`: `http`/`https`/empty → `HTTP/1.1`, `http2`/`h2`/`grpc` → `HTTP/2`, `http/1.0` → `HTTP/1.0` |
//! | `response_code` | `responseCode` |
//! | `response_flags` | `responseFlags`, empty → `-` |
//! | `bytes_received` | `receivedBytes` when > 0, else `requestSize` |
//! | `bytes_sent` | `sentBytes` when > 0, else `responseSize` |
//! | `duration` | `latency`, in whole milliseconds |
//! | `x_forwarded_for` | `xForwardedFor` (not `0.0.0.0`) |
//! | `user_agent` | `userAgent` |
//! | `request_id` | `requestId` |
//! | `authority` | `httpAuthority` |
//! | `requested_server_name` | `requestedServerName` |
//! | `downstream_peer_uri_san` | `sourcePrincipal` when `reporter` is `destination` |
//! | `upstream_peer_uri_san` | `destinationPrincipal` when `reporter` is `source` |
//! | `route_name`, `upstream_service_time`, `upstream_host`, `upstream_cluster`, `upstream_local_address`, `downstream_local_address`, `downstream_remote_address`, `istio_policy_status`, `upstream_transport_failure_reason` | `null`: not in the attributes the proxy reports |
//!
//! Empty strings are `null`, as in the proxy's line.

use std::time::{Duration, SystemTime};

use mesh_proto::attributes::Value;
use serde_json::{Map, Value as Json};

use super::parse_duration;
use super::stdio::{LogEntry, rfc3339_millis, scalar_text};

/// The variables that mark Istio's `accesslog` instance.
pub const MARKERS: [&str; 6] = [
    "method",
    "url",
    "responseCode",
    "requestId",
    "latency",
    "reporter",
];

/// The proxy's access-log keys (Istio's default JSON format plus the peers' URI SANs), in order.
pub const KEYS: [&str; 25] = [
    "start_time",
    "route_name",
    "method",
    "path",
    "protocol",
    "response_code",
    "response_flags",
    "bytes_received",
    "bytes_sent",
    "duration",
    "upstream_service_time",
    "x_forwarded_for",
    "user_agent",
    "request_id",
    "authority",
    "upstream_host",
    "upstream_cluster",
    "upstream_local_address",
    "downstream_local_address",
    "downstream_remote_address",
    "requested_server_name",
    "istio_policy_status",
    "upstream_transport_failure_reason",
    "downstream_peer_uri_san",
    "upstream_peer_uri_san",
];

fn text(entry: &LogEntry, name: &str) -> Option<String> {
    entry
        .variables
        .get(name)
        .map(scalar_text)
        .filter(|s| !s.is_empty())
}

fn int(entry: &LogEntry, name: &str) -> i64 {
    match entry.variables.get(name) {
        Some(Value::Int64(i)) => *i,
        Some(Value::Double(d)) => *d as i64,
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

fn duration(entry: &LogEntry, name: &str) -> Duration {
    match entry.variables.get(name) {
        Some(Value::Duration(d)) => *d,
        Some(Value::String(s)) => parse_duration(s).unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

fn protocol(p: Option<&str>) -> String {
    match p.map(str::to_ascii_lowercase).as_deref() {
        None | Some("http" | "https") => "HTTP/1.1".into(),
        Some("http2" | "h2" | "grpc" | "http/2") => "HTTP/2".into(),
        Some("http/1.0") => "HTTP/1.0".into(),
        Some("http/1.1") => "HTTP/1.1".into(),
        Some(other) => other.to_string(),
    }
}

/// `entry` (an accesslog instance) in the proxy's shape: every key of [`KEYS`], in order.
pub fn to_json(entry: &LogEntry) -> Map<String, Json> {
    let latency = duration(entry, "latency");
    let start: SystemTime = if entry.time_given {
        entry.time
    } else {
        entry.time.checked_sub(latency).unwrap_or(entry.time)
    };
    let positive = |a: i64, b: i64| u64::try_from(if a > 0 { a } else { b }).unwrap_or(0);
    let reporter = text(entry, "reporter").unwrap_or_default();
    let opt = |v: Option<String>| v.map_or(Json::Null, Json::String);
    let mut obj = Map::new();
    for key in KEYS {
        let v = match key {
            "start_time" => Json::String(rfc3339_millis(start)),
            "method" => opt(text(entry, "method")),
            "path" => opt(text(entry, "url")),
            "protocol" => Json::String(protocol(text(entry, "protocol").as_deref())),
            "response_code" => Json::from(u16::try_from(int(entry, "responseCode")).unwrap_or(0)),
            "response_flags" => {
                Json::String(text(entry, "responseFlags").unwrap_or_else(|| "-".into()))
            }
            "bytes_received" => Json::from(positive(
                int(entry, "receivedBytes"),
                int(entry, "requestSize"),
            )),
            "bytes_sent" => Json::from(positive(
                int(entry, "sentBytes"),
                int(entry, "responseSize"),
            )),
            "duration" => Json::from(latency.as_millis() as u64),
            "x_forwarded_for" => opt(text(entry, "xForwardedFor").filter(|x| x != "0.0.0.0")),
            "user_agent" => opt(text(entry, "userAgent")),
            "request_id" => opt(text(entry, "requestId")),
            "authority" => opt(text(entry, "httpAuthority")),
            "requested_server_name" => opt(text(entry, "requestedServerName")),
            "downstream_peer_uri_san" => opt((reporter == "destination")
                .then(|| text(entry, "sourcePrincipal"))
                .flatten()),
            "upstream_peer_uri_san" => opt((reporter == "source")
                .then(|| text(entry, "destinationPrincipal"))
                .flatten()),
            _ => Json::Null,
        };
        obj.insert(key.to_string(), v);
    }
    obj
}

/// The JSON line (without newline).
pub fn line(entry: &LogEntry) -> Vec<u8> {
    // Plain strings and numbers: serializing cannot fail.
    serde_json::to_vec(&Json::Object(to_json(entry))).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn protocols_and_flags() {
        assert_eq!(protocol(None), "HTTP/1.1");
        assert_eq!(protocol(Some("grpc")), "HTTP/2");
        assert_eq!(protocol(Some("tcp")), "tcp");
        let entry = LogEntry {
            instance: "accesslog.instance.istio-system".into(),
            severity: "Info".into(),
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(10),
            time_given: false,
            accesslog: true,
            variables: BTreeMap::from([
                (
                    "latency".to_string(),
                    Value::Duration(Duration::from_millis(1500)),
                ),
                ("responseFlags".to_string(), Value::String(String::new())),
                ("reporter".to_string(), Value::String("source".into())),
                (
                    "destinationPrincipal".to_string(),
                    Value::String("spiffe://a".into()),
                ),
                (
                    "sourcePrincipal".to_string(),
                    Value::String("spiffe://b".into()),
                ),
                ("requestSize".to_string(), Value::Int64(7)),
                ("receivedBytes".to_string(), Value::Int64(0)),
            ]),
        };
        let l = to_json(&entry);
        let keys: Vec<&str> = l.keys().map(String::as_str).collect();
        let mut want = KEYS.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(l["start_time"], "1970-01-01T00:00:08.500Z");
        assert_eq!(l["duration"], 1500);
        assert_eq!(l["response_flags"], "-");
        assert_eq!(l["bytes_received"], 7);
        assert_eq!(l["upstream_peer_uri_san"], "spiffe://a");
        assert!(l["downstream_peer_uri_san"].is_null());
        assert!(l["route_name"].is_null());
    }
}
