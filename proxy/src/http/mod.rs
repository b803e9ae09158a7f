//! The data path: HTTP/1.1 listeners (outbound, inbound, gateway), forwarding and upstream
//! connections.

mod access_log;
pub(crate) mod alpn;
mod context;
mod cors;
mod fault;
mod headers;
mod inbound;
mod metered;
mod mirror;
mod response;
mod retry;
mod routed;
mod server;
mod telemetry;
mod upstream;

pub use access_log::{
    AccessLog, AccessLogEntry, AccessLogTarget, QUEUE as ACCESS_LOG_QUEUE, rfc3339_millis,
};
pub use context::{ProxyContext, service_of_cluster};
pub use headers::{X_REQUEST_ID, XFCC};
pub use metered::metered;
pub use response::Body;
pub use routed::RoutedKind;
pub use server::{serve_inbound, serve_routed};
pub use telemetry::{
    Outcome, PEER_APP, PEER_NAMESPACE, PEER_VERSION, PEER_WORKLOAD, Party, Reporter, Service,
    Workload, flags, namespace_of_principal, request_labels, strip_peer_headers,
};
pub use upstream::{PeerPrincipal, Upstream, UpstreamError};
