//! The validation error: where, which object, which field, why.

use serde::{Deserialize, Serialize};

/// One problem found in a document. The same text appears in the apply API, the logs and
/// `meshctl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationError {
    pub file: String,
    pub line: usize,
    /// The document's `kind` (empty when it could not be read).
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Field path, e.g. `spec.http[0].route[1].weight` (empty for the document as a whole).
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for ValidationError {
    /// `bookinfo.yaml:12: VirtualService default/reviews: spec.http[0].route[1].weight: <reason>`;
    /// an object that came from no file (the admission webhook) has no `file:line: ` prefix.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.file.is_empty() {
            write!(f, "{}:{}: ", self.file, self.line)?;
        }
        if !self.kind.is_empty() {
            write!(f, "{}", self.kind)?;
            match (self.namespace.is_empty(), self.name.is_empty()) {
                (_, true) => {}
                (true, false) => write!(f, " {}", self.name)?,
                (false, false) => write!(f, " {}/{}", self.namespace, self.name)?,
            }
            write!(f, ": ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ValidationError {}

/// Where a document came from and which object it is: the context every error of it shares.
#[derive(Debug, Clone, Default)]
pub(crate) struct ErrorContext {
    pub file: String,
    pub line: usize,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ErrorContext {
    pub fn error(&self, field: impl Into<String>, message: impl Into<String>) -> ValidationError {
        ValidationError {
            file: self.file.clone(),
            line: self.line,
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            field: field.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_object_and_field() {
        let e = ValidationError {
            file: "bookinfo.yaml".into(),
            line: 12,
            kind: "VirtualService".into(),
            namespace: "default".into(),
            name: "reviews".into(),
            field: "spec.http[0].route[1].weight".into(),
            message: "must be between 0 and 100".into(),
        };
        assert_eq!(
            e.to_string(),
            "bookinfo.yaml:12: VirtualService default/reviews: spec.http[0].route[1].weight: must be between 0 and 100"
        );
        let bare = ValidationError {
            kind: String::new(),
            field: String::new(),
            message: "bad yaml".into(),
            ..e
        };
        assert_eq!(bare.to_string(), "bookinfo.yaml:12: bad yaml");
        let fileless = ValidationError {
            file: String::new(),
            kind: "Gateway".into(),
            ..bare
        };
        assert_eq!(fileless.to_string(), "Gateway default/reviews: bad yaml");
    }
}
