//! Upstream clusters: settings from CDS, endpoints from EDS, and the runtime state behind load
//! balancing, circuit breaking and outlier detection.

mod endpoints;
pub mod envoy;
mod model;
mod state;

pub use endpoints::Endpoints;
pub use model::{Cluster, LbPolicy, Limits, OutlierDetection, UpstreamTls};
pub use state::{Admission, ClusterState, ClusterStates, HostOutcome, Overflow, RetryToken};
