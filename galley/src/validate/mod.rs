//! Validation: every document is checked on its own (envelope, names, typed spec, semantic
//! rules of its kind) and every problem is reported with file, line, object and field path.

mod cel;
mod check;
mod error;
mod expr;
mod names;
mod outcome;
mod rules;
mod schema;
mod semantic;
mod sidecar;

pub use check::{
    Checked, Report, Skipped, ValidObject, check_document, check_text, normalize_namespace,
};
pub use error::ValidationError;
pub use names::{dns1123_label_problem, dns1123_subdomain_problem, path_segment_problem};
pub use outcome::{DocumentOutcome, check_documents};
pub use schema::{SchemaError, has_schema, init as init_schemas, schema_types};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
