//! The mesh's wire and shared model.
//!
//! - [`google`], [`istio`]: protobuf types generated at build time from `proto/`, with the same
//!   packages, message names and field numbers as Istio 1.4 (`istio.mixer.v1`, `istio.v1.auth`,
//!   `istio.mcp.v1alpha1`), so Istio's own clients interoperate.
//! - [`envoy`]: Envoy xDS v3 types and ADS stubs (re-exported from `envoy-types`).
//! - [`config`]: the typed configuration model (serde structs for each kind) and the MCP
//!   collection names.
//! - [`mcp`]: how a config object travels inside an MCP `Resource`, and the MCP sink
//!   ([`mcp::sink`]) Pilot and Mixer use to take their config from Galley.
//! - [`discovery`]: the stream engine shared by Galley (MCP) and Pilot (xDS): versions, nonces,
//!   and the ACK/NACK rules.
//! - [`dictionary`]: Mixer's global word list, whose order is part of the wire format.
//! - [`attributes`]: Mixer attribute bags and their compressed wire form (incl. report deltas).

pub mod attributes;
pub mod config;
pub mod dictionary;
pub mod discovery;
pub mod mcp;
pub mod structs;

/// Envoy xDS v3 (`envoy.config.*.v3`, `envoy.service.discovery.v3`).
pub use envoy_types::pb as envoy;

#[allow(clippy::all, missing_docs)]
pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

#[allow(clippy::all, missing_docs)]
pub mod istio {
    pub mod mixer {
        pub mod v1 {
            tonic::include_proto!("istio.mixer.v1");
            /// The mixer filter's configuration (`istio.mixer.v1.config.client`): what Pilot
            /// sends the proxy for Check, Report and quota.
            pub mod config {
                pub mod client {
                    tonic::include_proto!("istio.mixer.v1.config.client");
                }
            }
        }
    }
    pub mod v1 {
        pub mod auth {
            tonic::include_proto!("istio.v1.auth");
        }
    }
    pub mod mcp {
        pub mod v1alpha1 {
            tonic::include_proto!("istio.mcp.v1alpha1");
        }
    }
}

/// Envoy v3 type URLs served over ADS.
pub mod type_url {
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
    pub const HTTP_CONNECTION_MANAGER: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
    pub const UPSTREAM_TLS_CONTEXT: &str =
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
    pub const DOWNSTREAM_TLS_CONTEXT: &str =
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
    pub const STRUCT: &str = "type.googleapis.com/google.protobuf.Struct";
    /// The `mixer` HTTP filter's config (on the HCM).
    pub const MIXER_HTTP_CLIENT_CONFIG: &str =
        "type.googleapis.com/istio.mixer.v1.config.client.HttpClientConfig";
    /// The `mixer` filter's per-route config (`typed_per_filter_config["mixer"]`).
    pub const MIXER_SERVICE_CONFIG: &str =
        "type.googleapis.com/istio.mixer.v1.config.client.ServiceConfig";
}
