//! Galley's memory at 10,000 resources: galley (`galley::run`) in-process, 10,000 realistic
//! objects (20 namespaces x 100 services, each with its Service, Endpoints of 3 addresses, a
//! Pod, a DestinationRule with 2 subsets and a VirtualService) applied through the HTTP apply
//! API in batches of 100 (validate, durable store), then one MCP sink subscribed to Pilot's
//! collections receives the full snapshot (it ACKs, counts the resources and decodes or keeps
//! none). The client side (HTTP applies, the sink) runs in a child process, so the RSS
//! printed is galley's process alone. Prints the
//! process's RSS (`/proc/self/statm`) at each step.
//!
//! `cargo bench -p galley --bench memory_10k` (`SERVICES_PER_NAMESPACE`, default 100).
//! `cargo test -p galley --bench memory_10k` runs it with 10 services per namespace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Galley, PILOT_COLLECTIONS, benching, file_backed_mb, rss_mb};
use mesh_proto::istio::mcp::v1alpha1::resource_source_client::ResourceSourceClient;
use mesh_proto::istio::mcp::v1alpha1::{RequestResources, SinkNode};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const NAMESPACES: usize = 20;
const BATCH: usize = 100;

/// The five objects of service `i` in namespace `ns`, as YAML documents.
fn service_objects(ns: &str, i: usize, ip: &mut u32) -> Vec<String> {
    let name = format!("svc-{i}");
    let mut addr = || {
        *ip += 1;
        format!(
            "10.{}.{}.{}",
            (*ip >> 16) & 255,
            (*ip >> 8) & 255,
            *ip & 255
        )
    };
    let (a1, a2, a3) = (addr(), addr(), addr());
    vec![
        format!(
            "apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {ns}
  labels: {{app: {name}, service: {name}}}
spec:
  clusterIP: {}
  selector: {{app: {name}}}
  ports:
  - {{name: http, port: 9080, targetPort: 9080, protocol: TCP}}
  - {{name: grpc, port: 9090, targetPort: 9090, protocol: TCP}}
",
            addr()
        ),
        format!(
            "apiVersion: v1
kind: Endpoints
metadata:
  name: {name}
  namespace: {ns}
  labels: {{app: {name}}}
subsets:
- addresses:
  - {{ip: {a1}, targetRef: {{kind: Pod, name: {name}-v1-7d4b9c-a, namespace: {ns}}}}}
  - {{ip: {a2}, targetRef: {{kind: Pod, name: {name}-v1-7d4b9c-b, namespace: {ns}}}}}
  - {{ip: {a3}, targetRef: {{kind: Pod, name: {name}-v2-5f8c6d-a, namespace: {ns}}}}}
  ports:
  - {{name: http, port: 9080, protocol: TCP}}
  - {{name: grpc, port: 9090, protocol: TCP}}
"
        ),
        format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: {name}-v1-7d4b9c-a
  namespace: {ns}
  labels: {{app: {name}, version: v1, pod-template-hash: 7d4b9c}}
  annotations: {{sidecar.istio.io/status: injected}}
spec:
  serviceAccountName: {name}
  nodeName: node-{}
  containers:
  - name: {name}
    image: docker.io/istio/examples-bookinfo-{name}-v1:1.20.2
    ports: [{{containerPort: 9080}}]
  - name: istio-proxy
    image: mesh-proxy:latest
    args: [proxy, sidecar]
status:
  phase: Running
  podIP: {a1}
",
            i % 7
        ),
        format!(
            "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {name}
  namespace: {ns}
spec:
  host: {name}
  trafficPolicy:
    connectionPool:
      http: {{http1MaxPendingRequests: 100, maxRequestsPerConnection: 10}}
    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}}
  subsets:
  - name: v1
    labels: {{version: v1}}
  - name: v2
    labels: {{version: v2}}
"
        ),
        format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {name}
  namespace: {ns}
spec:
  hosts: [{name}]
  http:
  - match:
    - headers:
        end-user: {{exact: jason}}
    route:
    - destination: {{host: {name}, subset: v2}}
  - route:
    - destination: {{host: {name}, subset: v1}}
      weight: 90
    - destination: {{host: {name}, subset: v2}}
      weight: 10
    timeout: 5s
    retries: {{attempts: 3, perTryTimeout: 2s}}
"
        ),
    ]
}

/// An MCP sink that subscribes to Pilot's collections, ACKs every response and only counts the
/// resources (it decodes and keeps nothing, so the RSS measured is galley's).
async fn counting_sink(mcp: std::net::SocketAddr, received: Arc<AtomicUsize>) {
    let mut client = ResourceSourceClient::connect(format!("http://{mcp}"))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(32);
    let request = |collection: &str, nonce: &str| RequestResources {
        sink_node: Some(SinkNode {
            id: "memory-sink".into(),
            annotations: Default::default(),
        }),
        collection: collection.into(),
        initial_resource_versions: Default::default(),
        response_nonce: nonce.into(),
        error_detail: None,
        incremental: false,
    };
    for k in PILOT_COLLECTIONS {
        tx.send(request(k.info().collection, "")).await.unwrap();
    }
    let mut stream = client
        .establish_resource_stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    while let Ok(Some(res)) = stream.message().await {
        received.fetch_add(res.resources.len(), Ordering::Relaxed);
        if tx.send(request(&res.collection, &res.nonce)).await.is_err() {
            break;
        }
    }
}

/// The client side, run as a child process so that the parent's RSS is galley's alone: applies
/// every object (printing `applied`), waits for a line on stdin, then runs the sink until it has
/// every object (printing `synced`).
async fn client(api: &str, mcp: &str, per_ns: usize) {
    let http = reqwest::Client::new();
    let mut ip = 0u32;
    let mut batch = Vec::new();
    let (mut total, mut b) = (0, 0);
    for n in 0..NAMESPACES {
        let ns = format!("team-{n}");
        for i in 0..per_ns {
            batch.extend(service_objects(&ns, i, &mut ip));
            if batch.len() >= BATCH || (n + 1 == NAMESPACES && i + 1 == per_ns) {
                total += batch.len();
                let resp = http
                    .post(format!("http://{api}/apis/v1/apply"))
                    .header("x-mesh-source", format!("batch-{b}.yaml"))
                    .header("content-type", "application/yaml")
                    .body(batch.join("---\n"))
                    .send()
                    .await
                    .unwrap();
                assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
                batch.clear();
                b += 1;
            }
        }
    }
    println!("applied {total}");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let sink = tokio::spawn(counting_sink(mcp.parse().unwrap(), received.clone()));
    let deadline = Instant::now() + Duration::from_secs(300);
    while received.load(Ordering::Relaxed) < total {
        assert!(
            Instant::now() < deadline,
            "the sink got {} of {total} objects",
            received.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("synced");
    sink.abort();
}

/// Reads the child's next line.
fn expect_line(out: &mut impl BufRead, prefix: &str) -> String {
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with(prefix), "client said {line:?}");
    line
}

#[tokio::main]
async fn main() {
    let per_ns = std::env::var("SERVICES_PER_NAMESPACE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if benching() { 100 } else { 10 });
    if let Ok(addrs) = std::env::var("MEMORY_BENCH_CLIENT") {
        let (api, mcp) = addrs.split_once(',').unwrap();
        client(api, mcp, per_ns).await;
        return;
    }
    let before_start = rss_mb();
    galley::validate::init_schemas().unwrap();
    let schemas_rss = rss_mb();
    let galley = Galley::start().await;
    let started_rss = rss_mb();

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(
            "MEMORY_BENCH_CLIENT",
            format!("{},{}", galley.api, galley.mcp),
        )
        .env("SERVICES_PER_NAMESPACE", per_ns.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_child = child.stdin.take().unwrap();
    let mut from_child = BufReader::new(child.stdout.take().unwrap());
    let t = Instant::now();
    // The child blocks on its pipe while galley (this runtime) serves it.
    let (applied, from_child) = tokio::task::spawn_blocking(move || {
        let l = expect_line(&mut from_child, "applied");
        (l, from_child)
    })
    .await
    .unwrap();
    let total: usize = applied
        .trim()
        .trim_start_matches("applied ")
        .parse()
        .unwrap();
    let apply_secs = t.elapsed().as_secs_f64();
    let applied_rss = rss_mb();
    writeln!(to_child, "go").unwrap();
    let mut from_child = from_child;
    tokio::task::spawn_blocking(move || expect_line(&mut from_child, "synced"))
        .await
        .unwrap();
    let synced_rss = rss_mb();
    let code = file_backed_mb();
    assert!(child.wait().unwrap().success());

    println!(
        "{total} resources ({NAMESPACES} namespaces x {per_ns} services x Service, Endpoints, Pod, DestinationRule, VirtualService), applied in batches of {BATCH} in {apply_secs:.1} s"
    );
    println!("galley's process (the client runs in a child process):");
    println!("RSS before galley started:           {before_start:.1} MB");
    println!("RSS CRD schemas compiled:            {schemas_rss:.1} MB");
    println!("RSS galley started, empty store:     {started_rss:.1} MB");
    println!("RSS after {total} resources applied: {applied_rss:.1} MB");
    println!("RSS after one sink got the snapshot: {synced_rss:.1} MB");
    println!(
        "of which file-backed (code, libraries): {code:.1} MB; anonymous (heap, stacks): {:.1} MB",
        synced_rss - code
    );
    galley.stop().await;
}
