//! Mixer's configuration: what galley sends and what Mixer makes of it.
//!
//! - [`state`]: the typed objects of every subscribed collection, updated from MCP responses.
//! - [`policy`]: rules compiled from the state (parsed `match`, resolved handlers and adapters).
//! - [`sink`]: Mixer's handler for the shared MCP sink ([`mesh_proto::mcp::sink`]): applies
//!   updates, recompiles the policy, counts ACKs/NACKs, sets readiness.

pub mod policy;
pub mod sink;
pub mod state;

pub use policy::{Action, CompiledRule, Instance, Policy, PolicyHandle};
pub use sink::{COLLECTIONS, ConfigSink, Sink, new_sink};
pub use state::{ApplyError, ConfigState, PodInfo};
