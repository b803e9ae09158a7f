//! Plain TCP: Pilot's `envoy.filters.network.tcp_proxy` listeners (`0.0.0.0_<port>` for
//! Service ports of a TCP protocol), the mTLS hop between sidecars (ALPN `istio-tcp`), and the
//! inbound splice to the application, with Istio's TCP metrics.

mod client_hello;
mod counted;
mod envoy;
mod inbound;
mod metrics;
mod model;
mod outbound;
mod passthrough;
mod sni;

pub(crate) use client_hello::{ClientHello, Peeked, with_client_hello};
pub use envoy::{TCP_PROXY_FILTER, decode_tcp_proxy};
pub use inbound::{serve_inbound, serve_inbound_plaintext};
pub use metrics::{TcpLabels, TcpMetrics};
pub use model::{TcpChain, TcpProxy};
pub use outbound::serve_tcp;
pub(crate) use outbound::{proxy_chain, proxy_stream};
pub(crate) use passthrough::passthrough;
#[cfg(test)]
pub(crate) use sni::tests::client_hello as client_hello_for_tests;
pub(crate) use sni::{MAX_HELLO, Sni, parse as parse_sni};

#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;
