//! ALPN on mesh mTLS connections: what a hop carries.
//!
//! The identity's configurations offer `istio`, `http/1.1` (HTTP/1.1 between sidecars, the
//! mesh marking). The proxy adds, like Istio's `istio-h2` / `istio` split:
//! - `istio-h2` (and `h2`): HTTP/2 between sidecars (requests that arrived as HTTP/2, gRPC);
//! - `istio-tcp`: a raw TCP stream from a `tcp_proxy` listener, forwarded byte for byte to the
//!   application.
//!
//! The inbound listener accepts all of them and tells them apart by the protocol negotiated.

use std::sync::Arc;

use parking_lot::Mutex;
use rustls::{ClientConfig, ServerConfig};

/// HTTP/2 between sidecars.
pub const ISTIO_H2: &[u8] = b"istio-h2";
/// Standard HTTP/2 over TLS.
pub const H2: &[u8] = b"h2";
/// Raw TCP between sidecars (the inbound side splices it to the application).
pub const ISTIO_TCP: &[u8] = b"istio-tcp";
/// HTTP/1.1 between sidecars (the identity's default).
pub const ISTIO: &[u8] = b"istio";
/// Standard HTTP/1.1 over TLS.
pub const HTTP11: &[u8] = b"http/1.1";

/// What a negotiated ALPN protocol says the connection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HopProtocol {
    /// HTTP/1.1 (or no ALPN: HTTP, sniffed by the server).
    Http1,
    Http2,
    Tcp,
}

impl HopProtocol {
    /// The protocol an inbound connection negotiated.
    pub fn of_alpn(alpn: Option<&[u8]>) -> Self {
        match alpn {
            Some(p) if p == ISTIO_H2 || p == H2 => HopProtocol::Http2,
            Some(p) if p == ISTIO_TCP => HopProtocol::Tcp,
            _ => HopProtocol::Http1,
        }
    }

    /// What a client offers for this protocol, in preference order.
    fn client_offer(self) -> Vec<Vec<u8>> {
        match self {
            HopProtocol::Http1 => vec![ISTIO.to_vec(), HTTP11.to_vec()],
            HopProtocol::Http2 => vec![ISTIO_H2.to_vec(), H2.to_vec()],
            HopProtocol::Tcp => vec![ISTIO_TCP.to_vec()],
        }
    }
}

/// Everything the inbound listener accepts, in its preference order (a client offering only
/// `istio`/`http/1.1` still gets `istio`).
pub fn server_protocols() -> Vec<Vec<u8>> {
    [ISTIO_H2, H2, ISTIO_TCP, ISTIO, HTTP11]
        .iter()
        .map(|p| p.to_vec())
        .collect()
}

/// `base` offering what `protocol` needs (a copy; certificates and verifiers are shared).
pub fn client_config(base: &ClientConfig, protocol: HopProtocol) -> Arc<ClientConfig> {
    let mut cfg = base.clone();
    cfg.alpn_protocols = protocol.client_offer();
    Arc::new(cfg)
}

/// The inbound server configuration with [`server_protocols`], rebuilt only when the identity
/// hands out a new one (certificate rotation).
#[derive(Default)]
pub struct ServerAlpn {
    cached: Mutex<Option<(Arc<ServerConfig>, Arc<ServerConfig>)>>,
}

impl ServerAlpn {
    pub fn config(&self, base: Arc<ServerConfig>) -> Arc<ServerConfig> {
        let mut cached = self.cached.lock();
        if let Some((b, c)) = cached.as_ref()
            && Arc::ptr_eq(b, &base)
        {
            return c.clone();
        }
        let mut cfg = (*base).clone();
        cfg.alpn_protocols = server_protocols();
        let cfg = Arc::new(cfg);
        *cached = Some((base, cfg.clone()));
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiated_protocol_tells_the_hop() {
        assert_eq!(HopProtocol::of_alpn(Some(b"istio-h2")), HopProtocol::Http2);
        assert_eq!(HopProtocol::of_alpn(Some(b"h2")), HopProtocol::Http2);
        assert_eq!(HopProtocol::of_alpn(Some(b"istio-tcp")), HopProtocol::Tcp);
        assert_eq!(HopProtocol::of_alpn(Some(b"istio")), HopProtocol::Http1);
        assert_eq!(HopProtocol::of_alpn(None), HopProtocol::Http1);
    }

    #[test]
    fn every_client_offer_is_accepted_by_the_server() {
        let server = server_protocols();
        for p in [HopProtocol::Http1, HopProtocol::Http2, HopProtocol::Tcp] {
            let offer = p.client_offer();
            // The server picks its first protocol the client offers.
            let picked = server.iter().find(|s| offer.contains(s));
            assert_eq!(
                HopProtocol::of_alpn(picked.map(|v| v.as_slice())),
                p,
                "{p:?}"
            );
        }
    }
}
