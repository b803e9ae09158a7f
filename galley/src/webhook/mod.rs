//! The validating admission webhook: HTTPS (rustls, TLS 1.2/1.3), `AdmissionReview`
//! `admission.k8s.io/v1` and `v1beta1` on `/validate`, `/admitpilot` and `/admitmixer`, judged
//! by the same checks (and with the same error text) as `meshctl validate`.

mod review;
mod routes;
mod tls;

pub use review::{ReviewError, review};
pub use routes::{WEBHOOK_PATHS, WebhookMetrics, webhook_router};
pub use tls::{TlsError, serve_tls, server_config};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests;
