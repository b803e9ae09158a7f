//! The ADS server: per proxy stream, per type URL state (versions, nonces, ACK/NACK), pushes on
//! every snapshot change (CDS before EDS, LDS before RDS).
//!
//! - `push`: snapshots debounced into a [`PushContext`] (shared CDS/EDS, per-key LDS/RDS).
//! - `convergence`: time from a change to every proxy's answer.
//! - `stream`: the loop and per-proxy session both protocols share.
//! - `sotw`: state of the world (whole type per version).
//! - `delta` / `delta_state`: incremental (per-resource versions, subscriptions, removals).

mod convergence;
mod delta;
mod delta_state;
mod push;
mod server;
mod sotw;
mod status;
mod stream;

pub use push::{DEBOUNCE_MAX, DEBOUNCE_QUIET, ProxyKey, PushContext, PushKind, classify};
pub use server::AdsServer;
pub use status::{Nack, ProxyStatus, SyncStatus, TypeStatus};

#[cfg(test)]
mod delta_tests;
#[cfg(test)]
mod tests;
