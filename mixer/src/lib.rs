//! Mixer: Check and Report over `istio.mixer.v1`, policy from galley over MCP.
//!
//! - [`expr`]: the expression language of rule `match` clauses (a CEXL subset).
//! - [`adapter`]: the in-process adapters (`denier`, `listchecker`, `memquota`, `redisquota`,
//!   `prometheus`, `stdio`, `opentelemetry`).
//! - [`config`]: the MCP sink, the typed config it keeps and the policy compiled from it.
//! - [`check`]: answering Check: decode, workload attributes, rules, referenced attributes.
//! - [`quota`]: quota allocation for Check through the memquota/redisquota handlers.
//! - [`report`]: answering Report: delta-decoded batches, counted per destination service, fed
//!   to the prometheus, stdio and opentelemetry adapters.
//! - [`dedup`]: the bounded memory of Check deduplication ids.
//! - [`server`]: the gRPC service.
//! - [`wire`]: a `CheckRequest` read straight from its bytes (no intermediate maps).
//! - [`unary`]: the HTTP/2 glue of `serve_grpc` (Check answered without tonic's codec).
//! - [`metrics`]: Prometheus metrics.
//! - [`service`]: [`run`], which binds, serves and stops the whole process.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod adapter;
pub mod check;
pub mod config;
pub mod dedup;
pub mod expr;
pub mod metrics;
pub mod quota;
pub mod report;
pub mod server;
pub mod service;
pub mod unary;
pub mod wire;

pub use server::MixerService;
pub use service::{Config, RunError, run};
