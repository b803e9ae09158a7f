//! A cluster as the proxy uses it.

use std::time::Duration;

use serde::Serialize;

/// Settings of one upstream cluster (from CDS).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    pub name: String,
    /// The EDS resource name holding its endpoints (`service_name`, else the cluster name).
    pub eds_name: String,
    pub connect_timeout: Duration,
    /// mTLS to the endpoints, when the cluster has a TLS transport socket.
    pub tls: Option<UpstreamTls>,
}

/// TLS towards a cluster's endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct UpstreamTls {
    /// The peer's URI SAN must be one of these (exact match).
    pub expected_sans: Vec<String>,
    pub sni: String,
}
