//! Tracing across the demo: the test runs its own OTLP/gRPC receiver
//! (`opentelemetry.proto.collector.trace.v1.TraceService/Export`), starts
//! `meshctl up --demo --trace-collector <it>`, routes jason to reviews v2 with Istio's own
//! `virtual-service-reviews-test-v2.yaml` (so ratings is called), sends ONE request through the
//! ingress without trace headers, and checks that its spans make one trace:
//!
//! ```text
//! ingressgateway CLIENT (root)
//! └─ productpage SERVER
//!    ├─ productpage CLIENT → details SERVER
//!    └─ productpage CLIENT → reviews-v2 SERVER
//!                            └─ reviews-v2 CLIENT → ratings SERVER
//! ```
//!
//! The apps only forward the trace headers they received (as Bookinfo does), so the CLIENT
//! spans of an app's calls hang under that app's SERVER span.
//!
//! One mesh start (17 processes). Build the binaries first: `cargo build --workspace --bins`.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{Mesh, http, poll};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use parking_lot::Mutex;
use serde_json::Value;

/// One received span with what the test looks at.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    kind: i32,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    attrs: BTreeMap<String, String>,
    resource: BTreeMap<String, String>,
}

impl Got {
    fn describe(&self) -> String {
        format!(
            "{} {} {:?} span={} parent={}",
            self.service,
            self.name,
            SpanKind::try_from(self.kind).unwrap_or(SpanKind::Unspecified),
            hex(&self.span_id),
            hex(&self.parent)
        )
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn strings(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .filter_map(|kv| {
            let v = match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => s.clone(),
                any_value::Value::IntValue(i) => i.to_string(),
                any_value::Value::BoolValue(b) => b.to_string(),
                other => format!("{other:?}"),
            };
            Some((kv.key.clone(), v))
        })
        .collect()
}

/// An OTLP trace receiver that keeps every span.
#[derive(Debug, Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Got>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut out = Vec::new();
        for rs in request.into_inner().resource_spans {
            let resource = rs
                .resource
                .as_ref()
                .map(|r| strings(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(Got {
                        service: service.clone(),
                        name: s.name,
                        kind: s.kind,
                        trace_id: s.trace_id,
                        span_id: s.span_id,
                        parent: s.parent_span_id,
                        attrs: strings(&s.attributes),
                        resource: resource.clone(),
                    });
                }
            }
        }
        self.spans.lock().extend(out);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Starts the receiver on a free loopback port; stops when the returned sender is dropped.
async fn start_receiver() -> (Receiver, String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let receiver = Receiver::default();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let svc = TraceServiceServer::new(receiver.clone());
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stop_rx.await;
                },
            )
            .await;
    });
    (receiver, addr.to_string(), stop_tx)
}

fn sample(name: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/istio/valid/samples/bookinfo/networking")
        .join(name)
}

/// GET ingress/productpage as jason with our own request id (not a trace header).
async fn productpage(mesh: &Mesh, request_id: &str) -> Result<Value, String> {
    let url = format!("{}/productpage", mesh.ingress());
    let resp = http()
        .get(&url)
        .header("end-user", "jason")
        .header("x-request-id", request_id)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("GET {url}: {status} {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
}

/// reviews v2 answered and called ratings.
fn reviews_v2_with_ratings(body: &Value) -> Result<(), String> {
    let r = &body["calls"][1];
    let ok = r["service"] == "reviews"
        && r["version"] == "v2"
        && r["calls"][0]["service"] == "ratings"
        && r["calls"][0]["version"] == "v1";
    if ok {
        Ok(())
    } else {
        Err(format!("not reviews v2 → ratings: {body}"))
    }
}

/// The one span of `service` with `kind` whose name starts with `host` (`details.`).
fn one<'a>(spans: &'a [Got], service: &str, kind: SpanKind, host: &str) -> Result<&'a Got, String> {
    let found: Vec<&Got> = spans
        .iter()
        .filter(|s| s.service == service && s.kind == kind as i32 && s.name.starts_with(host))
        .collect();
    match found.as_slice() {
        [s] => Ok(s),
        _ => Err(format!(
            "{} spans of {service} {kind:?} {host}*",
            found.len()
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_makes_one_trace_across_the_demo() {
    let vs = sample("virtual-service-reviews-test-v2.yaml");
    if !vs.is_file() {
        eprintln!("skipping: Istio's samples are not at {}", vs.display());
        return;
    }
    let (receiver, collector, _stop) = start_receiver().await;
    let mesh = Mesh::start_demo_with(&["--trace-collector", &collector]);

    let out = mesh.meshctl(&["apply", "-f", vs.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Until jason's requests reach reviews v2 (which calls ratings), ten times in a row: before
    // the route applies, round robin over v1/v2/v3 can hit v2 by chance. These make traces too;
    // the request under test is told apart by its request id.
    let mut n = 0;
    poll(
        "jason routed to reviews v2",
        Duration::from_secs(90),
        || {
            n += 1;
            let first = n * 10;
            let mesh = &mesh;
            async move {
                for i in 0..10 {
                    let id = format!("warmup-{}", first + i);
                    reviews_v2_with_ratings(&productpage(mesh, &id).await?)?;
                }
                Ok(())
            }
        },
    )
    .await;

    // The request under test: no trace headers.
    let request_id = "8d3f5a7e-tracing-e2e-0001";
    let body = productpage(&mesh, request_id).await.unwrap();
    reviews_v2_with_ratings(&body).unwrap();

    let trace = poll("the request's 8 spans", Duration::from_secs(30), || {
        let spans = receiver.spans.lock().clone();
        async move {
            let ours: Vec<&Got> = spans
                .iter()
                .filter(|s| {
                    s.attrs.get("guid:x-request-id").map(String::as_str) == Some(request_id)
                })
                .collect();
            let Some(first) = ours.first() else {
                return Err(format!("none of {} spans yet", spans.len()));
            };
            let trace: Vec<Got> = spans
                .iter()
                .filter(|s| s.trace_id == first.trace_id)
                .cloned()
                .collect();
            if trace.len() < 8 {
                return Err(format!(
                    "{} spans so far: {:#?}",
                    trace.len(),
                    trace.iter().map(Got::describe).collect::<Vec<_>>()
                ));
            }
            Ok(trace)
        }
    })
    .await;
    let all: Vec<String> = trace.iter().map(Got::describe).collect();
    let ctx = format!("trace: {all:#?}");

    // One trace id for every span of the request, and exactly the 8 hops.
    let spans = receiver.spans.lock().clone();
    for s in spans
        .iter()
        .filter(|s| s.attrs.get("guid:x-request-id").map(String::as_str) == Some(request_id))
    {
        assert_eq!(s.trace_id, trace[0].trace_id, "{}\n{ctx}", s.describe());
    }
    assert_eq!(trace.len(), 8, "{ctx}");
    assert_eq!(trace[0].trace_id.len(), 16, "{ctx}");

    let gateway = one(
        &trace,
        "istio-ingressgateway",
        SpanKind::Client,
        "productpage.",
    )
    .unwrap();
    let pp_server = one(&trace, "productpage-v1", SpanKind::Server, "productpage.").unwrap();
    let pp_details = one(&trace, "productpage-v1", SpanKind::Client, "details.").unwrap();
    let details = one(&trace, "details-v1", SpanKind::Server, "details.").unwrap();
    let pp_reviews = one(&trace, "productpage-v1", SpanKind::Client, "reviews.").unwrap();
    let reviews = one(&trace, "reviews-v2", SpanKind::Server, "reviews.").unwrap();
    let reviews_ratings = one(&trace, "reviews-v2", SpanKind::Client, "ratings.").unwrap();
    let ratings = one(&trace, "ratings-v1", SpanKind::Server, "ratings.").unwrap();

    // The parent/child chain.
    assert!(gateway.parent.is_empty(), "gateway span is the root\n{ctx}");
    for (child, parent) in [
        (pp_server, gateway),
        (pp_details, pp_server),
        (details, pp_details),
        (pp_reviews, pp_server),
        (reviews, pp_reviews),
        (reviews_ratings, reviews),
        (ratings, reviews_ratings),
    ] {
        assert_eq!(
            child.parent,
            parent.span_id,
            "{} should be a child of {}\n{ctx}",
            child.describe(),
            parent.describe()
        );
    }

    // Names and tags as Istio's proxies set them.
    assert_eq!(gateway.name, "productpage.default.svc.cluster.local:9080/*");
    assert_eq!(reviews.name, "reviews.default.svc.cluster.local:9080/*");
    // The inbound side names the service port (from the Host, or the cluster whose endpoint it
    // is when a gateway passed the client's Host on).
    assert_eq!(
        pp_server.name,
        "productpage.default.svc.cluster.local:9080/*"
    );
    assert_eq!(
        pp_server.attrs.get("upstream_cluster").map(String::as_str),
        Some("inbound|9080||")
    );
    assert_eq!(
        reviews_ratings
            .attrs
            .get("upstream_cluster")
            .map(String::as_str),
        Some("outbound|9080||ratings.default.svc.cluster.local")
    );
    assert_eq!(
        pp_reviews.attrs.get("upstream_cluster").map(String::as_str),
        Some("outbound|9080|v2|reviews.default.svc.cluster.local")
    );
    for s in &trace {
        let a = &s.attrs;
        assert_eq!(
            a.get("component").map(String::as_str),
            Some("proxy"),
            "{}",
            s.describe()
        );
        assert_eq!(
            a.get("http.method").map(String::as_str),
            Some("GET"),
            "{}",
            s.describe()
        );
        assert_eq!(
            a.get("http.status_code").map(String::as_str),
            Some("200"),
            "{}",
            s.describe()
        );
        assert_eq!(
            a.get("response_flags").map(String::as_str),
            Some("-"),
            "{}",
            s.describe()
        );
        assert_eq!(
            a.get("guid:x-request-id").map(String::as_str),
            Some(request_id),
            "{}",
            s.describe()
        );
        assert!(
            a.get("http.url").is_some_and(|u| u.starts_with("http://")),
            "{}",
            s.describe()
        );
        assert!(
            a.get("node_id").is_some_and(|n| n.contains('~')),
            "{}",
            s.describe()
        );
        assert!(a.contains_key("peer.address"), "{}", s.describe());
    }
    assert_eq!(
        reviews
            .resource
            .get("istio.canonical_service")
            .map(String::as_str),
        Some("reviews")
    );
    assert_eq!(
        reviews
            .resource
            .get("k8s.namespace.name")
            .map(String::as_str),
        Some("default")
    );
    assert_eq!(
        gateway
            .resource
            .get("k8s.namespace.name")
            .map(String::as_str),
        Some("istio-system")
    );
    eprintln!("one trace, {} spans: {all:#?}", trace.len());
    drop(mesh);
}
