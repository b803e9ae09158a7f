//! The data path: HTTP/1.1 listeners (outbound, inbound, gateway), forwarding and upstream
//! connections.

mod access_log;
pub(crate) mod alpn;
mod captured;
mod context;
mod cors;
mod fault;
/// Entry points for the fuzzers in `fuzz/` (not an API).
#[doc(hidden)]
pub mod fuzzing;
mod gateway_tls;
mod headers;
mod held;
mod inbound;
mod limits;
mod log_format;
mod metered;
mod mirror;
mod pool;
mod response;
mod retry;
mod routed;
mod server;
mod smuggling;
mod telemetry;
mod upstream;

pub use access_log::{
    AccessLog, AccessLogEntry, AccessLogFollower, AccessLogTarget, QUEUE as ACCESS_LOG_QUEUE,
    rfc3339_millis,
};
pub(crate) use captured::serve_captured_http;
pub use context::{ProxyContext, service_of_cluster};
pub use headers::{X_REQUEST_ID, XFCC};
pub use limits::{DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_HEADER_BYTES, HttpLimits};
pub use log_format::{DEFAULT_JSON_FORMAT, LogFormat, Operator, Part, parse_parts};
pub use metered::metered;
pub use response::Body;
pub use routed::RoutedKind;
pub(crate) use server::InboundServer;
pub use server::{serve_inbound, serve_inbound_with, serve_routed, serve_routed_with};
pub use telemetry::{
    Outcome, PEER_APP, PEER_NAMESPACE, PEER_VERSION, PEER_WORKLOAD, Party, Reporter, Service,
    Workload, flags, namespace_of_principal, request_labels, strip_peer_headers,
};
pub use upstream::{PeerPrincipal, Upstream, UpstreamError};
