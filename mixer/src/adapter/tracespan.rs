//! `opentelemetry`: `tracespan` instances exported as OpenTelemetry spans over OTLP/gRPC.
//!
//! Handler params: `address` (alias `collectorAddress`, `endpoint`; `host:port` or
//! `http://host:port`, required), `serviceName` (the resource's `service.name`; default: the
//! span's `sourceName` for client spans, else `destinationName`, else `istio-mixer`).
//!
//! The `tracespan` fields read: `traceId` (hex, 16 or 32 digits), `spanId`, `parentSpanId`
//! (hex, 16 digits), `spanName`, `startTime`/`endTime` (timestamps; default: the end is when the
//! record arrived and the start that minus `response.duration`), `spanTags` (attributes),
//! `httpStatusCode` (`http.status_code`; ≥ 500 sets the error status), `clientSpan` (CLIENT
//! kind, else SERVER), `rewriteClientSpanId` (a client span gets a new id derived from its own
//! and is parented to it, as Istio does), `sourceName`, `destinationName`. A record without a
//! trace or span id exports nothing.
//!
//! Spans are handed to one exporter task per collector address (bounded queue; full → dropped),
//! which sends batches (up to [`BATCH`] spans, at least every [`FLUSH_INTERVAL`]).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_proto::attributes::Value;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use parking_lot::Mutex;
use serde_json::Value as Json;
use tokio::sync::mpsc;

use super::stdio::scalar_text;
use crate::config::Instance;
use crate::expr::{Attributes, evaluate_value};

/// Spans queued per collector before new ones are dropped.
pub const QUEUE: usize = 4096;
/// Spans per export request at most.
pub const BATCH: usize = 512;
/// How long a span may wait for its batch.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);

/// An `opentelemetry` handler's params.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// The collector endpoint, with scheme.
    pub endpoint: String,
    pub service_name: Option<String>,
}

impl Params {
    pub fn parse(p: &Json) -> Result<Params, String> {
        let address = [
            "address",
            "collectorAddress",
            "collector_address",
            "endpoint",
        ]
        .iter()
        .find_map(|n| p.get(*n))
        .and_then(Json::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| "params.address (the OTLP/gRPC collector) is required".to_string())?;
        let endpoint = if address.contains("://") {
            address.to_string()
        } else {
            format!("http://{address}")
        };
        if let Err(e) = tonic::transport::Endpoint::from_shared(endpoint.clone()) {
            return Err(format!("params.address {address:?}: {e}"));
        }
        Ok(Params {
            endpoint,
            service_name: ["serviceName", "service_name"]
                .iter()
                .find_map(|n| p.get(*n))
                .and_then(Json::as_str)
                .map(str::to_string),
        })
    }
}

/// A span ready to export, with the service it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedSpan {
    pub service_name: String,
    pub span: Span,
}

fn hex_id<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.trim();
    if s.is_empty() || s.len() > N * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // Shorter ids (64-bit B3 trace ids) are zero-padded on the left.
    let padded = format!("{s:0>width$}", width = N * 2);
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&padded[i * 2..i * 2 + 2], 16).ok()?;
    }
    (out != [0u8; N]).then_some(out)
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn any_value(v: &Value) -> AnyValue {
    let value = match v {
        Value::String(s) => any_value::Value::StringValue(s.clone()),
        Value::Int64(i) => any_value::Value::IntValue(*i),
        Value::Double(d) => any_value::Value::DoubleValue(*d),
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        other => any_value::Value::StringValue(scalar_text(other)),
    };
    AnyValue { value: Some(value) }
}

fn kv(key: &str, v: &Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(any_value(v)),
        ..Default::default()
    }
}

/// Builds the span of `inst` (template `tracespan`) for `bag`, or `None` when it has no trace
/// or span id.
pub fn build_span<B: Attributes + ?Sized>(
    params: &Params,
    inst: &Instance,
    bag: &B,
) -> Option<ExportedSpan> {
    let field = |name: &str| {
        inst.field(name)
            .and_then(|e| evaluate_value(e, bag).result.ok())
    };
    let text = |name: &str| {
        field(name)
            .map(|v| scalar_text(&v))
            .filter(|s| !s.is_empty())
    };
    let trace_id = hex_id::<16>(&text("traceId")?)?;
    let own_id = hex_id::<8>(&text("spanId")?)?;
    let mut parent = text("parentSpanId").and_then(|s| hex_id::<8>(&s));
    let client = matches!(field("clientSpan"), Some(Value::Bool(true)));
    let rewrite = matches!(field("rewriteClientSpanId"), Some(Value::Bool(true)));
    let span_id = if client && rewrite {
        parent = Some(own_id);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (trace_id, own_id, "client").hash(&mut h);
        h.finish().to_be_bytes()
    } else {
        own_id
    };
    let end = match field("endTime") {
        Some(Value::Timestamp(t)) => t,
        _ => SystemTime::now(),
    };
    let start = match field("startTime") {
        Some(Value::Timestamp(t)) => t,
        _ => {
            let took = match bag.attribute("response.duration") {
                Some(Value::Duration(d)) => *d,
                _ => Duration::ZERO,
            };
            end.checked_sub(took).unwrap_or(end)
        }
    };
    let mut attributes: BTreeMap<String, KeyValue> = BTreeMap::new();
    for (name, e) in inst.map("spanTags") {
        match evaluate_value(e, bag).result {
            Ok(v) => {
                attributes.insert(name.clone(), kv(name, &v));
            }
            Err(err) => {
                tracing::debug!(instance = %inst.key, tag = %name, error = %err, "span tag not evaluated");
            }
        }
    }
    let status_code = match field("httpStatusCode") {
        Some(Value::Int64(c)) => Some(c),
        _ => None,
    };
    if let Some(c) = status_code {
        attributes
            .entry("http.status_code".into())
            .or_insert_with(|| kv("http.status_code", &Value::Int64(c)));
    }
    let status = status_code.filter(|c| *c >= 500).map(|c| Status {
        message: format!("HTTP status {c}"),
        code: opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as i32,
    });
    let service_name = params
        .service_name
        .clone()
        .or_else(|| {
            if client {
                text("sourceName")
            } else {
                text("destinationName")
            }
        })
        .unwrap_or_else(|| "istio-mixer".into());
    let span = Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: text("spanName").unwrap_or_else(|| "/".into()),
        kind: if client {
            span::SpanKind::Client
        } else {
            span::SpanKind::Server
        } as i32,
        start_time_unix_nano: nanos(start),
        end_time_unix_nano: nanos(end),
        attributes: attributes.into_values().collect(),
        status,
        ..Default::default()
    };
    Some(ExportedSpan { service_name, span })
}

/// The exporter tasks, one per collector endpoint, shared by every policy. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct SpanExporters {
    queues: Arc<Mutex<HashMap<String, mpsc::Sender<ExportedSpan>>>>,
}

impl SpanExporters {
    /// Queues `span` for the collector at `endpoint`, starting its exporter on first use (must
    /// be called inside the Tokio runtime; outside it the span is dropped).
    pub fn send(&self, endpoint: &str, span: ExportedSpan) {
        let mut queues = self.queues.lock();
        let tx = match queues.get(endpoint) {
            Some(tx) if !tx.is_closed() => tx.clone(),
            _ => {
                let Ok(rt) = tokio::runtime::Handle::try_current() else {
                    tracing::debug!("no runtime: span dropped");
                    return;
                };
                let channel = match tonic::transport::Endpoint::from_shared(endpoint.to_string()) {
                    Ok(e) => e.connect_timeout(Duration::from_secs(5)).connect_lazy(),
                    Err(e) => {
                        tracing::warn!(endpoint, error = %e, "bad collector address");
                        return;
                    }
                };
                let (tx, rx) = mpsc::channel(QUEUE);
                rt.spawn(export_loop(endpoint.to_string(), channel, rx));
                queues.insert(endpoint.to_string(), tx.clone());
                tx
            }
        };
        if tx.try_send(span).is_err() {
            tracing::debug!(endpoint, "span queue full: span dropped");
        }
    }
}

/// Groups spans by service into one export request.
pub fn export_request(spans: Vec<ExportedSpan>) -> ExportTraceServiceRequest {
    let mut by_service: BTreeMap<String, Vec<Span>> = BTreeMap::new();
    for s in spans {
        by_service.entry(s.service_name).or_default().push(s.span);
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", &Value::String(service))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "mixer".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

async fn export_loop(
    endpoint: String,
    channel: tonic::transport::Channel,
    mut rx: mpsc::Receiver<ExportedSpan>,
) {
    let mut client = TraceServiceClient::new(channel);
    let mut failing = false;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + FLUSH_INTERVAL;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => batch.push(s),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len();
        match client.export(export_request(batch)).await {
            Ok(_) => {
                failing = false;
                tracing::debug!(endpoint = %endpoint, spans = n, "spans exported");
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(endpoint = %endpoint, spans = n, error = %e, "span export failed");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::parse;
    use mesh_proto::attributes::Bag;
    use serde_json::json;

    fn inst() -> Instance {
        let e = |s: &str| parse(s).unwrap();
        Instance {
            key: "istio-system/default".into(),
            template: "tracespan".into(),
            value: None,
            dimensions: vec![],
            legacy: false,
            fields: vec![
                (
                    "traceId".into(),
                    e(r#"request.headers["x-b3-traceid"] | """#),
                ),
                ("spanId".into(), e(r#"request.headers["x-b3-spanid"] | """#)),
                (
                    "parentSpanId".into(),
                    e(r#"request.headers["x-b3-parentspanid"] | """#),
                ),
                ("spanName".into(), e(r#"request.path | "/""#)),
                (
                    "clientSpan".into(),
                    e(r#"(context.reporter.kind | "inbound") == "outbound""#),
                ),
                ("rewriteClientSpanId".into(), e("false")),
                ("httpStatusCode".into(), e("response.code | 200")),
                (
                    "destinationName".into(),
                    e(r#"destination.workload.name | "unknown""#),
                ),
            ],
            maps: vec![(
                "spanTags".into(),
                vec![("http.method".into(), e(r#"request.method | """#))],
            )],
        }
    }

    #[test]
    fn span_from_b3_headers() {
        let params = Params::parse(&json!({"address": "127.0.0.1:4317"})).unwrap();
        assert_eq!(params.endpoint, "http://127.0.0.1:4317");
        assert!(Params::parse(&json!({})).is_err());
        let headers: BTreeMap<String, String> = [
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-parentspanid", "0020000000000001"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let bag = Bag::new()
            .with("request.headers", headers)
            .with("request.path", "/reviews/1")
            .with("request.method", "GET")
            .with("response.code", 503i64)
            .with("response.duration", Duration::from_millis(20));
        let s = build_span(&params, &inst(), &bag).unwrap();
        assert_eq!(s.service_name, "unknown");
        assert_eq!(
            hex::encode(&s.span.trace_id),
            "0000000000000000463ac35c9f6413ad"
        );
        assert_eq!(hex::encode(&s.span.span_id), "a2fb4a1d1a96d312");
        assert_eq!(hex::encode(&s.span.parent_span_id), "0020000000000001");
        assert_eq!(s.span.name, "/reviews/1");
        assert_eq!(s.span.kind, span::SpanKind::Server as i32);
        assert_eq!(
            s.span.end_time_unix_nano - s.span.start_time_unix_nano,
            20_000_000
        );
        assert!(s.span.status.is_some());
        let keys: Vec<&str> = s.span.attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["http.method", "http.status_code"]);
        // No trace id: no span.
        assert!(build_span(&params, &inst(), &Bag::new()).is_none());
    }

    mod hex {
        pub fn encode(b: &[u8]) -> String {
            b.iter().map(|x| format!("{x:02x}")).collect()
        }
    }
}
