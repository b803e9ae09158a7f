//! Cross-resource analysis (what `istioctl analyze` does): checks that need more than one object,
//! reported with Istio's analyzer message codes (`IST0101`, `IST0109`, ...).
//!
//! - [`finding`]: a finding, its level and Istio's message templates.
//! - [`model`]: the objects analyzed and the service registry they make.
//! - [`checks`]: the analyzers.

mod checks;
mod finding;
mod hosts;
mod model;

pub use checks::analyze;
pub use finding::{Finding, Level};
pub use model::{Object, objects_from_documents};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
