//! The HTTP/JSON apply API (`meshctl apply/get/delete` talk to it). Without `--kube` it writes
//! the local store; with `--kube` ([`kube`]) it writes the API server and waits until this
//! replica's watch brought the change into the local store.

pub mod kube;
mod kube_routes;
mod routes;

pub use kube::{KubeWriter, READ_YOUR_WRITE_TIMEOUT};
pub use routes::{ApiMetrics, SOURCE_HEADER, api_router, kube_api_router};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
