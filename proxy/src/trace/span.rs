//! One span per hop: CLIENT on the outbound sidecar and the gateway, SERVER on the inbound
//! sidecar, named and tagged as Envoy and Istio do.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::USER_AGENT;
use http::{HeaderMap, Method, Response};
use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, Span};

use crate::http::{Body, X_REQUEST_ID, metered};

use super::propagation::{self, Extracted};
use super::sampling::Sampling;

/// Which side of a hop a span records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopKind {
    /// The caller's proxy (outbound sidecar, gateway): Envoy's egress operation.
    Client,
    /// The callee's proxy (inbound sidecar): Envoy's ingress operation.
    Server,
}

/// What a span says about the request when it starts.
#[derive(Debug, Clone)]
pub struct HopRequest<'a> {
    pub kind: HopKind,
    /// The span name (Istio's route decorator: `<fqdn>:<port>/*`).
    pub name: String,
    pub method: &'a Method,
    /// `authority` and `path` make `http.url`.
    pub authority: &'a str,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The downstream peer.
    pub peer: Option<SocketAddr>,
    /// `upstream_cluster` (`outbound|9080||reviews.default.svc.cluster.local`, `inbound|9080||`).
    pub upstream_cluster: Cow<'a, str>,
    /// When the request arrived.
    pub started: Instant,
}

/// Creates the spans of one proxy. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HopTracer {
    tracer: SdkTracer,
    sampling: Sampling,
    /// Attributes every span carries (`node_id`, `component`, `istio.*`).
    common: Arc<[KeyValue]>,
}

/// The context to send on with the request: this hop's span and its parent.
#[derive(Debug, Clone)]
pub struct Propagation {
    context: SpanContext,
    parent: Option<SpanId>,
}

impl Propagation {
    /// Writes the context in W3C and B3 formats into `headers`.
    pub fn inject(&self, headers: &mut HeaderMap) {
        propagation::inject(&self.context, self.parent, headers);
    }

    /// This hop's span.
    pub fn context(&self) -> &SpanContext {
        &self.context
    }
}

/// A started span; it ends with the response body.
#[derive(Debug)]
pub struct HopSpan {
    span: Span,
    propagation: Propagation,
}

impl HopTracer {
    pub(super) fn new(tracer: SdkTracer, sampling: Sampling, common: Vec<KeyValue>) -> Self {
        HopTracer {
            tracer,
            sampling,
            common: common.into(),
        }
    }

    /// Starts the span of `req`, continuing the trace its headers carry (or starting one, which
    /// is sampled at this proxy's rate).
    pub fn start(&self, mut req: HopRequest<'_>) -> HopSpan {
        let parent = propagation::extract(req.headers);
        let parent_cx = match &parent {
            None => Context::new(),
            Some(e @ Extracted { sampled: None, .. }) => {
                let sampled = self.sampling.sample_root(e.context.trace_id());
                Context::new().with_remote_span_context(e.decided(sampled))
            }
            Some(e) => Context::new().with_remote_span_context(e.context.clone()),
        };
        // Arrival time, though the span starts once routing chose a target.
        let start = SystemTime::now()
            .checked_sub(req.started.elapsed())
            .unwrap_or_else(SystemTime::now);
        let builder = SpanBuilder::from_name(std::mem::take(&mut req.name))
            .with_kind(match req.kind {
                HopKind::Client => SpanKind::Client,
                HopKind::Server => SpanKind::Server,
            })
            .with_start_time(start);
        let mut span = self.tracer.build_with_context(builder, &parent_cx);
        // Tags only for recorded spans: an unsampled request costs no more than its ids.
        if span.is_recording() {
            span.set_attributes(self.tags(&req));
        }
        let propagation = Propagation {
            context: span.span_context().clone(),
            parent: parent.map(|p| p.context.span_id()),
        };
        HopSpan { span, propagation }
    }

    /// The tags Envoy and Istio put on a request's span.
    fn tags(&self, req: &HopRequest<'_>) -> Vec<KeyValue> {
        let mut attrs: Vec<KeyValue> = Vec::with_capacity(self.common.len() + 9);
        attrs.extend(self.common.iter().cloned());
        let header = |n: &http::HeaderName| req.headers.get(n).and_then(|v| v.to_str().ok());
        attrs.extend([
            KeyValue::new("http.method", req.method.as_str().to_string()),
            KeyValue::new("http.url", format!("http://{}{}", req.authority, req.path)),
            KeyValue::new("http.protocol", "HTTP/1.1"),
            KeyValue::new("upstream_cluster", req.upstream_cluster.to_string()),
            KeyValue::new("upstream_cluster.name", req.upstream_cluster.to_string()),
            KeyValue::new("downstream_cluster", "-"),
        ]);
        if let Some(id) = header(&X_REQUEST_ID) {
            attrs.push(KeyValue::new("guid:x-request-id", id.to_string()));
        }
        if let Some(ua) = header(&USER_AGENT) {
            attrs.push(KeyValue::new("user_agent", ua.to_string()));
        }
        if let Some(peer) = req.peer {
            attrs.push(KeyValue::new("peer.address", peer.ip().to_string()));
        }
        attrs
    }
}

impl HopSpan {
    /// What to send on with the request.
    pub fn propagation(&self) -> &Propagation {
        &self.propagation
    }

    /// Writes this span's context into the forwarded request's `headers`.
    pub fn inject(&self, headers: &mut HeaderMap) {
        self.propagation.inject(headers);
    }

    /// Whether the span is recorded (its trace is sampled).
    pub fn is_recording(&self) -> bool {
        self.span.is_recording()
    }

    /// Tags the outcome and ends the span when `resp`'s body ends (`response_size` = the body
    /// bytes sent). Unsampled spans end at once and leave the body alone.
    pub fn finish(
        mut self,
        resp: Response<Body>,
        response_flags: &'static str,
        request_size: u64,
    ) -> Response<Body> {
        if !self.span.is_recording() {
            return resp;
        }
        let code = resp.status().as_u16();
        self.span.set_attributes([
            KeyValue::new("http.status_code", code.to_string()),
            KeyValue::new("response_flags", response_flags),
            KeyValue::new("request_size", request_size.to_string()),
        ]);
        if code >= 500 {
            self.span.set_attribute(KeyValue::new("error", "true"));
            self.span.set_status(Status::error(format!("HTTP {code}")));
        }
        let mut span = self.span;
        metered(resp, move |bytes| {
            span.set_attribute(KeyValue::new("response_size", bytes.to_string()));
            span.end();
        })
    }
}

/// Istio's span name for a route to `cluster` (`outbound|9080|v2|reviews.default.svc...`):
/// `reviews.default.svc.cluster.local:9080/*`.
pub fn client_span_name(cluster: &str) -> String {
    let mut parts = cluster.split('|');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(port), Some(_), Some(fqdn)) => format!("{fqdn}:{port}/*"),
        _ => format!("{cluster}/*"),
    }
}

/// Istio's inbound span name: `<service fqdn>:<port>/*`.
pub fn server_span_name(fqdn: &str, port: u16) -> String {
    format!("{fqdn}:{port}/*")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Body;
    use http_body_util::{BodyExt, Full};
    use opentelemetry::trace::{TraceFlags, TraceId, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    fn tracer(percent: f64) -> HopTracer {
        let sampling = Sampling::percent(percent).unwrap();
        let provider = SdkTracerProvider::builder()
            .with_sampler(sampling.sampler())
            .build();
        HopTracer::new(
            provider.tracer("test"),
            sampling,
            vec![KeyValue::new("component", "proxy")],
        )
    }

    fn request<'a>(headers: &'a HeaderMap, method: &'a Method) -> HopRequest<'a> {
        HopRequest {
            kind: HopKind::Client,
            name: client_span_name("outbound|9080||reviews.default.svc.cluster.local"),
            method,
            authority: "reviews:9080",
            path: "/reviews",
            headers,
            peer: Some("127.0.0.1:5555".parse().unwrap()),
            upstream_cluster: "outbound|9080||reviews.default.svc.cluster.local".into(),
            started: Instant::now(),
        }
    }

    #[test]
    fn names_as_istio() {
        assert_eq!(
            client_span_name("outbound|9080|v2|reviews.default.svc.cluster.local"),
            "reviews.default.svc.cluster.local:9080/*"
        );
        assert_eq!(client_span_name("odd"), "odd/*");
        assert_eq!(
            server_span_name("ratings.default.svc.cluster.local", 9080),
            "ratings.default.svc.cluster.local:9080/*"
        );
    }

    #[test]
    fn a_root_span_starts_a_trace_and_is_injected() {
        let t = tracer(100.0);
        let (h, m) = (HeaderMap::new(), Method::GET);
        let span = t.start(request(&h, &m));
        assert!(span.is_recording());
        let c = span.propagation().context().clone();
        assert!(c.is_valid() && c.is_sampled());
        let mut out = HeaderMap::new();
        span.inject(&mut out);
        let back = propagation::extract(&out).unwrap();
        assert_eq!(back.context.trace_id(), c.trace_id());
        assert_eq!(back.context.span_id(), c.span_id());
        assert!(!out.contains_key("x-b3-parentspanid"));
    }

    #[test]
    fn a_child_continues_the_callers_trace_and_decision() {
        // At 0% a sampled caller is still followed; at 100% an unsampled one is too.
        for (percent, flags, sampled) in [
            (0.0, TraceFlags::SAMPLED, true),
            (100.0, TraceFlags::default(), false),
        ] {
            let t = tracer(percent);
            let trace = TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128);
            let mut h = HeaderMap::new();
            h.insert(
                "traceparent",
                format!("00-{trace}-00f067aa0ba902b7-{:02x}", flags.to_u8())
                    .parse()
                    .unwrap(),
            );
            let m = Method::GET;
            let span = t.start(request(&h, &m));
            let c = span.propagation().context();
            assert_eq!(c.trace_id(), trace);
            assert_ne!(c.span_id().to_string(), "00f067aa0ba902b7");
            assert_eq!(c.is_sampled(), sampled);
            assert_eq!(span.is_recording(), sampled);
            let mut out = HeaderMap::new();
            span.inject(&mut out);
            assert_eq!(out["x-b3-parentspanid"], "00f067aa0ba902b7");
            assert_eq!(out["x-b3-sampled"], if sampled { "1" } else { "0" });
        }
    }

    #[test]
    fn a_deferred_b3_decision_is_made_here() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-b3-traceid",
            "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap(),
        );
        h.insert("x-b3-spanid", "00f067aa0ba902b7".parse().unwrap());
        let m = Method::GET;
        assert!(tracer(100.0).start(request(&h, &m)).is_recording());
        assert!(!tracer(0.0).start(request(&h, &m)).is_recording());
    }

    #[tokio::test]
    async fn finish_passes_the_body_through() {
        let t = tracer(100.0);
        let (h, m) = (HeaderMap::new(), Method::GET);
        let span = t.start(request(&h, &m));
        let body: Body = Full::new(bytes::Bytes::from("hello"))
            .map_err(|never| match never {})
            .boxed();
        let resp = span.finish(Response::new(body), "-", 0);
        let got = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(got, "hello");
    }
}
