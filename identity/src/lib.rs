//! Workload identity: SPIFFE ids, key and CSR generation, certificate fetch and rotation from
//! Citadel, rustls configs that verify SPIFFE peers.
//!
//! - [`spiffe`]: [`SpiffeId`] and reading URI SANs out of certificates.
//! - `citadel`: channels to Citadel (plaintext with the token; TLS with the current
//!   certificate for renewal).
//! - [`csr`]: a fresh P-256 key and its certificate signing request.
//! - [`workload`]: [`WorkloadIdentity`], the certificate from Citadel with background renewal.
//! - [`tls`]: rustls server/client configurations for mesh mTLS and [`peer_identity`].

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod citadel;
pub mod csr;
pub mod spiffe;
pub mod tls;
pub mod workload;

pub use spiffe::{SpiffeId, SpiffeIdError, spiffe_id_of, uri_sans};
pub use tls::{MeshTls, PeerCertificates, TlsError, TlsMaterial, peer_identity};
pub use workload::{IdentityConfig, IdentityError, RenewalConfig, WorkloadIdentity};
