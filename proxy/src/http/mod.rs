//! The data path: HTTP/1.1 listeners (outbound, inbound, gateway), forwarding and upstream
//! connections.

mod context;
mod headers;
mod inbound;
mod response;
mod routed;
mod server;
mod upstream;

pub use context::{ProxyContext, service_of_cluster};
pub use headers::{X_REQUEST_ID, XFCC};
pub use response::Body;
pub use routed::RoutedKind;
pub use server::{serve_inbound, serve_routed};
pub use upstream::{PeerPrincipal, Upstream, UpstreamError};
