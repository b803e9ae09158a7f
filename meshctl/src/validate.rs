//! `meshctl validate -f FILE|DIR ... [--output json]`: checks configuration files offline with
//! Galley's own validation (no running mesh needed).
//!
//! Exit codes: 0 every document valid, 1 some document invalid, 2 some input unreadable.

use std::io::Write;
use std::path::PathBuf;

use galley::source::read_config_file;
use galley::validate::{DocumentOutcome, check_documents};
use serde::Serialize;

use crate::apply::collect;

/// Every document valid.
pub const EXIT_VALID: i32 = 0;
/// At least one document invalid.
pub const EXIT_INVALID: i32 = 1;
/// At least one input could not be read.
pub const EXIT_UNREADABLE: i32 = 2;

/// Output forms of `meshctl validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// One line per error: `file:line: Kind ns/name: field: message`.
    Text,
    /// A JSON array, one entry per document.
    Json,
}

/// Flags of `meshctl validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// A YAML/JSON file, or a directory read recursively (`*.yaml`, `*.yml`, `*.json`); repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        env = "MESH_VALIDATE_FILES",
        required = true,
        value_delimiter = ','
    )]
    pub files: Vec<PathBuf>,

    /// Output form: `text` (one line per error) or `json` (one entry per document).
    #[arg(
        short = 'o',
        long = "output",
        env = "MESH_VALIDATE_OUTPUT",
        value_enum,
        default_value = "text"
    )]
    pub output: Output,
}

/// One error of a document in the JSON output.
#[derive(Debug, Serialize)]
pub struct JsonError {
    pub field: String,
    pub message: String,
}

/// One document in the JSON output.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonDocument {
    pub file: String,
    pub line: usize,
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub valid: bool,
    pub errors: Vec<JsonError>,
    /// Why the document was not checked (a kind the mesh does not handle); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl From<&DocumentOutcome> for JsonDocument {
    fn from(o: &DocumentOutcome) -> JsonDocument {
        JsonDocument {
            file: o.file.clone(),
            line: o.line,
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
            namespace: o.namespace.clone(),
            name: o.name.clone(),
            valid: !o.is_invalid(),
            errors: o
                .errors()
                .iter()
                .map(|e| JsonError {
                    field: e.field.clone(),
                    message: e.message.clone(),
                })
                .collect(),
            skipped: o.skipped_reason().map(str::to_string),
        }
    }
}

/// Validates every file `args` names, writing the report to `out` and problems reading input to
/// `err`; returns the exit code.
pub fn run(args: &ValidateArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut unreadable = false;
    let mut outcomes = Vec::new();
    for path in &args.files {
        let files = match collect(path) {
            Ok(f) if f.is_empty() => {
                let _ = writeln!(
                    err,
                    "meshctl: no *.yaml, *.yml or *.json file in {}",
                    path.display()
                );
                unreadable = true;
                continue;
            }
            Ok(f) => f,
            Err(e) => {
                let _ = writeln!(err, "meshctl: {e}");
                unreadable = true;
                continue;
            }
        };
        for file in files {
            match read_config_file(&file) {
                Ok(text) => outcomes.extend(check_documents(&file.display().to_string(), &text)),
                Err(e) => {
                    let _ = writeln!(err, "meshctl: {e}");
                    unreadable = true;
                }
            }
        }
    }
    let invalid = outcomes.iter().filter(|o| o.is_invalid()).count();
    tracing::debug!(documents = outcomes.len(), invalid, unreadable, "validated");
    let written = match args.output {
        Output::Text => outcomes
            .iter()
            .flat_map(DocumentOutcome::errors)
            .try_for_each(|e| writeln!(out, "{e}")),
        Output::Json => {
            let docs: Vec<JsonDocument> = outcomes.iter().map(JsonDocument::from).collect();
            serde_json::to_writer_pretty(&mut *out, &docs)
                .map_err(std::io::Error::other)
                .and_then(|()| writeln!(out))
        }
    };
    if let Err(e) = written {
        let _ = writeln!(err, "meshctl: cannot write the report: {e}");
        return EXIT_UNREADABLE;
    }
    if args.output == Output::Text {
        let _ = writeln!(
            err,
            "{} document(s) checked, {invalid} invalid",
            outcomes.len()
        );
    }
    if unreadable {
        EXIT_UNREADABLE
    } else if invalid > 0 {
        EXIT_INVALID
    } else {
        EXIT_VALID
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const VALID: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: prod}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n";
    const INVALID: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ratings}\nspec:\n  hosts: [ratings]\n  http:\n  - route:\n    - destination: {host: ratings}\n      weight: 150\n";

    fn validate(files: Vec<PathBuf>, output: Output) -> (i32, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(&ValidateArgs { files, output }, &mut out, &mut err);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn exit_codes() {
        let dir = tempfile::tempdir().unwrap();
        let valid = dir.path().join("valid.yaml");
        let invalid = dir.path().join("sub/invalid.yaml");
        std::fs::write(&valid, VALID).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(&invalid, INVALID).unwrap();

        let (code, out, _) = validate(vec![valid.clone()], Output::Text);
        assert_eq!((code, out.as_str()), (EXIT_VALID, ""));

        let (code, out, _) = validate(vec![dir.path().to_path_buf()], Output::Text);
        assert_eq!(code, EXIT_INVALID);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        assert!(
            lines[0].starts_with(&format!(
                "{}:1: VirtualService default/ratings: spec.http[0].route[0].weight: ",
                invalid.display()
            )),
            "{out}"
        );

        let (code, _, err) = validate(vec![valid, dir.path().join("missing.yaml")], Output::Text);
        assert_eq!(code, EXIT_UNREADABLE);
        assert!(err.contains("missing.yaml"), "{err}");

        let empty = tempfile::tempdir().unwrap();
        let (code, _, _) = validate(vec![empty.path().to_path_buf()], Output::Json);
        assert_eq!(code, EXIT_UNREADABLE);
    }

    #[test]
    fn json_has_one_entry_per_document() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("all.yaml");
        std::fs::write(&file, format!("{VALID}---\n{INVALID}---\n[not: valid\n")).unwrap();
        let (code, out, _) = validate(vec![file.clone()], Output::Json);
        assert_eq!(code, EXIT_INVALID);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let docs = v.as_array().unwrap();
        assert_eq!(docs.len(), 4, "{out}");
        let f = file.display().to_string();
        assert_eq!(
            docs[0],
            serde_json::json!({"file": f, "line": 1, "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService", "namespace": "prod", "name": "reviews",
                "valid": true, "errors": []})
        );
        assert_eq!(docs[1]["kind"], "Deployment");
        assert_eq!(docs[1]["valid"], true);
        assert!(docs[1]["skipped"].as_str().unwrap().contains("Deployment"));
        assert_eq!(docs[2]["valid"], false);
        assert_eq!(docs[2]["line"], 14);
        assert_eq!(docs[2]["namespace"], "default");
        assert_eq!(
            docs[2]["errors"][0]["field"],
            "spec.http[0].route[0].weight"
        );
        assert!(docs[2]["errors"][0]["message"].as_str().unwrap().len() > 3);
        assert_eq!(docs[3]["valid"], false);
        assert_eq!(docs[3]["kind"], "");
    }
}
