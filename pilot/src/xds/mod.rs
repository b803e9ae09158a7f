//! The ADS server: per proxy stream, per type URL state (versions, nonces, ACK/NACK), pushes on
//! every snapshot change (CDS before EDS, LDS before RDS).
//!
//! - `push`: snapshots debounced into a [`PushContext`] (shared CDS/EDS, per-key LDS/RDS;
//!   endpoints-only pushes incremental).
//! - `names`: SotW resource-name lists, interned across streams.
//! - `request`: SotW requests decoded with their names left in the received bytes.
//! - `service` / `wire`: the gRPC service, writing responses straight from the shared encoded
//!   resources (no per-proxy copy or re-encoding).
//! - `convergence`: time from a change to every proxy's answer.
//! - `stream`: the loop and per-proxy session both protocols share.
//! - `sotw`: state of the world (whole type per version).
//! - `delta` / `delta_state`: incremental (per-resource versions, subscriptions, removals).
//! - `tls`: the same service over mTLS (15012), the client's SPIFFE id checked per stream.

mod convergence;
mod delta;
mod delta_state;
mod names;
mod push;
mod request;
mod server;
mod service;
mod sotw;
mod status;
mod stream;
mod tls;
mod wire;

pub use push::{
    DEBOUNCE_MAX, DEBOUNCE_QUIET, EDS_DEBOUNCE_MAX, EDS_DEBOUNCE_QUIET, ProxyKey, PushContext,
    PushKind, classify,
};
pub use server::AdsServer;
pub use service::AdsService;
pub use status::{Nack, ProxyStatus, SyncStatus, TypeStatus};
pub use tls::{MtlsConn, XDS_TLS_READY, XdsPeer, XdsTls, XdsTlsError};

#[cfg(test)]
mod delta_tests;
#[cfg(test)]
mod tests;
