//! Galley: validates and stores mesh configuration and streams it over MCP.
//!
//! ```text
//!  --config-dir (polled) ─┐
//!  --kube (watched) ──────┤
//!                         ├─► source (parse) ─► validate ─► store (sled, revisions) ─► mcp (ResourceSource)
//!  POST /apis/v1/apply ───┘        file:line      field paths     all-or-nothing          full state per collection
//! ```
//!
//! - [`source`]: YAML/JSON text into documents (with lines); the watched config directory; the
//!   Kubernetes source (`source::kube`).
//! - [`validate`]: per-document checks producing [`validate::ValidationError`]s.
//! - [`store`]: the sled store with a global revision and change notification.
//! - [`mcp`]: the MCP `ResourceSource` server.
//! - [`api`]: the HTTP apply API.
//! - [`webhook`]: the validating admission webhook (HTTPS, AdmissionReview).
//! - [`analyze`]: cross-resource checks with Istio's analyzer message codes.
//! - [`run`]: the service itself.

pub mod analyze;
pub mod api;
pub mod mcp;
mod service;
pub mod source;
pub mod store;
pub mod validate;
pub mod webhook;

pub use service::{
    Config, GalleyError, READY_KUBE, READY_SERVING, READY_STORE, WebhookConfig, run,
};
pub use source::kube::KubeOptions;

/// Resolves once `stop` holds `true` (or its sender is gone).
pub(crate) async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
