//! Per-document outcomes: which object each document of a text is and what checking it found
//! (what `meshctl validate` and the conformance test report, one entry per document).

use mesh_proto::config::Kind;
use serde_json::Value;

use super::check::{Checked, check_document};
use super::error::ValidationError;
use crate::source::{Document, ParseError, parse_text};

/// One document of a text, identified, with its verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentOutcome {
    pub file: String,
    /// 1-based line of the document's first content line (of the parse error for unreadable
    /// documents).
    pub line: usize,
    pub api_version: String,
    pub kind: String,
    /// The namespace the object would be stored under (`default` filled in for namespaced kinds).
    pub namespace: String,
    pub name: String,
    pub checked: Checked,
}

impl DocumentOutcome {
    /// The document's errors (empty when valid or skipped).
    pub fn errors(&self) -> &[ValidationError] {
        match &self.checked {
            Checked::Invalid(errs) => errs,
            _ => &[],
        }
    }

    /// Whether the document was rejected.
    pub fn is_invalid(&self) -> bool {
        matches!(self.checked, Checked::Invalid(_))
    }

    /// Why the document was skipped, when it was.
    pub fn skipped_reason(&self) -> Option<&str> {
        match &self.checked {
            Checked::Skipped(s) => Some(&s.reason),
            _ => None,
        }
    }

    /// A document that could not be parsed: invalid, with the parse error.
    pub fn unreadable(e: ParseError) -> DocumentOutcome {
        DocumentOutcome {
            file: e.file.clone(),
            line: e.line,
            api_version: String::new(),
            kind: String::new(),
            namespace: String::new(),
            name: String::new(),
            checked: Checked::Invalid(vec![ValidationError {
                file: e.file,
                line: e.line,
                kind: String::new(),
                namespace: String::new(),
                name: String::new(),
                field: String::new(),
                message: e.message,
            }]),
        }
    }

    /// Checks one parsed document and names it.
    pub fn of(doc: &Document) -> DocumentOutcome {
        let field = |path: &[&str]| {
            path.iter()
                .try_fold(&doc.value, |v, k| v.get(k))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let api_version = field(&["apiVersion"]);
        let kind = field(&["kind"]);
        let name = field(&["metadata", "name"]);
        let checked = check_document(doc);
        let namespace = match &checked {
            Checked::Valid(v) => v.object.metadata.namespace.clone(),
            _ => {
                let raw = field(&["metadata", "namespace"]);
                match Kind::from_type(&api_version, &kind) {
                    Some(k) if !k.info().namespaced => String::new(),
                    Some(_) if raw.is_empty() => "default".to_string(),
                    _ => raw,
                }
            }
        };
        DocumentOutcome {
            file: doc.file.clone(),
            line: doc.line,
            api_version,
            kind,
            namespace,
            name,
            checked,
        }
    }
}

/// Parses `text` (named `file`) and checks each of its documents; a document that cannot be
/// parsed is an invalid outcome with the parse error.
pub fn check_documents(file: &str, text: &str) -> Vec<DocumentOutcome> {
    parse_text(file, text)
        .into_iter()
        .map(|doc| match doc {
            Ok(doc) => DocumentOutcome::of(&doc),
            Err(e) => DocumentOutcome::unreadable(e),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn one_outcome_per_document_with_identity() {
        let text = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec: {host: ''}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: prod}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n---\na: [b\n";
        let out = check_documents("f.yaml", text);
        assert_eq!(out.len(), 4);
        assert!(out[0].is_invalid());
        assert_eq!(
            (
                out[0].kind.as_str(),
                out[0].namespace.as_str(),
                out[0].name.as_str()
            ),
            ("DestinationRule", "default", "r")
        );
        assert_eq!(out[0].errors()[0].field, "spec.host");
        assert_eq!(out[1].line, 6);
        assert!(out[1].skipped_reason().unwrap().contains("Deployment"));
        assert_eq!(out[1].namespace, "prod");
        assert!(matches!(out[2].checked, Checked::Valid(_)));
        assert_eq!(out[2].namespace, "");
        assert!(out[3].is_invalid());
        assert!(out[3].kind.is_empty());
        assert!(out[3].line >= 13);
    }
}
