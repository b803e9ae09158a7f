//! The xDS side: the Envoy node, decoding resources, the accepted state, the published
//! snapshot and the ADS client.

mod client;
mod decode;
mod node;
mod snapshot;
mod state;
/// Pilot-shaped Envoy resources, for tests of this crate and its users.
#[doc(hidden)]
pub mod testdata;

pub use client::{AdsSession, StreamError, run};
pub use decode::DecodeError;
pub use node::{NodeInfo, ProxyType, parse_labels};
pub use snapshot::{Config, Listener, SharedConfig, Versions};
pub use state::{ApplyError, ResourceType, XdsState};
