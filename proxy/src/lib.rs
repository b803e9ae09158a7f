//! The mesh's sidecar and gateway proxy.
//!
//! - [`xds`]: ADS client to Pilot; decoding and applying CDS/EDS/LDS/RDS into an immutable
//!   [`xds::Config`] snapshot that the request path reads without locks.
//! - [`routing`]: pure route selection over the applied route tables.
//! - [`cluster`]: clusters, endpoints, round-robin choice.
//! - [`gateway`]: TLS termination on gateway listeners (HTTPS servers, SNI, client certs).
//! - [`http`]: the HTTP/1.1 listeners (outbound, inbound mTLS, gateway) and upstream pool.
//! - [`mixer`]: Check/Report client.
//! - [`tcp`]: `tcp_proxy` listeners and the inbound TCP splice.
//! - [`capture`]: transparent capture (original destination, protocol sniffing).
//! - [`authz`]: inbound peer authentication mode, JWT and RBAC from Pilot's `virtualInbound`.
//! - [`trace`]: spans per hop, trace context propagation, OTLP export.
//! - [`tls`]: where mTLS configuration comes from (the workload identity).
//! - [`admin`]: the admin server and metrics.
//! - [`run`](mod@run): start-up and shutdown.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admin;
pub mod authz;
pub mod capture;
pub mod cluster;
pub mod gateway;
pub mod http;
pub mod mixer;
pub mod routing;
pub mod run;
pub mod tcp;
pub mod tls;
pub mod trace;
pub mod xds;

pub use run::{OUTBOUND_LISTENER, ProxyConfig, RunError, parse_gateway_port, run, runtime};
