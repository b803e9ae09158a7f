//! Transparent capture (iptables `REDIRECT` to the sidecar, as Istio's init container sets
//! up): the outbound capture listener (Istio's 15001) and the inbound one (15006) read each
//! connection's original destination (`SO_ORIGINAL_DST`) and serve it by that destination's
//! port: a declared TCP port by its `tcp_proxy`, an HTTP port by the routes (Host), and a port
//! nothing declares by sniffing its first bytes, then the outbound traffic policy.
//!
//! - [`original_dst`]: the lookup (a trait; the kernel's answer in production).
//! - [`sniff`]: protocol sniffing (TLS, HTTP/2, HTTP/1.x, else TCP after a bounded wait).
//! - [`client_hello`]: mesh mTLS or the application's own TLS, by the ClientHello's ALPN.
//! - [`dispatch`]: where a port's connections go; ALLOW_ANY / REGISTRY_ONLY.
//! - [`ingress`]: Sidecar `ingress[]`: a port's `defaultEndpoint`, and the listeners bound
//!   for `bind` / `captureMode: NONE`.
//! - [`listener`]: the accept loops.

mod client_hello;
mod dispatch;
mod ingress;
mod listener;
mod original_dst;
mod prefixed;
mod sniff;

pub use client_hello::{Hello, MESH_ALPN, offers_mesh_alpn, parse_client_hello, peek_mesh_tls};
pub use dispatch::{
    BLACKHOLE_CLUSTER, OutboundPolicy, PASSTHROUGH_CLUSTER, PortKind, authority_with_port,
    port_kind,
};
pub use ingress::{IngressError, app_for, ingress_upstream, serve_ingress_binds, wanted_binds};
pub use listener::{
    CaptureConfig, DEFAULT_SNIFF_WAIT, serve_capture_inbound, serve_capture_outbound,
    serve_inbound_on,
};
pub use original_dst::{OriginalDst, SharedOriginalDst, SockOptOriginalDst};
pub use prefixed::Prefixed;
pub use sniff::{H2_PREFACE, MAX_SNIFF, Sniff, Sniffed, classify, peek_sniff, sniff};

#[cfg(test)]
pub(crate) mod ingress_tests;
#[cfg(test)]
mod tests;
