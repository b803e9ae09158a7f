//! Peer authentication mode per destination port, from the listener's filter chains as Envoy
//! selects them (`destination_port`, then `transport_protocol` `tls` / `raw_buffer`), and the
//! first-byte sniffing PERMISSIVE needs.

use std::collections::BTreeMap;
use std::time::Duration;

use mesh_proto::envoy::envoy::config::listener::v3::FilterChain;
use serde::Serialize;
use tokio::net::TcpStream;

use super::DecodeError;

/// The first byte of a TLS handshake record.
pub const TLS_HANDSHAKE: u8 = 0x16;

/// How an inbound connection may arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MtlsMode {
    /// Mutual TLS only: plaintext connections are closed.
    Strict,
    /// Both, told apart by the first byte.
    Permissive,
    /// Plaintext only.
    Disable,
}

impl MtlsMode {
    fn from_transports(tls: bool, raw: bool) -> Option<MtlsMode> {
        match (tls, raw) {
            (true, true) => Some(MtlsMode::Permissive),
            (true, false) => Some(MtlsMode::Strict),
            (false, true) => Some(MtlsMode::Disable),
            (false, false) => None,
        }
    }
}

/// The mode of every port with its own chains, and of the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortModes {
    pub default: MtlsMode,
    pub ports: BTreeMap<u32, MtlsMode>,
}

impl PortModes {
    /// Reads the chains. A chain without `transport_protocol` accepts both; no chain at all
    /// means nothing is accepted in plaintext (STRICT).
    pub fn from_chains(chains: &[FilterChain]) -> Result<PortModes, DecodeError> {
        let mut per: BTreeMap<Option<u32>, (bool, bool)> = BTreeMap::new();
        for (i, c) in chains.iter().enumerate() {
            let m = c.filter_chain_match.clone().unwrap_or_default();
            let port = m.destination_port.map(|p| p.value);
            let e = per.entry(port).or_default();
            match m.transport_protocol.as_str() {
                "tls" => e.0 = true,
                "raw_buffer" => e.1 = true,
                "" => *e = (true, true),
                other => {
                    return Err(DecodeError::new(
                        &format!("filter_chains[{i}].filter_chain_match.transport_protocol"),
                        format!("unsupported {other:?}"),
                    ));
                }
            }
        }
        let default = per
            .remove(&None)
            .and_then(|(t, r)| MtlsMode::from_transports(t, r))
            .unwrap_or(MtlsMode::Strict);
        let ports = per
            .into_iter()
            .filter_map(|(p, (t, r))| Some((p?, MtlsMode::from_transports(t, r)?)))
            .collect();
        Ok(PortModes { default, ports })
    }

    /// The mode for a connection to local port `port`.
    pub fn for_port(&self, port: u16) -> MtlsMode {
        self.ports
            .get(&u32::from(port))
            .copied()
            .unwrap_or(self.default)
    }
}

/// Whether the client opened with a TLS handshake, by peeking at the first byte (not consumed).
/// `None` when the client closed or sent nothing within `wait`.
pub async fn sniff_tls(stream: &TcpStream, wait: Duration) -> Option<bool> {
    let mut b = [0u8; 1];
    match tokio::time::timeout(wait, stream.peek(&mut b)).await {
        Ok(Ok(1)) => Some(b[0] == TLS_HANDSHAKE),
        _ => None,
    }
}
