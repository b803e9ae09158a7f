//! Citadel: the mesh CA signing workload CSRs with SPIFFE identities.
//!
//! - [`ca`]: the root (or plugged-in intermediate) and signing of leaf certificates.
//! - [`authn`]: who the caller is (current certificate, TokenReview, local tokens).
//! - [`token`]: Citadel's local tokens, handed to workloads by `meshctl`.
//! - [`server`]: the `IstioCertificateService` gRPC service and the process around it.
//! - [`metrics`]: `citadel_csr_total{result}`, `citadel_cert_issued_total`.
//! - [`files`]: state-directory files (owner-only secrets, created once).
//! - [`tls`]: the TLS listener (Citadel's server certificate, optional verified client
//!   certificates for renewal, modern suites only).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod authn;
pub mod ca;
pub mod files;
pub mod metrics;
pub mod server;
pub mod tls;
pub mod token;

pub use ca::{CertificateAuthority, TtlPolicy};
pub use server::{Citadel, CitadelService, Config, RunError, run};
