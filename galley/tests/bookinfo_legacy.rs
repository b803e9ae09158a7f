//! Istio 1.4's Bookinfo policy and telemetry samples (`../shared/conformance/istio-1.4/
//! samples/bookinfo/{policy,telemetry}/`), unchanged: every document is accepted, or skipped
//! with a reason when its kind is not one the mesh serves (a Deployment, the `fluentd` adapter
//! Mixer does not implement); none is an error. The `*-crd.yaml` files use the legacy Mixer
//! kinds (`kind: denier`, `kind: checknothing`, ...), served as `Kind::Legacy`.
//!
//! Set `MESH_SKIP_CONFORMANCE=1` to skip when the folder is not there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use galley::validate::check_text;
use mesh_proto::config::{Kind, LegacyKind};

fn samples() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/istio-1.4/samples/bookinfo");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("MESH_SKIP_CONFORMANCE").is_some(),
        "{} is missing (set MESH_SKIP_CONFORMANCE=1 to skip)",
        dir.display()
    );
    None
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_policy_and_telemetry_sample_is_accepted_or_skipped_with_a_reason() {
    let Some(root) = samples() else { return };
    let mut files = 0;
    let mut accepted = 0;
    let mut legacy_kinds = BTreeSet::new();
    let mut skipped = BTreeSet::new();
    let mut crd_files = 0;
    for sub in ["policy", "telemetry"] {
        for path in yaml_files(&root.join(sub)) {
            files += 1;
            let name = path.display().to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            let report = check_text(&name, &text);
            assert!(report.errors.is_empty(), "{name}: {:#?}", report.errors);
            for s in &report.skipped {
                assert!(!s.reason.is_empty(), "{name}: skipped without a reason");
                skipped.insert((s.kind.clone(), s.reason.clone()));
            }
            let is_crd_file = name.ends_with("-crd.yaml");
            if is_crd_file {
                crd_files += 1;
            }
            for o in &report.objects {
                accepted += 1;
                if let Kind::Legacy(l) = o.kind {
                    legacy_kinds.insert(l);
                }
            }
            // A `*-crd.yaml` file is entirely mesh kinds, legacy ones included (the fluentd
            // sample aside: the mesh's Mixer has no fluentd adapter).
            if is_crd_file && !name.ends_with("fluentd-istio-crd.yaml") {
                assert!(report.skipped.is_empty(), "{name}: {:?}", report.skipped);
                assert!(
                    report
                        .objects
                        .iter()
                        .any(|o| matches!(o.kind, Kind::Legacy(_))),
                    "{name}: no legacy kind"
                );
            }
        }
    }
    println!(
        "{files} files, {accepted} objects accepted, legacy kinds {legacy_kinds:?}, skipped {skipped:?}"
    );
    assert_eq!(crd_files, 8);
    let want: BTreeSet<LegacyKind> = [
        LegacyKind::Denier,
        LegacyKind::ListChecker,
        LegacyKind::MemQuota,
        LegacyKind::Prometheus,
        LegacyKind::Stdio,
        LegacyKind::Quota,
        LegacyKind::Metric,
        LegacyKind::LogEntry,
        LegacyKind::CheckNothing,
        LegacyKind::ListEntry,
    ]
    .into();
    assert_eq!(legacy_kinds, want);
    // Only kinds the mesh does not serve are skipped.
    let skipped_kinds: BTreeSet<&str> = skipped.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        skipped_kinds,
        ["Deployment", "fluentd"]
            .into_iter()
            .collect::<BTreeSet<_>>()
    );
}

#[test]
fn deny_label_crd_sample_is_three_mesh_objects() {
    let Some(root) = samples() else { return };
    let path = root.join("policy/mixer-rule-deny-label-crd.yaml");
    let report = check_text("deny", &std::fs::read_to_string(path).unwrap());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let got: Vec<(Kind, String, String)> = report
        .objects
        .iter()
        .map(|o| {
            (
                o.kind,
                o.object.metadata.namespace.clone(),
                o.object.metadata.name.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                Kind::Legacy(LegacyKind::Denier),
                "default".into(),
                "denyreviewsv3handler".into()
            ),
            (
                Kind::Legacy(LegacyKind::CheckNothing),
                "default".into(),
                "denyreviewsv3request".into()
            ),
            (Kind::Rule, "default".into(), "denyreviewsv3".into()),
        ]
    );
}

fn errors(yaml: &str) -> Vec<String> {
    let report = check_text("t.yaml", yaml);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    report
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect()
}

#[test]
fn legacy_instances_params_are_expressions_and_the_envelope_is_closed() {
    // A template instance's spec is its params: every string is an attribute expression.
    let bad = errors(
        r#"
apiVersion: config.istio.io/v1alpha2
kind: listentry
metadata: {name: appversion, namespace: default}
spec:
  value: source.labels["version"
"#,
    );
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].starts_with("spec.value: invalid expression"),
        "{bad:?}"
    );
    let nested = errors(
        r#"
apiVersion: config.istio.io/v1alpha2
kind: metric
metadata: {name: requestcount}
spec:
  value: "1"
  dimensions:
    source: source.service | "unknown" ==
"#,
    );
    assert_eq!(nested.len(), 1, "{nested:?}");
    assert!(
        nested[0].starts_with("spec.dimensions.source:"),
        "{nested:?}"
    );

    // Adapter params are not expressions (a denier's status message is text).
    assert!(
        errors(
            r#"
apiVersion: config.istio.io/v1alpha2
kind: denier
metadata: {name: h}
spec:
  status: {code: 7, message: "Not allowed ("}
"#
        )
        .is_empty()
    );

    // The CRD's spec is open, the object around it is not.
    let unknown = errors(
        r#"
apiVersion: config.istio.io/v1alpha2
kind: memquota
metadata: {name: handler}
spec: {quotas: [{name: q, maxAmount: 5}]}
specs: {}
"#,
    );
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    // Only v1alpha2 is served, as in Istio 1.4.
    let report = check_text(
        "t.yaml",
        "apiVersion: config.istio.io/v1beta1\nkind: denier\nmetadata: {name: h}\n",
    );
    assert_eq!(report.skipped.len(), 1);
    // `spec:` left empty (null), as the checknothing samples write it.
    let report = check_text(
        "t.yaml",
        "apiVersion: config.istio.io/v1alpha2\nkind: checknothing\nmetadata: {name: c}\nspec:\n",
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.objects.len(), 1);
}
