//! Mixer's configuration: what galley sends and what Mixer makes of it.
//!
//! - [`state`]: the typed objects of every subscribed collection, updated from MCP responses.
//! - [`policy`]: rules compiled from the state (parsed `match`, resolved handlers and adapters).
//! - [`legacy`]: the pre-`compiledAdapter` forms (`kind: stdio`, `kind: logentry`, ...).
//! - [`sink`]: Mixer's handler for the shared MCP sink ([`mesh_proto::mcp::sink`]): applies
//!   updates, recompiles the policy, counts ACKs/NACKs, sets readiness.

pub mod legacy;
pub mod policy;
pub mod sink;
pub mod state;

pub use policy::{Action, CompiledRule, Instance, Policy, PolicyHandle, Workload};
pub use sink::{COLLECTIONS, ConfigSink, Sink, new_sink, subscriptions};
pub use state::{ApplyError, ConfigState, PodInfo};
