//! Apply → every sink: galley (`galley::run`) in-process on loopback, 10 MCP sinks subscribed to
//! Pilot's collections (the shared sink Pilot uses: decode, hand over, ACK), Bookinfo's
//! Services, Deployments and DestinationRules applied first. Each round applies a changed
//! `reviews` VirtualService through the HTTP apply API (as `meshctl apply` does) and times from
//! the request's start until all 10 sinks have decoded the new version; prints p50/p90/p99/max.
//!
//! `cargo bench -p galley --bench apply_to_sinks` (`ROUNDS`, default 300; `SINKS`, default 10).
//! `cargo test -p galley --bench apply_to_sinks` runs 20 rounds as a smoke test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Galley, benching, ms, quantile, spawn_sink};
use mesh_proto::config::Kind;
use tokio::sync::{mpsc, watch};

/// The VirtualService of round `round`: reviews split between v1 and v3, marked with the round.
fn virtual_service(round: u64) -> String {
    let w3 = round % 100;
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
  labels:
    round: \"{round}\"
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: {}
    - destination:
        host: reviews
        subset: v3
      weight: {w3}
",
        100 - w3
    )
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Waits until `sinks` distinct sinks have reported `round`.
async fn wait_all(rx: &mut mpsc::UnboundedReceiver<(usize, u64)>, round: u64, sinks: usize) {
    let mut got = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.len() < sinks {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((i, r))) if r == round => {
                got.insert(i);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!(
                "round {round}: only {} of {sinks} sinks got it in time",
                got.len()
            ),
        }
    }
}

#[tokio::main]
async fn main() {
    let rounds = env_or("ROUNDS", if benching() { 300 } else { 20 });
    let sinks = env_or("SINKS", 10) as usize;
    let galley = Galley::start().await;
    let http = reqwest::Client::new();

    // Bookinfo's services and destination rules, so every push carries a realistic snapshot.
    let samples = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/istio/valid/samples/bookinfo");
    for f in [
        "platform/kube/bookinfo.yaml",
        "networking/destination-rule-all.yaml",
        "networking/bookinfo-gateway.yaml",
    ] {
        if let Ok(text) = std::fs::read_to_string(samples.join(f)) {
            galley.apply(&http, f, text).await;
        }
    }
    galley.apply(&http, "round-0", virtual_service(0)).await;

    // Every sink reports (sink, round) for each VirtualService state it decodes.
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(usize, u64)>();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for i in 0..sinks {
        let tx = seen_tx.clone();
        let handler = move |u: mesh_proto::mcp::sink::Update| {
            if u.kind == Kind::VirtualService
                && let Some(vs) = u.objects.iter().find(|o| o.metadata.name == "reviews")
                && let Some(r) = vs.metadata.labels.get("round").and_then(|r| r.parse().ok())
            {
                let _ = tx.send((i, r));
            }
            Ok(())
        };
        tasks.push(spawn_sink(
            galley.mcp,
            format!("bench-sink-{i}"),
            handler,
            stop_rx.clone(),
        ));
    }
    wait_all(&mut seen_rx, 0, sinks).await;
    println!("{sinks} sinks connected and synced; {rounds} rounds");

    let mut to_sinks = Vec::with_capacity(rounds as usize);
    let mut applies = Vec::with_capacity(rounds as usize);
    for round in 1..=rounds {
        let started = Instant::now();
        galley
            .apply(&http, "reviews.yaml", virtual_service(round))
            .await;
        applies.push(started.elapsed());
        wait_all(&mut seen_rx, round, sinks).await;
        to_sinks.push(started.elapsed());
    }
    to_sinks.sort();
    applies.sort();
    for (what, v) in [
        ("apply request → all sinks have the new version", &to_sinks),
        ("apply request itself (validate, durable store)", &applies),
    ] {
        println!(
            "{what}: n={} p50 {} p90 {} p99 {} max {}",
            v.len(),
            ms(quantile(v, 0.5)),
            ms(quantile(v, 0.9)),
            ms(quantile(v, 0.99)),
            ms(*v.last().unwrap()),
        );
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    galley.stop().await;
}
