//! Export: OpenTelemetry OTLP over gRPC to a collector, in batches from a background thread, so
//! the request path only hands finished spans over.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};

use super::sampling::Sampling;
use super::span::HopTracer;

/// How often finished spans are sent (Envoy flushes its tracers about every second).
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Spans held for export before new ones are dropped.
const QUEUE: usize = 8192;
/// How long shutdown waits for the last batch.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where spans go and how many are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    /// The OTLP/gRPC collector (`127.0.0.1:4317` or `http://127.0.0.1:4317`).
    pub collector: String,
    pub sampling: Sampling,
}

/// Who this proxy is, for the spans' resource and tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceIdentity {
    /// `service.name`: the proxy's workload name.
    pub workload: String,
    pub namespace: String,
    /// `istio.canonical_service` (`service.istio.io/canonical-name`, else `app`, else the
    /// workload).
    pub canonical_service: String,
    /// `istio.canonical_revision` (`service.istio.io/canonical-revision`, else `version`, else
    /// `latest`).
    pub canonical_revision: String,
    /// The Envoy node id (`sidecar~127.0.0.1~reviews-v2.default~default.svc.cluster.local`).
    pub node_id: String,
}

/// Tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the trace exporter to {collector}: {reason}")]
pub struct TraceError {
    collector: String,
    reason: String,
}

/// The exporter and the tracer of a running proxy.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: HopTracer,
}

impl Tracing {
    /// Builds the OTLP exporter (it connects lazily: a collector that is not up yet only costs
    /// dropped batches). Must run inside the Tokio runtime, which drives the gRPC channel.
    pub fn start(config: &TraceConfig, who: &TraceIdentity) -> Result<Tracing, TraceError> {
        let endpoint = endpoint(&config.collector);
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| TraceError {
                collector: endpoint.clone(),
                reason: e.to_string(),
            })?;
        let batch = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(FLUSH_INTERVAL)
                    .with_max_queue_size(QUEUE)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batch)
            .with_sampler(config.sampling.sampler())
            .with_resource(resource(who))
            .build();
        let tracer = HopTracer::new(
            provider.tracer("mesh-proxy"),
            config.sampling,
            span_tags(who),
        );
        tracing::info!(
            collector = %endpoint,
            sampling_percent = config.sampling.as_percent(),
            "exporting traces"
        );
        Ok(Tracing { provider, tracer })
    }

    /// The tracer for the request path.
    pub fn tracer(&self) -> HopTracer {
        self.tracer.clone()
    }

    /// Sends what is left and stops the exporter (off the async threads: it blocks).
    pub async fn shutdown(self) {
        let provider = self.provider;
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT))
                .await;
        match done {
            Ok(Ok(())) => tracing::debug!("trace exporter flushed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "trace exporter shutdown"),
            Err(e) => tracing::warn!(error = %e, "trace exporter shutdown task"),
        }
    }
}

/// `http://` is added to an address given without a scheme.
fn endpoint(collector: &str) -> String {
    if collector.contains("://") {
        collector.to_string()
    } else {
        format!("http://{collector}")
    }
}

fn resource(who: &TraceIdentity) -> Resource {
    Resource::builder_empty()
        .with_service_name(who.workload.clone())
        .with_attributes([
            KeyValue::new("istio.canonical_service", who.canonical_service.clone()),
            KeyValue::new("istio.canonical_revision", who.canonical_revision.clone()),
            KeyValue::new("k8s.namespace.name", who.namespace.clone()),
        ])
        .build()
}

/// Tags Istio puts on every span.
fn span_tags(who: &TraceIdentity) -> Vec<KeyValue> {
    vec![
        KeyValue::new("component", "proxy"),
        KeyValue::new("node_id", who.node_id.clone()),
        KeyValue::new("istio.canonical_service", who.canonical_service.clone()),
        KeyValue::new("istio.canonical_revision", who.canonical_revision.clone()),
        KeyValue::new("istio.namespace", who.namespace.clone()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_without_scheme_is_http() {
        assert_eq!(endpoint("127.0.0.1:4317"), "http://127.0.0.1:4317");
        assert_eq!(endpoint("http://c:4317"), "http://c:4317");
    }

    #[tokio::test]
    async fn starts_without_a_collector_and_shuts_down() {
        let who = TraceIdentity {
            workload: "reviews-v2".into(),
            namespace: "default".into(),
            canonical_service: "reviews".into(),
            canonical_revision: "v2".into(),
            node_id: "sidecar~127.0.0.1~reviews-v2.default~default.svc.cluster.local".into(),
        };
        let cfg = TraceConfig {
            // Nothing listens on port 1.
            collector: "127.0.0.1:1".into(),
            sampling: Sampling::percent(100.0).unwrap(),
        };
        let t = Tracing::start(&cfg, &who).unwrap();
        let r = resource(&who);
        assert_eq!(
            r.get(&opentelemetry::Key::new("service.name"))
                .map(|v| v.to_string()),
            Some("reviews-v2".to_string())
        );
        let _ = t.tracer();
        tokio::time::timeout(Duration::from_secs(10), t.shutdown())
            .await
            .unwrap();
    }

    mod receiver {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
            TraceService, TraceServiceServer,
        };
        use opentelemetry_proto::tonic::collector::trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
        };
        use std::sync::Arc;

        /// An OTLP receiver keeping every request.
        #[derive(Debug, Clone, Default)]
        pub struct Receiver(pub Arc<parking_lot::Mutex<Vec<ExportTraceServiceRequest>>>);

        #[tonic::async_trait]
        impl TraceService for Receiver {
            async fn export(
                &self,
                request: tonic::Request<ExportTraceServiceRequest>,
            ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
                self.0.lock().push(request.into_inner());
                Ok(tonic::Response::new(ExportTraceServiceResponse {
                    partial_success: None,
                }))
            }
        }

        /// Serves on a free loopback port; returns its address.
        pub async fn start(r: Receiver) -> String {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(r))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
            );
            addr.to_string()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_flushes_the_last_spans_with_the_resource() {
        use crate::trace::{HopKind, HopRequest};
        use http::{HeaderMap, Method, Response};
        use http_body_util::{BodyExt, Full};

        let r = receiver::Receiver::default();
        let collector = receiver::start(r.clone()).await;
        let who = TraceIdentity {
            workload: "istio-ingressgateway".into(),
            namespace: "istio-system".into(),
            canonical_service: "istio-ingressgateway".into(),
            canonical_revision: "latest".into(),
            node_id:
                "router~127.0.0.1~istio-ingressgateway.istio-system~istio-system.svc.cluster.local"
                    .into(),
        };
        let cfg = TraceConfig {
            collector,
            sampling: Sampling::percent(100.0).unwrap(),
        };
        let t = Tracing::start(&cfg, &who).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", "req-1".parse().unwrap());
        let span = t.tracer().start(HopRequest {
            kind: HopKind::Client,
            name: "productpage.default.svc.cluster.local:9080/*".into(),
            method: &Method::GET,
            authority: "productpage:9080",
            path: "/productpage",
            headers: &headers,
            peer: None,
            upstream_cluster: "outbound|9080||productpage.default.svc.cluster.local".into(),
            started: std::time::Instant::now(),
        });
        let body = Full::new(bytes::Bytes::from("ok"))
            .map_err(|never| match never {})
            .boxed();
        let resp = span.finish(Response::new(body), "-", 0);
        // The body ends, the span ends; shutdown (before the 1 s flush) must send it.
        resp.into_body().collect().await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), t.shutdown())
            .await
            .unwrap();
        let got = r.0.lock().clone();
        let spans: Vec<_> = got
            .iter()
            .flat_map(|req| &req.resource_spans)
            .flat_map(|rs| rs.scope_spans.iter().flat_map(|ss| &ss.spans))
            .collect();
        assert_eq!(spans.len(), 1, "{got:?}");
        let s = spans[0];
        assert_eq!(s.name, "productpage.default.svc.cluster.local:9080/*");
        assert!(s.parent_span_id.is_empty());
        let attr = |k: &str| {
            s.attributes
                .iter()
                .find(|kv| kv.key == k)
                .and_then(|kv| kv.value.clone())
        };
        assert!(attr("guid:x-request-id").is_some());
        assert!(attr("response_size").is_some());
        let resource = got[0].resource_spans[0].resource.clone().unwrap();
        let keys: Vec<&str> = resource
            .attributes
            .iter()
            .map(|kv| kv.key.as_str())
            .collect();
        for k in [
            "service.name",
            "istio.canonical_service",
            "k8s.namespace.name",
        ] {
            assert!(keys.contains(&k), "{keys:?}");
        }
    }
}
