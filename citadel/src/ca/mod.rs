//! The certificate authority.
//!
//! - [`authority`]: the signing certificate and key: a self-signed root created on first start
//!   and kept in the state directory, or a plugged-in intermediate.
//! - [`secret`]: the CA kept in the Kubernetes Secret `istio-ca-secret` (create-or-load).
//! - [`sign`]: turning a CSR into a leaf certificate for an authenticated identity.
//! - [`ttl`]: the lifetime policy (default and maximum).

pub mod authority;
pub mod secret;
pub mod sign;
pub mod ttl;

pub use authority::{CaError, CaOrigin, CaPems, CertificateAuthority};
pub use secret::{CA_SECRET_NAME, CaSecret};
pub use sign::SignError;
pub use ttl::{TtlError, TtlPolicy};
