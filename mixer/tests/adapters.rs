//! The stdio (logentry), opentelemetry (tracespan) adapters and Istio's legacy handler/instance
//! kinds, driven through `MixerService` with Istio 1.4's sample YAML.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::{SAMPLES, objects_from_yaml, pod};
use mesh_proto::attributes::{Bag, compress, compress_report};
use mesh_proto::config::ConfigObject;
use mesh_proto::dictionary;
use mesh_proto::istio::mixer::v1::CheckRequest;
use mesh_proto::istio::mixer::v1::check_request::QuotaParams;
use mixer::MixerService;
use mixer::config::{ConfigState, Policy, PolicyHandle};
use mixer::metrics::MixerMetrics;
use serde_json::{Value, json};

fn sample(path: &str) -> String {
    std::fs::read_to_string(Path::new(SAMPLES).join(path)).unwrap()
}

/// A service holding the policy compiled from `objs` (which must compile without problems).
fn service(objs: Vec<ConfigObject>, rules: usize) -> MixerService {
    let mut state = ConfigState::default();
    state.apply_objects(objs).unwrap();
    let policy = Policy::compile(&state);
    assert!(policy.problems.is_empty(), "{:?}", policy.problems);
    assert_eq!(policy.rules.len(), rules);
    let handle = PolicyHandle::default();
    handle.set(policy);
    MixerService::new(handle, MixerMetrics::default())
}

/// Sends the stdio handler of `objs` to `path` (as a FILE stream).
fn to_file(objs: &mut [ConfigObject], path: &Path) {
    for o in objs.iter_mut() {
        let params = match o.kind.as_str() {
            "stdio" => o.body.get_mut("spec"),
            "handler" => o.body.get_mut("spec").and_then(|s| s.get_mut("params")),
            _ => None,
        };
        if let Some(p) = params {
            p["logStream"] = json!("FILE");
            p["outputPath"] = json!(path.to_str().unwrap());
        }
    }
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn labels(app: &str, version: &str) -> BTreeMap<String, String> {
    [("app", app), ("version", version)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn logentry_sample_writes_json_lines(file: &str, instance: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixer/log.json");
    let mut objs = objects_from_yaml(&sample(file));
    to_file(&mut objs, &path);
    let svc = service(objs, 1);
    let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    let bag = Bag::new()
        .with("source.labels", labels("productpage", "v1"))
        .with("destination.labels", labels("reviews", "v2"))
        .with("request.time", at)
        .with("response.code", 200i64)
        .with("response.size", 1234i64)
        .with("response.duration", Duration::from_millis(12));
    let anonymous = Bag::new()
        .with("source.workload.name", "curl")
        .with(
            "source.principal",
            "spiffe://cluster.local/ns/default/sa/sleep",
        )
        .with("request.time", at);
    svc.handle_report(&compress_report(&[bag, anonymous]))
        .unwrap();
    let got = lines(&path);
    assert_eq!(
        got,
        vec![
            json!({
                "level": "warn", "time": "2023-11-14T22:13:20.123Z", "instance": instance,
                "source": "productpage", "user": "unknown", "destination": "reviews",
                "responseCode": 200, "responseSize": 1234, "latency": "12ms",
            }),
            json!({
                "level": "warn", "time": "2023-11-14T22:13:20.123Z", "instance": instance,
                "source": "curl", "user": "cluster.local/ns/default/sa/sleep",
                "destination": "unknown", "responseCode": 0, "responseSize": 0, "latency": "0ms",
            }),
        ]
    );
}

#[tokio::test]
async fn log_entry_sample_writes_json_lines_to_a_file() {
    logentry_sample_writes_json_lines("telemetry/log-entry.yaml", "newlog.instance.istio-system")
        .await;
}

#[tokio::test]
async fn legacy_log_entry_sample_writes_json_lines_to_a_file() {
    // `kind: logentry` + `kind: stdio`: Istio names the instance `newlog.logentry.istio-system`.
    logentry_sample_writes_json_lines(
        "telemetry/log-entry-crd.yaml",
        "newlog.logentry.istio-system",
    )
    .await;
}

mod otlp {
    use std::sync::Arc;

    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };

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

    /// Serves a receiver on a loopback port; stops when the sender is dropped.
    pub async fn start() -> (
        Receiver,
        std::net::SocketAddr,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = Receiver::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(receiver.clone()))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async move {
                        let _ = rx.await;
                    },
                ),
        );
        (receiver, addr, tx)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn tracespan_instance_exports_the_span_over_otlp() {
    let (receiver, addr, _stop) = otlp::start().await;
    // Istio 1.4's tracespan instance (as its zipkin/stackdriver configs write it), sent to an
    // `opentelemetry` handler.
    let yaml = format!(
        r#"apiVersion: "config.istio.io/v1alpha2"
kind: instance
metadata:
  name: default
  namespace: istio-system
spec:
  compiledTemplate: tracespan
  params:
    traceId: request.headers["x-b3-traceid"] | ""
    spanId: request.headers["x-b3-spanid"] | ""
    parentSpanId: request.headers["x-b3-parentspanid"] | ""
    spanName: request.path | "/"
    startTime: request.time
    endTime: response.time
    clientSpan: (context.reporter.kind | "inbound") == "outbound"
    rewriteClientSpanId: "false"
    httpStatusCode: response.code | 0
    destinationName: destination.workload.name | "unknown"
    spanTags:
      http.method: request.method | ""
      http.url: request.path | ""
      request.size: request.size | 0
      source.principal: source.principal | ""
---
apiVersion: "config.istio.io/v1alpha2"
kind: handler
metadata:
  name: otel
  namespace: istio-system
spec:
  compiledAdapter: opentelemetry
  params:
    address: "{addr}"
---
apiVersion: "config.istio.io/v1alpha2"
kind: rule
metadata:
  name: tracing
  namespace: istio-system
spec:
  match: context.protocol == "http" || context.protocol == "grpc"
  actions:
  - handler: otel
    instances:
    - default
"#
    );
    let svc = service(objects_from_yaml(&yaml), 1);
    let headers: BTreeMap<String, String> = [
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let bag = Bag::new()
        .with("context.reporter.kind", "inbound")
        .with("request.headers", headers)
        .with("request.method", "GET")
        .with("request.path", "/reviews/1")
        .with("request.size", 17i64)
        .with("request.time", start)
        .with("response.time", start + Duration::from_millis(35))
        .with("response.code", 200i64)
        .with("destination.workload.name", "reviews-v1")
        .with(
            "source.principal",
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        );
    svc.handle_report(&compress_report(&[bag])).unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    let export = loop {
        if let Some(r) = receiver.0.lock().first().cloned() {
            break r;
        }
        assert!(Instant::now() < deadline, "no span received");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let rs = &export.resource_spans[0];
    let service_name = &rs.resource.as_ref().unwrap().attributes[0];
    assert_eq!(service_name.key, "service.name");
    assert_eq!(
        format!("{:?}", service_name.value.as_ref().unwrap().value),
        r#"Some(StringValue("reviews-v1"))"#
    );
    let span = &rs.scope_spans[0].spans[0];
    assert_eq!(hex(&span.trace_id), "80f198ee56343ba864fe8b2a57d3eff7");
    assert_eq!(hex(&span.span_id), "e457b5a2e4d86bd1");
    assert_eq!(hex(&span.parent_span_id), "05e3ac9a4f6e3b90");
    assert_eq!(span.name, "/reviews/1");
    assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(span.end_time_unix_nano, 1_700_000_000_035_000_000);
    let attrs: BTreeMap<String, String> = span
        .attributes
        .iter()
        .map(|kv| {
            use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
            let v = match kv.value.as_ref().and_then(|v| v.value.clone()) {
                Some(V::StringValue(s)) => s,
                Some(V::IntValue(i)) => i.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect();
    assert_eq!(
        attrs,
        [
            ("http.method", "GET"),
            ("http.status_code", "200"),
            ("http.url", "/reviews/1"),
            ("request.size", "17"),
            (
                "source.principal",
                "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    );
}

fn bookinfo_pods() -> Vec<ConfigObject> {
    vec![
        pod("productpage-v1", "productpage", "v1"),
        pod("reviews-v2", "reviews", "v2"),
        pod("reviews-v3", "reviews", "v3"),
        pod("ratings-v1", "ratings", "v1"),
    ]
}

fn check_request(source: &str, dest: &str, dest_host: &str, quota: Option<&str>) -> CheckRequest {
    let bag = Bag::new()
        .with("source.uid", format!("kubernetes://{source}.default"))
        .with("destination.uid", format!("kubernetes://{dest}.default"))
        .with("destination.service.host", dest_host);
    CheckRequest {
        attributes: Some(compress(&bag)),
        global_word_count: dictionary::words().len() as u32,
        deduplication_id: String::new(),
        quotas: quota
            .map(|q| {
                (
                    q.to_string(),
                    QuotaParams {
                        amount: 1,
                        best_effort: true,
                    },
                )
            })
            .into_iter()
            .collect(),
    }
}

async fn check_code(svc: &MixerService, req: &CheckRequest) -> (i32, String) {
    let resp = svc.handle_check(req).await.unwrap();
    let status = resp.precondition.unwrap().status.unwrap();
    (status.code, status.message)
}

const RATINGS: &str = "ratings.default.svc.cluster.local";

#[tokio::test]
async fn legacy_denier_and_checknothing_sample_denies_reviews_v3() {
    let mut objs = objects_from_yaml(&sample("policy/mixer-rule-deny-label-crd.yaml"));
    objs.extend(bookinfo_pods());
    let svc = service(objs, 1);
    let (code, message) = check_code(
        &svc,
        &check_request("reviews-v3", "ratings-v1", RATINGS, None),
    )
    .await;
    assert_eq!(code, 7);
    assert_eq!(
        message,
        "PERMISSION_DENIED:denyreviewsv3handler.denier.default:Not allowed"
    );
    let (code, _) = check_code(
        &svc,
        &check_request("reviews-v2", "ratings-v1", RATINGS, None),
    )
    .await;
    assert_eq!(code, 0);
}

#[tokio::test]
async fn legacy_listchecker_and_listentry_sample_whitelists_versions() {
    let mut objs = objects_from_yaml(&sample("policy/mixer-rule-deny-whitelist-crd.yaml"));
    objs.extend(bookinfo_pods());
    let svc = service(objs, 1);
    let (code, message) = check_code(
        &svc,
        &check_request("reviews-v3", "ratings-v1", RATINGS, None),
    )
    .await;
    assert_eq!(code, 5, "{message}");
    assert!(
        message.contains("whitelist.listchecker.default"),
        "{message}"
    );
    let (code, _) = check_code(
        &svc,
        &check_request("reviews-v2", "ratings-v1", RATINGS, None),
    )
    .await;
    assert_eq!(code, 0);
}

#[tokio::test]
async fn legacy_memquota_and_quota_sample_limits_productpage() {
    let mut objs = objects_from_yaml(&sample("policy/mixer-rule-productpage-ratelimit-crd.yaml"));
    objs.extend(bookinfo_pods());
    // QuotaSpec/QuotaSpecBinding are the proxy's, not Mixer's: left over by apply_objects.
    let mut state = ConfigState::default();
    let other = state.apply_objects(objs.clone()).unwrap();
    let kinds: Vec<&str> = other.iter().map(|o| o.kind.as_str()).collect();
    assert_eq!(kinds, ["QuotaSpec", "QuotaSpecBinding"]);
    let svc = service(objs, 1);
    let req = check_request(
        "reviews-v2",
        "productpage-v1",
        "productpage.default.svc.cluster.local",
        Some("requestcount"),
    );
    let mut granted = Vec::new();
    for _ in 0..3 {
        let resp = svc.handle_check(&req).await.unwrap();
        granted.push(resp.quotas["requestcount"].granted_amount);
    }
    // The `productpage` override of `requestcount.quota.istio-system`: 2 per 5 s.
    assert_eq!(granted, [1, 1, 0]);
}

#[tokio::test]
async fn legacy_prometheus_and_metric_kinds_record_series() {
    let yaml = r#"apiVersion: "config.istio.io/v1alpha2"
kind: metric
metadata:
  name: requestcount
  namespace: istio-system
spec:
  value: "1"
  dimensions:
    destination: destination.workload.name | "unknown"
    response_code: response.code | 200
---
apiVersion: "config.istio.io/v1alpha2"
kind: prometheus
metadata:
  name: handler
  namespace: istio-system
spec:
  metrics:
  - name: legacy_request_count
    instance_name: requestcount.metric.istio-system
    kind: COUNTER
    label_names:
    - destination
    - response_code
---
apiVersion: "config.istio.io/v1alpha2"
kind: rule
metadata:
  name: promhttp
  namespace: istio-system
spec:
  actions:
  - handler: handler.prometheus
    instances:
    - requestcount.metric
"#;
    let mut state = ConfigState::default();
    state.apply_objects(objects_from_yaml(yaml)).unwrap();
    let policy = Policy::compile(&state);
    assert!(policy.problems.is_empty(), "{:?}", policy.problems);
    let handle = PolicyHandle::default();
    handle.set(policy);
    let registry = mesh_runtime::Metrics::default();
    let svc = MixerService::new(handle, MixerMetrics::default()).with_prometheus(
        mixer::adapter::prometheus::PrometheusSink::new(registry.clone()),
    );
    let bag = Bag::new()
        .with("destination.workload.name", "reviews-v1")
        .with("response.code", 200i64);
    svc.handle_report(&compress_report(&[bag.clone(), bag]))
        .unwrap();
    let text = registry.encode();
    assert!(
        text.contains(
            r#"istio_legacy_request_count_total{destination="reviews-v1",response_code="200"} 2.0"#
        ),
        "{text}"
    );
}

#[test]
fn legacy_collections_are_named_as_istio_galley_serves_them() {
    let names = mixer::config::legacy::collections();
    for c in [
        "istio/config/v1alpha2/legacy/deniers",
        "istio/config/v1alpha2/legacy/listcheckers",
        "istio/config/v1alpha2/legacy/memquotas",
        "istio/config/v1alpha2/legacy/prometheuses",
        "istio/config/v1alpha2/legacy/stdios",
        "istio/config/v1alpha2/legacy/quotas",
        "istio/config/v1alpha2/legacy/metrics",
        "istio/config/v1alpha2/legacy/logentries",
        "istio/config/v1alpha2/legacy/checknothings",
        "istio/config/v1alpha2/legacy/listentries",
    ] {
        assert!(names.iter().any(|n| n == c), "{c} missing from {names:?}");
    }
}
