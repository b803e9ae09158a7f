//! What every request handler shares.

use std::net::SocketAddr;

use crate::admin::ProxyMetrics;
use crate::mixer::MixerClient;
use crate::tls::IdentitySlot;
use crate::xds::{NodeInfo, SharedConfig};

use super::access_log::AccessLog;
use super::telemetry::Workload;
use super::upstream::Upstream;

/// Shared state of the data path. Built once; handlers hold an `Arc` of it.
pub struct ProxyContext {
    pub config: SharedConfig,
    pub upstream: Upstream,
    pub metrics: ProxyMetrics,
    pub mixer: Option<MixerClient>,
    pub identity: IdentitySlot,
    pub node: NodeInfo,
    /// Where inbound traffic goes after mTLS termination.
    pub app_addr: SocketAddr,
    /// This proxy's workload in metrics and in the metadata exchange.
    pub workload: Workload,
    /// Where access log entries go; `None` when access logging is off.
    pub access_log: Option<AccessLog>,
    /// Creates a span per request; `None` when tracing is off (no collector).
    pub tracer: Option<crate::trace::HopTracer>,
}

impl ProxyContext {
    /// This workload's SPIFFE id, or empty before the identity is held.
    pub fn own_principal(&self) -> String {
        self.identity
            .get()
            .map(|i| i.spiffe_id())
            .unwrap_or_default()
    }
}

/// The FQDN part of a cluster name `outbound|P|SUBSET|FQDN` (else the name itself).
pub fn service_of_cluster(cluster: &str) -> &str {
    cluster.rsplit('|').next().unwrap_or(cluster)
}
