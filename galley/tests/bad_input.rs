//! Bad input on the parse → validate path: a YAML bomb, a huge text, deep nesting and garbage
//! each get a clear error quickly; random bytes and random mutations of valid Istio YAML never
//! panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use galley::source::{MAX_DEPTH, MAX_TEXT_BYTES};
use galley::validate::{DocumentOutcome, check_documents, check_text};
use proptest::prelude::*;

/// Checks `text` and returns its outcomes, asserting it took less than `limit`.
fn timed(text: &str, limit: Duration) -> Vec<DocumentOutcome> {
    let started = Instant::now();
    let out = check_documents("bad.yaml", text);
    let took = started.elapsed();
    assert!(took < limit, "took {took:?}");
    out
}

fn single_error(out: &[DocumentOutcome]) -> String {
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0].is_invalid());
    out[0].errors()[0].to_string()
}

#[test]
fn billion_laughs_is_refused() {
    let mut text = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
    let mut prev = "a";
    for n in names {
        let refs = vec![format!("*{prev}"); 9].join(",");
        text.push_str(&format!("{n}: &{n} [{refs}]\n"));
        prev = n;
    }
    text.push_str("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec: {hosts: [*i]}\n");
    let e = single_error(&timed(&text, Duration::from_secs(5)));
    assert!(e.starts_with("bad.yaml:"), "{e}");
    assert!(
        e.to_lowercase().contains("budget") || e.contains("alias"),
        "{e}"
    );
}

#[test]
fn a_text_over_the_size_limit_is_refused_whole() {
    let line = "# padding padding padding padding padding padding padding padding\n";
    let text = line.repeat(100 * 1024 * 1024 / line.len());
    assert!(text.len() > MAX_TEXT_BYTES);
    let e = single_error(&timed(&text, Duration::from_secs(2)));
    assert!(e.contains("at most 8388608 bytes"), "{e}");
}

#[test]
fn deep_nesting_is_refused_in_yaml_and_json() {
    let deep = 10_000;
    let flow = format!("a: {}1{}\n", "[".repeat(deep), "]".repeat(deep));
    let e = single_error(&timed(&flow, Duration::from_secs(5)));
    assert!(e.starts_with("bad.yaml:1:"), "{e}");
    // Block sequences nested on one line (`- - - ... 1`).
    let block = format!("{}1\n", "- ".repeat(deep));
    let e = single_error(&timed(&block, Duration::from_secs(5)));
    assert!(e.contains("depth") || e.contains("nest"), "{e}");
    let json = format!("{}{}", "{\"a\":".repeat(deep), "}".repeat(deep));
    let e = single_error(&timed(&json, Duration::from_secs(5)));
    assert!(e.contains(&format!("at most {MAX_DEPTH} levels")), "{e}");
    // Right at the limit is fine for JSON.
    let ok = format!("{}1{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    assert!(
        !check_documents("ok.json", &ok)[0].errors()[0]
            .message
            .contains("levels")
    );
}

#[test]
fn garbage_gets_a_parse_error() {
    let garbage = "\u{1}\u{2}{{{]]]: : :\n\t- -\u{7f}%%%\n---\n@@@";
    let out = timed(garbage, Duration::from_secs(2));
    assert!(!out.is_empty());
    assert!(out.iter().all(DocumentOutcome::is_invalid));
    for o in &out {
        assert!(!o.errors()[0].message.is_empty());
    }
}

const VALID: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /v2}
      headers:
        end-user: {exact: jason}
    route:
    - destination: {host: reviews, subset: v2}
      weight: 75
    - destination: {host: reviews, subset: v1}
      weight: 25
    timeout: 5s
    retries: {attempts: 3, perTryTimeout: 2s}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 100}}
    outlierDetection: {consecutive5xxErrors: 7, interval: 5m}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/sleep"]}}]
    to: [{operation: {methods: [GET]}}]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny}
spec:
  match: destination.labels["app"] == "ratings"
  actions: [{handler: denier, instances: [nothing]}]
"#;

#[test]
fn the_mutation_seed_is_valid() {
    let r = check_text("seed.yaml", VALID);
    assert!(r.is_valid(), "{:?}", r.errors);
    assert_eq!(r.objects.len(), 4);
}

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, String),
    Replace(usize, char),
    Duplicate(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let pieces = prop_oneof![
        Just(": ".to_string()),
        Just("\n- ".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("{".to_string()),
        Just("]".to_string()),
        Just("\n---\n".to_string()),
        Just("~".to_string()),
        Just("\"".to_string()),
        Just("99999999999999999999".to_string()),
        Just("-1".to_string()),
        any::<String>(),
    ];
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), pieces).prop_map(|(a, s)| Edit::Insert(a, s)),
        (any::<usize>(), any::<char>()).prop_map(|(a, c)| Edit::Replace(a, c)),
        (any::<usize>(), 1usize..200).prop_map(|(a, n)| Edit::Duplicate(a, n)),
    ]
}

/// Applies `edits` to the seed on char boundaries.
fn mutate(edits: &[Edit]) -> String {
    let mut chars: Vec<char> = VALID.chars().collect();
    for e in edits {
        let len = chars.len().max(1);
        match e {
            Edit::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(chars.len());
                chars.drain(at.min(chars.len())..end);
            }
            Edit::Insert(at, s) => {
                let at = (at % len).min(chars.len());
                chars.splice(at..at, s.chars());
            }
            Edit::Replace(at, c) => {
                if !chars.is_empty() {
                    chars[at % len] = *c;
                }
            }
            Edit::Duplicate(at, n) => {
                let at = (at % len).min(chars.len());
                let end = (at + n).min(chars.len());
                let copy: Vec<char> = chars[at..end].to_vec();
                chars.splice(at..at, copy);
            }
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let text = String::from_utf8_lossy(&bytes);
        let out = check_documents("random.yaml", &text);
        for o in &out {
            for e in o.errors() {
                prop_assert!(!e.message.is_empty());
            }
        }
    }

    #[test]
    fn mutated_istio_yaml_never_panics(edits in proptest::collection::vec(edit(), 1..8)) {
        let text = mutate(&edits);
        let _ = check_documents("mutated.yaml", &text);
        let _ = check_text("mutated.yaml", &text);
    }
}
