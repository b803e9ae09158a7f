//! Upstream clusters: settings from CDS, endpoints from EDS, round-robin endpoint choice.

mod endpoints;
mod model;

pub use endpoints::Endpoints;
pub use model::{Cluster, UpstreamTls};
