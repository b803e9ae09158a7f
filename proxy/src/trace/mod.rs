//! Distributed tracing: a span per hop (CLIENT on the outbound sidecar and the gateway, SERVER
//! on the inbound sidecar), W3C Trace Context and B3 propagation, sampling at the trace's root,
//! and OTLP/gRPC export. Off (no cost on the request path) unless a collector is configured.
//!
//! - [`propagation`]: extracting and injecting `traceparent`/`tracestate`, `b3`, `x-b3-*`.
//! - [`sampling`]: the `--trace-sampling` percentage.
//! - [`span`](mod@span): starting and finishing a hop's span.
//! - [`exporter`]: the OTLP exporter and its shutdown.

pub mod exporter;
pub mod propagation;
pub mod sampling;
pub mod span;

pub use exporter::{TraceConfig, TraceError, TraceIdentity, Tracing};
pub use sampling::Sampling;
pub use span::{
    HopKind, HopRequest, HopSpan, HopTracer, Propagation, client_span_name, server_span_name,
};
