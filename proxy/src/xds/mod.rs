//! The xDS side: the Envoy node, decoding resources, the accepted state, the published
//! snapshot and the ADS client (Delta or SotW, plaintext or mTLS).

pub mod access_log;
mod client;
mod cluster_metadata;
mod connect;
mod decode;
mod delta;
mod delta_stream;
#[cfg(test)]
mod fuzz_regressions;
mod node;
mod snapshot;
mod state;
/// Pilot-shaped Envoy resources, for tests of this crate and its users.
#[doc(hidden)]
pub mod testdata;

pub use client::{AdsSession, StreamError, XdsClientConfig, XdsProtocol, run, run_client};
pub use connect::XdsTlsConfig;
pub use decode::DecodeError;
pub use delta::{DeltaOutcome, DeltaSession};
pub use delta_stream::WARMING_TIMEOUT;
pub use node::{NodeInfo, ProxyType, parse_labels};
pub use snapshot::{Config, Listener, SharedConfig, Versions};
pub use state::{ApplyError, ResourceType, XdsState};
