//! The certificate authority.
//!
//! - [`authority`]: the signing certificate and key: a self-signed root created on first start
//!   and kept in the state directory, or a plugged-in intermediate.
//! - [`sign`]: turning a CSR into a leaf certificate for an authenticated identity.
//! - [`ttl`]: the lifetime policy (default and maximum).

pub mod authority;
pub mod sign;
pub mod ttl;

pub use authority::{CaError, CertificateAuthority};
pub use sign::SignError;
pub use ttl::{TtlError, TtlPolicy};
