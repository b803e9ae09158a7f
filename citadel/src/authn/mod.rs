//! Who is asking for a certificate.
//!
//! Citadel trusts nothing in a CSR but its key: the identity comes from the caller's
//! credentials, checked by a chain of [`Authenticator`]s where the first success wins.
//!
//! - [`caller`]: the credentials a request carries, and the identity an authenticator returns.
//! - [`chain`]: [`Authenticators`], trying each in turn.
//! - [`local_token`]: tokens signed by Citadel's local issuer key (local mode).
//!
//! Still to be written, and plugged in here as further [`Authenticator`]s: Kubernetes
//! TokenReview of service-account JWTs (audience `istio-ca`), and renewal by a caller presenting
//! its current mesh certificate over mTLS (which needs a TLS listener that records the client's
//! chain in [`CallerInfo`]).

pub mod caller;
pub mod chain;
pub mod local_token;

pub use caller::{Authenticated, Authenticator, AuthnError, CallerInfo};
pub use chain::Authenticators;
pub use local_token::LocalTokenAuthenticator;
