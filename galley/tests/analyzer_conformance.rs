//! `istioctl analyze` conformance: every `ACCEPT_THEN_ANALYZER_FLAGS` file of
//! `../shared/conformance/istio` is analyzed alone, and its findings (code + object) are compared
//! with the messages Istio's analyzer tests expect (`index.json`, `reasons`). Prints the counts
//! and ratchets the number matched.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use galley::analyze::{analyze, objects_from_documents};
use galley::source::parse_text;
use serde_json::Value;

/// Expected (code, object) pairs found; raise it when the analyzers improve, never lower it.
const MATCHED_FLOOR: usize = 72;

fn root() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/istio");
    dir.is_dir().then_some(dir)
}

/// `VirtualService httpbin` and `VirtualService default/httpbin` name the same object.
fn normalize(origin: &str) -> String {
    match origin.split_once(' ') {
        Some((kind, name)) if !name.contains('/') => format!("{kind} default/{name}"),
        _ => origin.to_string(),
    }
}

#[test]
fn analyzer_codes_match_istio() {
    let Some(root) = root() else {
        eprintln!("skipped: ../shared/conformance/istio not found");
        return;
    };
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("index.json")).unwrap()).unwrap();
    let (mut expected_total, mut matched, mut extra) = (0, 0, 0);
    let mut missed_codes = std::collections::BTreeMap::<String, usize>::new();
    for entry in index["entries"].as_array().unwrap() {
        if entry["expect"] != "ACCEPT_THEN_ANALYZER_FLAGS" {
            continue;
        }
        let file = entry["file"].as_str().unwrap();
        let expected: BTreeSet<(String, String)> = entry["reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                Some((
                    r["code"].as_str()?.to_string(),
                    normalize(r["origin"].as_str()?),
                ))
            })
            .collect();
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let docs: Vec<_> = parse_text(file, &text)
            .into_iter()
            .filter_map(Result::ok)
            .collect();
        let found: BTreeSet<(String, String)> = analyze(&objects_from_documents(&docs))
            .into_iter()
            .map(|f| (f.code, format!("{} {}/{}", f.kind, f.namespace, f.name)))
            .collect();
        let hit = expected.intersection(&found).count();
        expected_total += expected.len();
        matched += hit;
        extra += found.difference(&expected).count();
        for (code, origin) in expected.difference(&found) {
            *missed_codes.entry(code.clone()).or_default() += 1;
            if found.iter().any(|(c, _)| c == code) {
                println!("missed {file}: {code} {origin}");
            }
        }
        for (code, origin) in found.difference(&expected) {
            println!("extra  {file}: {code} {origin}");
        }
        if hit > 0 {
            println!("match  {file}: {hit} of {}", expected.len());
        }
    }
    println!("missed by code: {missed_codes:?}");
    println!(
        "analyzer codes matched: {matched} of {expected_total} expected (floor {MATCHED_FLOOR}); findings Istio does not expect: {extra}"
    );
    assert!(
        matched >= MATCHED_FLOOR,
        "matched {matched} < floor {MATCHED_FLOOR}"
    );
}
