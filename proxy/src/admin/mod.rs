//! The admin server (`/healthz`, `/readyz`, `/ready`, `/metrics`, `/stats/prometheus`,
//! `/config_dump`) and the proxy's metrics.

mod metrics;
mod server;

pub use metrics::{CheckLabels, ProxyMetrics, RequestLabels, UpstreamErrorLabels, XdsLabels};
pub use server::admin_router;
