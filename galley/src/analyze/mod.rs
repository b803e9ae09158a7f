//! Cross-resource analysis (what `istioctl analyze` does): checks that need more than one object,
//! reported with Istio's analyzer message codes (`IST0101`, `IST0109`, ...).
//!
//! - [`finding`]: a finding, its level and Istio's message templates.
//! - [`model`]: the objects analyzed and the service registry they make.
//! - [`checks`]: the analyzers.
//! - [`conflicting_gateways`]: Gateways that serve one host and port to the same pods.
//! - [`object_checks`]: the analyzers that look at one object at a time.

mod checks;
mod conflicting_gateways;
mod finding;
mod hosts;
mod model;
mod object_checks;

pub use checks::analyze;
pub use finding::{Finding, Level};
pub use model::{Object, objects_from_documents};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
