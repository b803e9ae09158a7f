//! Mixer's configuration: what galley sends and what Mixer makes of it.
//!
//! - [`state`]: the typed objects of every subscribed collection, updated from MCP responses.
//! - [`policy`]: rules compiled from the state (parsed `match`, resolved handlers and adapters).
//! - [`sink`]: the MCP sink: the stream to galley, ACK/NACK, reconnects, readiness.

pub mod policy;
pub mod sink;
pub mod state;

pub use policy::{Action, CompiledRule, Instance, Policy, PolicyHandle};
pub use sink::{COLLECTIONS, Sink, run_sink};
pub use state::{ApplyError, ConfigState, PodInfo};
