//! Upstream clusters: settings from CDS, endpoints from EDS, inline `load_assignment` or DNS,
//! and the runtime state behind load balancing, circuit breaking and outlier detection.

mod discovery;
pub mod dns;
mod endpoints;
pub mod envoy;
mod model;
mod state;

pub use discovery::{
    DEFAULT_DNS_REFRESH, Discovery, DnsMode, DnsSpec, DnsTarget, Locality, LookupFamily,
    OriginalDestination, authority_target,
};
pub use dns::{DnsMetrics, Resolver, SystemResolver};
pub use endpoints::{Endpoint, Endpoints};
pub use model::{Cluster, LbPolicy, Limits, OutlierDetection, UpstreamTls};
pub use state::{Admission, ClusterState, ClusterStates, HostOutcome, Overflow, RetryToken};
