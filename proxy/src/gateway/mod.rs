//! TLS termination on the router's gateway listeners (Gateway servers `protocol: HTTPS`,
//! `tls.mode` SIMPLE or MUTUAL).
//!
//! - [`decode`](mod@decode): the `DownstreamTlsContext` of each filter chain of a gateway
//!   listener → [`GatewayTlsSpec`] (server names, certificate and key, client CA, ALPN,
//!   protocol versions). Certificates come from filename (or inline) data sources, or from
//!   SDS secret names (Istio's `credentialName`) resolved to
//!   `<credential dir>/<name>/{tls.crt,tls.key,ca.crt}` (`--gateway-credential-dir`).
//! - [`tls`](mod@tls): [`GatewayTls`], one rustls `ServerConfig` per chain, picked by the
//!   ClientHello's server name (exact, then the longest `*.suffix`, then a chain without
//!   names; no SNI → only a chain without names), reloaded when the files change.
//!
//! The HTTP side (`crate::http`) then serves the listener's routes exactly as a plaintext
//! gateway listener does.

pub mod decode;
pub mod tls;

pub use decode::{
    CACERT_SUFFIX, ChainSpec, DEFAULT_CREDENTIAL_DIR, GatewayTlsSpec, PemSource, credential_dir,
    listener_tls, listener_tls_in, set_credential_dir,
};
pub use tls::{GatewayTls, GatewayTlsError, Selected};

#[cfg(test)]
mod tests;
