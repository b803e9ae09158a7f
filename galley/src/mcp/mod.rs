//! The MCP source (`istio.mcp.v1alpha1.ResourceSource`) that pilot and mixer subscribe to.

mod metrics;
mod server;

pub use metrics::McpMetrics;
pub use server::McpServer;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
