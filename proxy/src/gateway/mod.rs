//! TLS termination on the router's gateway listeners (Gateway servers `protocol: HTTPS`,
//! `tls.mode` SIMPLE or MUTUAL).
//!
//! - [`decode`](mod@decode): the `DownstreamTlsContext` of each filter chain of a gateway
//!   listener → [`GatewayTlsSpec`] (server names, certificate and key, client CA, ALPN,
//!   protocol versions). Certificates come from filename (or inline) data sources, or from
//!   SDS secret names (Istio's `credentialName`).
//! - [`secret`](mod@secret): SDS `Secret` resources from Pilot, checked on arrival (bad PEM,
//!   a key not matching its certificate → NACK). An SDS name reads Pilot's secret when Pilot
//!   sent one; until then (or when Pilot sends none) the file fallback
//!   `<credential dir>/<name>/{tls.crt,tls.key,ca.crt}` (`--gateway-credential-dir`); with
//!   neither, the chain waits (its handshakes are refused) until one comes.
//! - [`tls`](mod@tls): [`GatewayTls`], one rustls `ServerConfig` per chain, picked by the
//!   ClientHello's server name (exact, then the longest `*.suffix`, then a chain without
//!   names; no SNI → only a chain without names), reloaded when the files change.
//!
//! - [`mixed`](mod@mixed): a port with PASSTHROUGH chains too: the peeked ClientHello's name
//!   picks between passthrough and termination.
//!
//! The HTTP side (`crate::http`) then serves the listener's routes exactly as a plaintext
//! gateway listener does.

pub mod decode;
pub mod mixed;
pub mod secret;
pub mod tls;

pub use decode::{
    CACERT_SUFFIX, ChainSpec, DEFAULT_CREDENTIAL_DIR, GatewayTlsSpec, PemSource, credential_dir,
    listener_tls, listener_tls_in, set_credential_dir,
};
pub use secret::{SdsSecret, SecretPart, Secrets, decode_secret};
pub use tls::{GatewayTls, GatewayTlsError, Selected};

#[cfg(test)]
mod tests;
