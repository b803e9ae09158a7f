//! Debug HTTP endpoints (JSON): sync status, per-proxy config, registry.

mod render;
mod routes;

pub use render::config as render_config;
pub use routes::{DebugState, router};
