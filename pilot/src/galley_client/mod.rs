//! Galley client (MCP sink): the config snapshot and the stream that keeps it current. The
//! stream itself is [`mesh_proto::mcp::sink`]; this module turns its updates into [`Snapshot`]s.

mod sink;
mod snapshot;

pub use sink::{
    COLLECTIONS, GalleyClient, READY_CONDITION, SinkError, SnapshotHandler, next_snapshot,
};
pub use snapshot::{Collection, Snapshot, read_mesh_config};

#[cfg(test)]
mod tests;
