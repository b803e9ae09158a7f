//! Check rate over the Bookinfo policy and telemetry samples (Istio 1.4: denier + checknothing,
//! listchecker + listentry, memquota + quota, prometheus + metric, stdio + logentry), with
//! Check requests shaped like the proxy's (principals, uids, host, path, method, headers).
//!
//! Prints, per measurement, Check/s on one thread (wall clock), Check/s per CPU second the
//! process used (= per core, also on a machine busy with other work) and latency percentiles:
//! - `decide`: the in-process decision (`check_with_quotas`: decode, workload attributes, rule
//!   match, instance evaluation, adapter dispatch), no quota allocation;
//! - `service`: `MixerService::handle_check` (the above plus memquota allocation, metrics);
//! - `grpc`: through the real gRPC server on loopback, one call in flight (latency) and
//!   `GRPC_CONCURRENCY` (16) in flight (throughput); the client on the bench's runtime thread,
//!   the server on a runtime thread of its own, whose Checks per CPU second are printed apart
//!   (`server thread ... per CPU-s`: the server's rate per core); `MIXER_SERVER=tonic` serves
//!   through tonic's `Server` (`serve_grpc_tonic`) instead of hyper directly, and
//!   `MIXER_SERVER=generated` through hyper with every call (Check too) in the generated
//!   `MixerServer` and tonic's codec (`serve_grpc_generated`, the former `serve_grpc`), to compare;
//! - `report record`: `handle_report` with batches of 100 delta-encoded records over the
//!   telemetry sample alone (prometheus `metrics.yaml`), per record (printed as "Check/s").
//!
//! Release figures: `cargo bench -p mixer --bench check` (`BENCH_SECONDS`, default 5, per
//! measurement). Quick debug correctness run: `cargo bench -p mixer --bench check -- --test`
//! (or `cargo test -p mixer --bench check`), which runs each measurement briefly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use mesh_proto::attributes::{Bag, compress, compress_report};
use mesh_proto::config::ConfigObject;
use mesh_proto::dictionary;
use mesh_proto::istio::mixer::v1::check_request::QuotaParams;
use mesh_proto::istio::mixer::v1::mixer_client::MixerClient;
use mesh_proto::istio::mixer::v1::{CheckRequest, ReportRequest};
use mixer::MixerService;
use mixer::check::check_with_quotas;
use mixer::config::{ConfigState, Policy, PolicyHandle};
use mixer::metrics::MixerMetrics;
use serde_json::{Value, json};

const SAMPLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/conformance/istio-1.4/samples/bookinfo"
);

const FILES: [&str; 5] = [
    "policy/mixer-rule-deny-label.yaml",
    "policy/mixer-rule-deny-whitelist.yaml",
    "policy/mixer-rule-productpage-ratelimit.yaml",
    "telemetry/metrics.yaml",
    "telemetry/log-entry.yaml",
];

fn objects_from_yaml(text: &str) -> Vec<ConfigObject> {
    let mut out = Vec::new();
    for doc in text.split("\n---") {
        let v: Value = serde_saphyr::from_str(doc).unwrap_or(Value::Null);
        if let Value::Object(mut m) = v {
            let meta = m.entry("metadata").or_insert_with(|| json!({}));
            if meta.get("namespace").is_none() {
                meta["namespace"] = json!("default");
            }
            out.push(serde_json::from_value(Value::Object(m)).unwrap());
        }
    }
    out
}

fn pod(name: &str, app: &str, version: &str) -> ConfigObject {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": app, "version": version}},
        "spec": {"serviceAccountName": format!("bookinfo-{app}")},
        "status": {"podIP": "10.0.0.1"}
    }))
    .unwrap()
}

fn policy() -> Option<Policy> {
    let p = policy_from(&FILES)?;
    assert_eq!(p.rules.len(), 5);
    Some(p)
}

/// The policy of the sample `files` and the six Bookinfo pods.
fn policy_from(files: &[&str]) -> Option<Policy> {
    let dir = Path::new(SAMPLES);
    if !dir.is_dir() {
        return None;
    }
    let mut objs = Vec::new();
    for f in files {
        objs.extend(objects_from_yaml(
            &std::fs::read_to_string(dir.join(f)).unwrap(),
        ));
    }
    for (name, app, version) in [
        ("productpage-v1", "productpage", "v1"),
        ("details-v1", "details", "v1"),
        ("reviews-v1", "reviews", "v1"),
        ("reviews-v2", "reviews", "v2"),
        ("reviews-v3", "reviews", "v3"),
        ("ratings-v1", "ratings", "v1"),
    ] {
        objs.push(pod(name, app, version));
    }
    let mut state = ConfigState::default();
    state.apply_objects(objs).unwrap();
    let p = Policy::compile(&state);
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    Some(p)
}

/// The inbound Check of `source` calling `dest` (service `svc`), as the proxy encodes it.
fn request(source: &str, dest: &str, svc: &str, path: &str, quota: bool) -> CheckRequest {
    let sa = |pod: &str| {
        format!(
            "spiffe://cluster.local/ns/default/sa/bookinfo-{}",
            pod.split('-').next().unwrap_or(pod)
        )
    };
    let host = format!("{svc}.default.svc.cluster.local");
    let headers: BTreeMap<String, String> = [
        ("host", format!("{svc}:9080")),
        ("user-agent", "Go-http-client/1.1".into()),
        ("accept", "*/*".into()),
        (
            "x-request-id",
            "0b3f7a8e-3a7e-4c65-9d0e-6d3c0b2e1f4a".into(),
        ),
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7".into()),
        ("x-b3-spanid", "e457b5a2e4d86bd1".into()),
        ("x-b3-sampled", "1".into()),
        ("x-forwarded-proto", "http".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let bag = Bag::new()
        .with("context.reporter.kind", "inbound")
        .with("source.principal", sa(source))
        .with("destination.principal", sa(dest))
        .with("destination.uid", format!("kubernetes://{dest}.default"))
        .with("destination.service.host", host.clone())
        .with("request.host", format!("{svc}:9080"))
        .with("request.path", path)
        .with("request.method", "GET")
        .with("request.headers", headers)
        .with("connection.mtls", true)
        .with("source.uid", format!("kubernetes://{source}.default"));
    CheckRequest {
        attributes: Some(compress(&bag)),
        global_word_count: dictionary::words().len() as u32,
        deduplication_id: String::new(),
        quotas: if quota {
            [(
                "requestcount".to_string(),
                QuotaParams {
                    amount: 1,
                    best_effort: true,
                },
            )]
            .into()
        } else {
            Default::default()
        },
    }
}

/// A Report batch of `n` records as a proxy sends it: its Check bags (the mix's attributes)
/// with the response attributes, delta-encoded.
fn report_batch(n: usize) -> ReportRequest {
    let checks = mix();
    let bags: Vec<Bag> = (0..n)
        .map(|i| {
            let c = &checks[i % checks.len()];
            let mut bag =
                mesh_proto::attributes::decompress(c.attributes.as_ref().unwrap()).unwrap();
            bag.set("response.code", if i % 10 == 9 { 503i64 } else { 200i64 });
            bag.set(
                "response.duration",
                Duration::from_micros(800 + (i as u64 % 7) * 100),
            );
            bag.set("request.size", 0i64);
            bag.set("response.size", 1_000 + i as i64);
            bag
        })
        .collect();
    compress_report(&bags)
}

/// The Bookinfo call mix: productpage → details/reviews, reviews → ratings (one denied by the
/// label rule, one by the whitelist), ingress → productpage (with the rate-limit quota).
fn mix() -> Vec<CheckRequest> {
    vec![
        request(
            "productpage-v1",
            "details-v1",
            "details",
            "/details/0",
            false,
        ),
        request(
            "productpage-v1",
            "reviews-v1",
            "reviews",
            "/reviews/0",
            false,
        ),
        request("reviews-v2", "ratings-v1", "ratings", "/ratings/0", false),
        request("reviews-v3", "ratings-v1", "ratings", "/ratings/0", false),
        request(
            "productpage-v1",
            "productpage-v1",
            "productpage",
            "/productpage",
            true,
        ),
    ]
}

struct Figures {
    rate: f64,
    /// Calls per CPU second this process used (= per core, whatever else the machine runs).
    per_cpu: f64,
    /// Calls per CPU second of the gRPC server's thread alone.
    server_per_cpu: Option<f64>,
    p50: Duration,
    p99: Duration,
    calls: usize,
}

/// utime + stime of this process (every thread) in seconds, from /proc/self/stat (Linux,
/// 100 ticks per second); 0 elsewhere.
fn cpu_seconds() -> f64 {
    stat_cpu("/proc/self/stat")
}

/// This thread's id (Linux), for [`thread_cpu`].
fn thread_id() -> Option<u32> {
    std::fs::read_link("/proc/thread-self")
        .ok()?
        .file_name()?
        .to_str()?
        .parse()
        .ok()
}

/// utime + stime of one thread of this process in seconds.
fn thread_cpu(tid: u32) -> f64 {
    stat_cpu(&format!("/proc/self/task/{tid}/stat"))
}

fn stat_cpu(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

/// A measurement's start: wall clock, CPU, and the server thread's CPU (when it has one).
struct Start(Instant, f64, Option<(u32, f64)>);

impl Start {
    fn now() -> Start {
        Start(Instant::now(), cpu_seconds(), None)
    }
    fn with_server(tid: Option<u32>) -> Start {
        Start(
            Instant::now(),
            cpu_seconds(),
            tid.map(|t| (t, thread_cpu(t))),
        )
    }
    fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

fn figures(mut lat: Vec<Duration>, started: &Start) -> Figures {
    let elapsed = started.elapsed();
    let cpu = cpu_seconds() - started.1;
    lat.sort_unstable();
    let at = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    Figures {
        rate: lat.len() as f64 / elapsed.as_secs_f64(),
        per_cpu: if cpu > 0.0 {
            lat.len() as f64 / cpu
        } else {
            0.0
        },
        server_per_cpu: started
            .2
            .map(|(tid, c0)| thread_cpu(tid) - c0)
            .filter(|c| *c > 0.0)
            .map(|c| lat.len() as f64 / c),
        p50: at(0.50),
        p99: at(0.99),
        calls: lat.len(),
    }
}

fn print(name: &str, f: &Figures) {
    let server = f
        .server_per_cpu
        .map(|r| format!("   server thread {r:.0} per CPU-s"))
        .unwrap_or_default();
    println!(
        "{name:<28} {:>9.0} Check/s  {:>9.0} per CPU-s   p50 {:>8.1} µs   p99 {:>8.1} µs   ({} calls){server}",
        f.rate,
        f.per_cpu,
        f.p50.as_secs_f64() * 1e6,
        f.p99.as_secs_f64() * 1e6,
        f.calls
    );
}

fn main() {
    let quick =
        std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
    let budget = if quick {
        Duration::from_millis(200)
    } else {
        Duration::from_secs_f64(
            std::env::var("BENCH_SECONDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(5.0),
        )
    };
    let Some(policy) = policy() else {
        println!("skipped: {SAMPLES} not found");
        return;
    };
    let reqs = mix();
    // The mix decides as Bookinfo's policy says: reviews-v3 → ratings is refused by the
    // whitelist (NOT_FOUND) before the label denier is reached.
    let codes: Vec<i32> = reqs
        .iter()
        .map(|r| {
            check_with_quotas(&policy, r)
                .unwrap()
                .response
                .precondition
                .unwrap()
                .status
                .unwrap()
                .code
        })
        .collect();
    assert_eq!(codes, [0, 0, 0, 5, 0], "bookinfo decisions");

    // In-process decision.
    let mut lat = Vec::new();
    let started = Start::now();
    let mut i = 0;
    while started.elapsed() < budget {
        let r = &reqs[i % reqs.len()];
        let t = Instant::now();
        let checked = check_with_quotas(&policy, r).unwrap();
        lat.push(t.elapsed());
        std::hint::black_box(checked);
        i += 1;
    }
    print("decide (in process)", &figures(lat, &started));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = PolicyHandle::default();
    handle.set(policy);
    let service = MixerService::new(handle, MixerMetrics::default());

    // Service path (with memquota).
    let f = rt.block_on(async {
        let mut lat = Vec::new();
        let started = Start::now();
        let mut i = 0;
        while started.elapsed() < budget {
            let r = &reqs[i % reqs.len()];
            let t = Instant::now();
            let resp = service.handle_check(r).await.unwrap();
            lat.push(t.elapsed());
            std::hint::black_box(resp);
            i += 1;
        }
        figures(lat, &started)
    });
    print("service (in process)", &f);

    // Report, in process: batches of 100 records through `handle_report` with the telemetry
    // sample's prometheus rule (metrics.yaml, as the mesh_policy bench applies), per record.
    let report_policy = policy_from(&FILES[3..4]).unwrap();
    let report_handle = PolicyHandle::default();
    report_handle.set(report_policy);
    let report_service = MixerService::new(report_handle, MixerMetrics::default());
    let batch = report_batch(100);
    let mut lat = Vec::new();
    let started = Start::now();
    while started.elapsed() < budget {
        let t = Instant::now();
        report_service.handle_report(&batch).unwrap();
        let per = t.elapsed() / 100;
        lat.extend(std::iter::repeat_n(per, 100));
    }
    print("report record (in process)", &figures(lat, &started));

    // Real gRPC server on loopback, on a runtime thread of its own (its CPU measured apart).
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server_service = service.clone();
    let _server = std::thread::Builder::new()
        .name("mixer-grpc".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                ready_tx
                    .send((listener.local_addr().unwrap(), thread_id()))
                    .unwrap();
                let stopped = async move {
                    let _ = stopped.await;
                };
                // MIXER_SERVER=tonic: through tonic's `Server` instead, to compare.
                let which = std::env::var("MIXER_SERVER").unwrap_or_default();
                if which == "tonic" {
                    let _ =
                        mixer::server::serve_grpc_tonic(listener, server_service, stopped).await;
                } else if which == "generated" {
                    let _ = mixer::server::serve_grpc_generated(listener, server_service, stopped)
                        .await;
                } else {
                    let _ = mixer::server::serve_grpc(listener, server_service, stopped).await;
                }
            });
        })
        .unwrap();
    let (addr, server_tid) = ready_rx.recv().unwrap();
    rt.block_on(async {
        let client = MixerClient::connect(format!("http://{addr}"))
            .await
            .unwrap();

        let mut c = client.clone();
        // The server decides the mix as in process (and grants the rate-limit quota).
        let mut codes = Vec::new();
        for r in &reqs {
            let resp = c.check(r.clone()).await.unwrap().into_inner();
            codes.push(resp.precondition.unwrap().status.unwrap().code);
            for (name, q) in &r.quotas {
                assert_eq!(resp.quotas[name].granted_amount, q.amount, "quota {name}");
            }
        }
        assert_eq!(codes, [0, 0, 0, 5, 0], "bookinfo decisions over gRPC");
        let mut lat = Vec::new();
        let started = Start::with_server(server_tid);
        let mut i = 0;
        while started.elapsed() < budget {
            let r = reqs[i % reqs.len()].clone();
            let t = Instant::now();
            let resp = c.check(r).await.unwrap();
            lat.push(t.elapsed());
            std::hint::black_box(resp);
            i += 1;
        }
        print("grpc loopback, 1 in flight", &figures(lat, &started));

        let concurrency: usize = std::env::var("GRPC_CONCURRENCY")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(16);
        let started = Start::with_server(server_tid);
        let t0 = started.0;
        let mut tasks = Vec::new();
        for w in 0..concurrency {
            let mut c = client.clone();
            let reqs = reqs.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = w;
                while t0.elapsed() < budget {
                    let r = reqs[i % reqs.len()].clone();
                    let t = Instant::now();
                    c.check(r).await.unwrap();
                    lat.push(t.elapsed());
                    i += 1;
                }
                lat
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.unwrap());
        }
        print(
            &format!("grpc loopback, {concurrency} in flight"),
            &figures(lat, &started),
        );
        let _ = stop.send(());
    });
}
