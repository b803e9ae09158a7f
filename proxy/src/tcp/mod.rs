//! Plain TCP: Pilot's `envoy.filters.network.tcp_proxy` listeners (`0.0.0.0_<port>` for
//! Service ports of a TCP protocol), the mTLS hop between sidecars (ALPN `istio-tcp`), and the
//! inbound splice to the application, with Istio's TCP metrics.

mod counted;
mod envoy;
mod inbound;
mod metrics;
mod model;
mod outbound;
mod passthrough;
mod sni;

pub use envoy::{TCP_PROXY_FILTER, decode_tcp_proxy};
pub use inbound::serve_inbound;
pub use metrics::{TcpLabels, TcpMetrics};
pub use model::{TcpChain, TcpProxy};
pub(crate) use outbound::proxy_stream;
pub use outbound::serve_tcp;
pub(crate) use passthrough::passthrough;

#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;
