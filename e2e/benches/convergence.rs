//! Apply → effect latency of the whole control plane, on the real processes.
//!
//! Starts `meshctl up --demo`, then ROUNDS times applies a VirtualService sending reviews to one
//! subset (alternating v1 and v3) with `meshctl apply`, and from the moment the apply is
//! acknowledged (galley has stored it durably) polls the ingress every millisecond until a reply
//! shows the new reviews version. That interval covers galley → MCP → pilot → ADS → proxy apply,
//! plus one request through ingress, productpage and reviews. Prints p50/p90/p99/max, and the time
//! `meshctl apply` itself took (process start, parse, validate, durable store).
//!
//! Run (uses the release binaries):
//!   cargo build --release --workspace --bins && cargo bench -p e2e --bench convergence
//! `ROUNDS=N` changes the number of rounds (default 40).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Mesh, http};

fn reviews_to(subset: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata:\n  name: reviews\n  namespace: default\nspec:\n  hosts:\n  - reviews\n  http:\n  - route:\n    - destination:\n        host: reviews\n        subset: {subset}\n"
    )
}

/// The reviews version a productpage reply shows, if the reply is a full call tree.
fn reviews_version(body: &serde_json::Value) -> Option<String> {
    body["calls"]
        .as_array()?
        .iter()
        .find(|c| c["service"] == "reviews")?["version"]
        .as_str()
        .map(str::to_string)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut xs: Vec<Duration>) {
    xs.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name}: n={} p50={:.1} ms p90={:.1} ms p99={:.1} ms max={:.1} ms",
        xs.len(),
        ms(percentile(&xs, 0.50)),
        ms(percentile(&xs, 0.90)),
        ms(percentile(&xs, 0.99)),
        ms(xs[xs.len() - 1]),
    );
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let mesh = Mesh::start_demo();
    let url = format!("{}/productpage", mesh.ingress());
    let client = http();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut convergence = Vec::with_capacity(rounds);
    let mut apply_times = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let subset = if round % 2 == 0 { "v1" } else { "v3" };
        let file = dir.path().join(format!("reviews-{subset}.yaml"));
        std::fs::write(&file, reviews_to(subset)).expect("write VirtualService");
        let file = file.to_string_lossy().into_owned();
        let started = Instant::now();
        let out = mesh.meshctl(&["apply", "-f", &file]);
        assert!(out.status.success(), "meshctl apply failed: {out:?}");
        let applied = Instant::now();
        apply_times.push(applied - started);
        let deadline = applied + Duration::from_secs(30);
        loop {
            assert!(
                Instant::now() < deadline,
                "round {round}: no convergence in 30 s"
            );
            let reply = client.get(&url).send().await;
            if let Ok(r) = reply
                && let Ok(body) = r.json::<serde_json::Value>().await
                && reviews_version(&body).as_deref() == Some(subset)
            {
                convergence.push(applied.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    summary(
        "apply acknowledged -> ingress follows new route",
        convergence,
    );
    summary(
        "meshctl apply (process, validate, durable store)",
        apply_times,
    );
}
