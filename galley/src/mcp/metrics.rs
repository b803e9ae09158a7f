//! MCP server metrics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

/// Counters of the MCP server, registered in the service's registry.
#[derive(Debug, Clone, Default)]
pub struct McpMetrics {
    /// `galley_mcp_nacks_total`: responses a sink rejected.
    pub nacks: Counter,
    /// `galley_mcp_pushes_total`: full-state responses sent.
    pub pushes: Counter,
    /// `galley_mcp_connected_sinks`: open MCP streams.
    pub connected_sinks: Gauge,
}

impl McpMetrics {
    /// Creates the metrics and registers them in `metrics`.
    pub fn register(metrics: &mesh_runtime::Metrics) -> McpMetrics {
        let m = McpMetrics::default();
        metrics.register(|r| {
            r.register(
                "galley_mcp_nacks",
                "MCP responses rejected by a sink",
                m.nacks.clone(),
            );
            r.register(
                "galley_mcp_pushes",
                "MCP full-state responses sent",
                m.pushes.clone(),
            );
            r.register(
                "galley_mcp_connected_sinks",
                "MCP sink streams currently open",
                m.connected_sinks.clone(),
            );
        });
        m
    }
}
