//! Pilot: turns the registry and Istio traffic config into Envoy xDS v3 and serves it over ADS.
//!
//! ```text
//!  galley ──MCP──► galley_client ──watch<Arc<Snapshot>>──► xds (one task per ADS stream)
//!                                                           │ model::Registry::from_snapshot
//!                                                           │ translate::translate(registry, proxy)
//!                                                           └─► CDS, EDS, LDS, RDS to the proxy
//!  debug: /debug/syncz, /debug/config_dump?proxyID=, /debug/registryz
//! ```
//! - [`galley_client`]: MCP sink keeping the [`galley_client::Snapshot`] current.
//! - [`model`]: the [`model::Registry`] built from a snapshot.
//! - [`translate`]: the pure translation to Envoy resources.
//! - [`xds`]: the ADS server.
//! - [`debug`]: the debug HTTP endpoints.
//! - [`inject`]: the sidecar-injection admission webhook (`POST /inject`).
//! - [`run()`]: wires everything for the `pilot` binary.

mod args;
pub mod debug;
pub mod galley_client;
pub mod inject;
pub mod metrics;
pub mod model;
mod run;
pub mod sds;
pub mod translate;
pub mod xds;

pub use args::Args;
pub use run::{RunError, run};
