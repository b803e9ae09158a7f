//! Signing throughput with P-256: CSRs per second on one core and latency percentiles,
//! (1) the CA's `sign` alone (CSR parse and proof-of-possession check, leaf signing, PEM),
//! (2) through the gRPC service on loopback (local token check included), server and client
//!     sharing one tokio worker thread, 16 requests in flight on one HTTP/2 connection.
//!
//! Measure (release): `cargo bench -p citadel --bench signing`
//! Smoke run (debug, numbers meaningless): `cargo test -p citadel --bench signing`
//! `CITADEL_BENCH_N` overrides the number of CSRs per phase.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use citadel::{CertificateAuthority, Citadel, Config, TtlPolicy};
use mesh_identity::SpiffeId;
use mesh_proto::istio::v1::auth::IstioCertificateRequest;
use mesh_proto::istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;

const IN_FLIGHT: usize = 16;

fn csrs(n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            rcgen::CertificateParams::default()
                .serialize_request(&key)
                .unwrap()
                .pem()
                .unwrap()
        })
        .collect()
}

struct Stats {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

fn stats(n: usize, total: Duration, mut lat: Vec<Duration>) -> Stats {
    lat.sort();
    let at = |q: f64| lat[((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1];
    Stats {
        per_sec: n as f64 / total.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn report(name: &str, s: &Stats) {
    println!(
        "{name:<28} {:>9.0} CSRs/s   p50 {:>8.3} ms   p99 {:>8.3} ms",
        s.per_sec,
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3
    );
}

fn sign_only(ca: &CertificateAuthority, csrs: &[String]) -> Stats {
    let id = SpiffeId::new("cluster.local", "default", "bench").unwrap();
    let ttl = Duration::from_secs(3600);
    let mut lat = Vec::with_capacity(csrs.len());
    let start = Instant::now();
    for csr in csrs {
        let t = Instant::now();
        let chain = ca.sign(csr, &id, ttl).unwrap();
        lat.push(t.elapsed());
        std::hint::black_box(chain);
    }
    stats(csrs.len(), start.elapsed(), lat)
}

async fn through_grpc(state: &std::path::Path, csrs: Vec<String>) -> Stats {
    let config = Config::local(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        state.to_path_buf(),
        TtlPolicy {
            default: Duration::from_secs(3600),
            max: Duration::from_secs(3600),
        },
    );
    let citadel = Citadel::bind(config).await.unwrap();
    let url = format!("http://{}", citadel.grpc_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(citadel.serve(async {
        let _ = stopped.await;
    }));
    let token =
        citadel::token::issue(state, "default", "bench", Duration::from_secs(3600)).unwrap();
    let client = IstioCertificateServiceClient::connect(url).await.unwrap();
    let n = csrs.len();
    let queue = Arc::new(parking_lot::Mutex::new(csrs));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (queue, mut client, token) = (queue.clone(), client.clone(), token.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let Some(csr) = queue.lock().pop() else { break };
                let mut req = tonic::Request::new(IstioCertificateRequest {
                    csr,
                    validity_duration: 0,
                    metadata: None,
                });
                req.metadata_mut()
                    .insert("authorization", format!("Bearer {token}").parse().unwrap());
                let t = Instant::now();
                let chain = client.create_certificate(req).await.unwrap();
                lat.push(t.elapsed());
                std::hint::black_box(chain);
            }
            lat
        }));
    }
    let mut lat = Vec::with_capacity(n);
    for w in workers {
        lat.extend(w.await.unwrap());
    }
    let total = start.elapsed();
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    stats(n, total, lat)
}

fn main() {
    let debug = cfg!(debug_assertions);
    let n: usize = std::env::var("CITADEL_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if debug { 200 } else { 20_000 });
    println!(
        "citadel signing bench: P-256, {n} CSRs per phase, {} build{}",
        if debug { "debug" } else { "release" },
        if debug {
            " (smoke run, numbers not meaningful)"
        } else {
            ""
        }
    );
    let state = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::load_or_create(state.path(), "cluster.local").unwrap();
    let pool = csrs(n);

    report("sign only (1 thread)", &sign_only(&ca, &pool));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(through_grpc(state.path(), pool));
    report("gRPC loopback (1 worker)", &s);
}
