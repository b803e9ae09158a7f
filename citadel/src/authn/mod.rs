//! Who is asking for a certificate.
//!
//! Citadel trusts nothing in a CSR but its key: the identity comes from the caller's
//! credentials, checked by a chain of [`Authenticator`]s where the first success wins.
//!
//! - [`caller`]: the credentials a request carries, and the identity an authenticator returns.
//! - [`chain`]: [`Authenticators`], trying each in turn.
//! - [`peer_cert`]: renewal by a caller presenting its current mesh certificate on the TLS
//!   listener.
//! - [`tokenreview`]: Kubernetes service-account JWTs checked by TokenReview (audience
//!   `istio-ca`).
//! - [`local_token`]: tokens signed by Citadel's local issuer key (local mode).
//!
//! Citadel tries them in that order.

pub mod caller;
pub mod chain;
pub mod local_token;
pub mod peer_cert;
pub mod tokenreview;

pub use caller::{Authenticated, Authenticator, AuthnError, CallerInfo};
pub use chain::Authenticators;
pub use local_token::LocalTokenAuthenticator;
pub use peer_cert::PeerCertificateAuthenticator;
pub use tokenreview::TokenReviewAuthenticator;
