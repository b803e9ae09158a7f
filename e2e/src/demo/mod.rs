//! The demo application.
//!
//! - [`topology`]: which service calls which (the Bookinfo call graph).
//! - [`reply`]: the JSON every service answers with.
//! - [`caller`]: calls to other services through the sidecar's outbound proxy, forwarding the
//!   user and trace headers.
//! - [`server`]: the HTTP server: `/healthz` and every other path answering with the call tree.

pub mod caller;
pub mod reply;
pub mod server;
pub mod topology;

pub use caller::{Caller, CallerError, FORWARDED_HEADERS};
pub use reply::{CallResult, Reply};
pub use server::{DemoConfig, ServeError, router, run};
pub use topology::{DEMO_PORT, Service};
