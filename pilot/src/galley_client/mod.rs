//! Galley client (MCP sink): the config snapshot and the stream that keeps it current.

mod sink;
mod snapshot;

pub use sink::{Applied, COLLECTIONS, GalleyClient, READY_CONDITION, SinkError, next_snapshot};
pub use snapshot::{Collection, Snapshot};

#[cfg(test)]
mod tests;
