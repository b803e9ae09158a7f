//! The sidecar-injection webhook: HTTPS `POST /inject`, `AdmissionReview`
//! `admission.k8s.io/v1`/`v1beta1` for Pods, answered with a JSON Patch adding the `istio-init`
//! init container (iptables capture to 15001/15006), the `istio-proxy` container (mesh-proxy),
//! their volumes and the `sidecar.istio.io/status` annotation.
//!
//! - [`pod`]: the parts of a Pod read. [`capture`]: the `traffic.sidecar.istio.io/*`
//!   annotations and the iptables script. [`sidecar`]: the containers and volumes.
//! - [`patch`]: skip (opted out, host network, already injected) or the patch.
//! - [`review`]: the AdmissionReview answer; [`routes`]: the HTTP route; [`tls`]: HTTPS.

pub mod capture;
pub mod patch;
pub mod pod;
pub mod review;
pub mod routes;
pub mod sidecar;
pub mod tls;

pub use patch::{Decision, INJECT_ANNOTATION, InjectError, STATUS_ANNOTATION, decide};
pub use review::{Outcome, ReviewError, review};
pub use routes::{INJECT_PATH, InjectMetrics, inject_router};
pub use sidecar::{INIT_CONTAINER, InjectConfig, PROXY_CONTAINER};
pub use tls::{PemError, serve_tls, server_config};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
