//! Conformance against real Istio configuration (`../shared/conformance`, see its README):
//! every Istio resource of `istio/valid/` accepted, every document of the files `istio/INDEX.md`
//! marks `REJECT` rejected (`_err` stripped), the Istio 1.4 galley dataset's `*-valid.yaml`
//! accepted and `*-invalid.yaml` rejected. Kinds that are not Istio's are skipped, not counted.
//!
//! Run with `cargo test -p galley --test conformance -- --nocapture` to see the table. Set
//! `MESH_SKIP_CONFORMANCE=1` to skip when the folder is not there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use galley::source::{Document, parse_text};
use galley::validate::DocumentOutcome;
use mesh_proto::config::Kind;
use serde_json::Value;

/// The ratchet: documents expected to be rejected that galley does reject. Raise it when more
/// rules land; it must never go down.
const REJECT_FLOOR: usize = 78;

/// The expectation for each document of one file.
type PerDocument<'a> = Box<dyn Fn(&DocumentOutcome) -> Expect + 'a>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Accept,
    Reject,
}

#[derive(Default)]
struct Tally {
    accepted_ok: usize,
    rejected_ok: usize,
    /// Valid documents that galley rejected (must stay empty).
    wrongly_rejected: Vec<String>,
    /// Invalid documents that galley accepted (the work list of missing rules).
    wrongly_accepted: Vec<String>,
    skipped: BTreeMap<String, usize>,
}

impl Tally {
    fn skip(&mut self, reason: String) {
        *self.skipped.entry(reason).or_default() += 1;
    }
}

fn root() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance");
    dir.is_dir().then_some(dir)
}

/// Why a document is not a case, or `None` when it is one: Istio resources galley knows, and
/// documents that are not resources at all (they must be rejected).
fn skip_reason(doc: &Document) -> Option<String> {
    let s = |k: &str| doc.value.get(k).and_then(Value::as_str).unwrap_or_default();
    let (api_version, kind) = (s("apiVersion"), s("kind"));
    if !doc.value.is_object() || api_version.is_empty() || kind.is_empty() {
        return None;
    }
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    if !group.ends_with("istio.io") {
        return Some(format!("not Istio: {api_version} {kind}"));
    }
    if Kind::from_type(api_version, kind).is_none() {
        return Some(format!(
            "Istio kind galley does not handle: {api_version} {kind}"
        ));
    }
    None
}

fn describe(o: &DocumentOutcome, base: &Path) -> String {
    let file = Path::new(&o.file)
        .strip_prefix(base)
        .map_or_else(|_| o.file.clone(), |p| p.display().to_string());
    let what = if o.kind.is_empty() {
        "document".to_string()
    } else if o.namespace.is_empty() {
        format!("{} {}", o.kind, o.name)
    } else {
        format!("{} {}/{}", o.kind, o.namespace, o.name)
    };
    format!("{file}:{}: {what}", o.line)
}

/// The documents of a file, each with its outcome (`_err` removed first); parse failures are
/// outcomes too.
fn outcomes(path: &Path) -> Vec<(Option<String>, DocumentOutcome)> {
    let text = std::fs::read_to_string(path).unwrap();
    let file = path.display().to_string();
    parse_text(&file, &text)
        .into_iter()
        .map(|doc| match doc {
            Ok(mut doc) => {
                if let Some(m) = doc.value.as_object_mut() {
                    m.remove("_err");
                }
                (skip_reason(&doc), DocumentOutcome::of(&doc))
            }
            Err(e) => (None, DocumentOutcome::unreadable(e)),
        })
        .collect()
}

fn record(t: &mut Tally, base: &Path, expect: Expect, o: &DocumentOutcome) {
    match (expect, o.is_invalid()) {
        (Expect::Accept, false) => t.accepted_ok += 1,
        (Expect::Reject, true) => t.rejected_ok += 1,
        (Expect::Accept, true) => {
            let errs: Vec<String> = o
                .errors()
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect();
            t.wrongly_rejected.push(format!(
                "{}: rejected: {}",
                describe(o, base),
                errs.join("; ")
            ));
        }
        (Expect::Reject, false) => t
            .wrongly_accepted
            .push(format!("{}: accepted", describe(o, base))),
    }
}

/// `istio/`: expectations from `index.json`.
fn istio_dataset(base: &Path) -> (Tally, Tally) {
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("istio/index.json")).unwrap())
            .unwrap();
    let (mut valid, mut reject) = (Tally::default(), Tally::default());
    for entry in index["entries"].as_array().unwrap() {
        let expect = entry["expect"].as_str().unwrap_or_default();
        let path = base.join("istio").join(entry["file"].as_str().unwrap());
        // REJECT_UNKNOWN_FIELD: only the documents the schema check flags are invalid.
        let flagged: Vec<&str> = entry["structural"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["errors"].as_array().is_some_and(|e| !e.is_empty()))
            .filter_map(|s| s["name"].as_str())
            .collect();
        let (tally, per_doc): (&mut Tally, PerDocument) = match expect {
            "ACCEPT" => (&mut valid, Box::new(|_| Expect::Accept)),
            "REJECT" => (&mut reject, Box::new(|_| Expect::Reject)),
            "REJECT_UNKNOWN_FIELD" => (
                &mut reject,
                Box::new(|o: &DocumentOutcome| {
                    if flagged.contains(&o.name.as_str()) {
                        Expect::Reject
                    } else {
                        Expect::Accept
                    }
                }),
            ),
            _ => continue,
        };
        for (skip, o) in outcomes(&path) {
            match skip {
                Some(reason) => tally.skip(reason),
                None => record(tally, base, per_doc(&o), &o),
            }
        }
    }
    (valid, reject)
}

/// `istio-1.4` galley dataset: `*-valid.yaml` per document; `*-invalid.yaml` per file (a file
/// may hold valid helper objects next to the invalid one: it must fail as a whole).
fn istio14_dataset(base: &Path) -> (Tally, Tally) {
    let dir = base.join("istio-1.4/galley/testdata/validation/dataset");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let (mut valid, mut invalid) = (Tally::default(), Tally::default());
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let docs = outcomes(&path);
        if name.ends_with("-valid.yaml") {
            for (skip, o) in docs {
                match skip {
                    Some(reason) => valid.skip(reason),
                    None => record(&mut valid, base, Expect::Accept, &o),
                }
            }
        } else if name.ends_with("-invalid.yaml") {
            let counted: Vec<&DocumentOutcome> = docs
                .iter()
                .filter(|(s, _)| s.is_none())
                .map(|(_, o)| o)
                .collect();
            if counted.is_empty() {
                for (s, _) in &docs {
                    invalid.skip(s.clone().unwrap_or_default());
                }
                continue;
            }
            match counted.iter().find(|o| o.is_invalid()) {
                Some(o) => record(&mut invalid, base, Expect::Reject, o),
                None => record(
                    &mut invalid,
                    base,
                    Expect::Reject,
                    counted[counted.len() - 1],
                ),
            }
        }
    }
    (valid, invalid)
}

#[test]
fn istio_conformance() {
    let Some(base) = root() else {
        let looked = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance");
        if std::env::var("MESH_SKIP_CONFORMANCE").as_deref() == Ok("1") {
            println!(
                "conformance folder {} missing: skipped (MESH_SKIP_CONFORMANCE=1)",
                looked.display()
            );
            return;
        }
        panic!(
            "conformance folder not found: looked in {} (set MESH_SKIP_CONFORMANCE=1 to skip)",
            looked.display()
        );
    };
    let base = base.canonicalize().unwrap();
    let (valid, reject) = istio_dataset(&base);
    let (v14, i14) = istio14_dataset(&base);
    let sets = [
        ("istio/valid (ACCEPT)", &valid),
        ("istio/invalid (REJECT*)", &reject),
        ("istio-1.4 *-valid", &v14),
        ("istio-1.4 *-invalid (per file)", &i14),
    ];
    println!(
        "\n{:<32} {:>8} {:>8} {:>6} {:>8}",
        "dataset", "accepted", "rejected", "wrong", "skipped"
    );
    for (name, t) in &sets {
        println!(
            "{:<32} {:>8} {:>8} {:>6} {:>8}",
            name,
            t.accepted_ok,
            t.rejected_ok,
            t.wrongly_rejected.len() + t.wrongly_accepted.len(),
            t.skipped.values().sum::<usize>()
        );
    }
    for (name, t) in &sets {
        for (reason, n) in &t.skipped {
            println!("skipped [{name}] {n} x {reason}");
        }
    }
    for (name, t) in &sets {
        for w in t.wrongly_rejected.iter().chain(&t.wrongly_accepted) {
            println!("WRONG [{name}] {w}");
        }
    }
    let rejected_ok = reject.rejected_ok + i14.rejected_ok;
    let should_reject = rejected_ok + reject.wrongly_accepted.len() + i14.wrongly_accepted.len();
    println!(
        "\nrejected as expected: {rejected_ok} of {should_reject} (floor {REJECT_FLOOR}); valid documents rejected: {}",
        valid.wrongly_rejected.len() + reject.wrongly_rejected.len() + v14.wrongly_rejected.len()
    );
    let wrongly_rejected: Vec<&String> =
        sets.iter().flat_map(|(_, t)| &t.wrongly_rejected).collect();
    assert!(
        wrongly_rejected.is_empty(),
        "valid documents rejected:\n{wrongly_rejected:#?}"
    );
    assert!(valid.accepted_ok > 150, "too few valid documents checked");
    assert!(
        rejected_ok >= REJECT_FLOOR,
        "rejections went down: {rejected_ok} < floor {REJECT_FLOOR}"
    );
}
