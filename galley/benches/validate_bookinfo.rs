//! Validation throughput on the Bookinfo mix: every file under
//! `../shared/conformance/istio/valid/samples/bookinfo/` is parsed and checked, over and over,
//! on one thread; prints resources/s for parse+validate and for validate alone.
//!
//! `cargo bench -p galley --bench validate_bookinfo` (release figures);
//! `BENCH_SECONDS=1 cargo run -p galley --bench validate_bookinfo`-style debug smoke runs:
//! `cargo test -p galley --bench validate_bookinfo` runs it once, briefly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use galley::source::{Document, parse_text};
use galley::validate::{Checked, check_document, check_documents};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, out);
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            out.push(p);
        }
    }
}

/// Runs `round` (which checks `per_round` resources) until `budget` is spent; resources/s.
fn measure(budget: Duration, per_round: usize, mut round: impl FnMut()) -> (f64, u64) {
    let started = Instant::now();
    let mut rounds = 0u64;
    while rounds == 0 || started.elapsed() < budget {
        round();
        rounds += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    ((rounds as f64 * per_round as f64) / secs, rounds)
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/istio/valid/samples/bookinfo");
    if !dir.is_dir() {
        println!("skipped: {} not found", dir.display());
        return;
    }
    // `cargo test --benches` passes no `--bench`: keep that run short.
    let benching = std::env::args().any(|a| a == "--bench");
    let seconds: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if benching { 5.0 } else { 0.2 });
    let budget = Duration::from_secs_f64(seconds);

    let mut paths = Vec::new();
    files(&dir, &mut paths);
    let texts: Vec<(String, String)> = paths
        .iter()
        .map(|p| (p.display().to_string(), std::fs::read_to_string(p).unwrap()))
        .collect();
    let docs: Vec<Document> = texts
        .iter()
        .flat_map(|(f, t)| parse_text(f, t))
        .map(Result::unwrap)
        .collect();
    let (mut valid, mut skipped) = (0, 0);
    for d in &docs {
        match check_document(d) {
            Checked::Valid(_) => valid += 1,
            Checked::Skipped(_) => skipped += 1,
            Checked::Invalid(e) => panic!("a Bookinfo document is rejected: {}", e[0]),
        }
    }
    galley::validate::init_schemas().unwrap();
    println!(
        "bookinfo mix: {} files, {} documents ({valid} resources checked, {skipped} of kinds galley skips)",
        texts.len(),
        docs.len()
    );

    let (rate, rounds) = measure(budget, docs.len(), || {
        for (f, t) in &texts {
            std::hint::black_box(check_documents(f, t));
        }
    });
    println!(
        "parse+validate: {rate:.0} resources/s ({} documents x {rounds} rounds, one thread)",
        docs.len()
    );
    let (rate, rounds) = measure(budget, docs.len(), || {
        for d in &docs {
            std::hint::black_box(check_document(d));
        }
    });
    println!(
        "validate only:  {rate:.0} resources/s ({} documents x {rounds} rounds, one thread)",
        docs.len()
    );
}
