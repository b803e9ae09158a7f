//! The ADS server: per proxy stream, per type URL state (versions, nonces, ACK/NACK), pushes on
//! every snapshot change (CDS before EDS, LDS before RDS).

mod server;
mod status;
mod stream;

pub use server::AdsServer;
pub use status::{Nack, ProxyStatus, SyncStatus, TypeStatus};

#[cfg(test)]
mod tests;
