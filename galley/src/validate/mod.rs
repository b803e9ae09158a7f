//! Validation: every document is checked on its own (envelope, names, typed spec, semantic
//! rules of its kind) and every problem is reported with file, line, object and field path.

mod check;
mod error;
mod names;
mod rules;

pub use check::{
    Checked, Report, Skipped, ValidObject, check_document, check_text, normalize_namespace,
};
pub use error::ValidationError;
pub use names::{dns1123_label_problem, dns1123_subdomain_problem};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
