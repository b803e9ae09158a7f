//! The service registry and traffic config, built from a snapshot.

mod cache;
mod hosts;
mod registry;
mod security;
mod service;
mod service_entry;
mod sidecar_scope;
mod workload_entry;

pub use cache::RegistryCache;
pub use hosts::{resolve_host, service_fqdn};
pub use registry::Registry;
pub use security::{PolicyEntry, PolicyScope, ROOT_NAMESPACE, SecurityPolicies, scope_for};
pub use service::{
    DestinationRuleEntry, GatewayEntry, Instance, Port, Resolution, Service, ServiceOrigin,
    VirtualServiceEntry, exported,
};
pub use service_entry::{LabelSelector, ServiceEntryError, ServiceEntryPort, ServiceEntrySpec};
pub use sidecar_scope::{
    EgressHost, EgressListener, IngressEndpoint, IngressPort, IngressProtocol, NamespaceMatch,
    OutboundPolicy, OutboundTrafficPolicy, SidecarEntry, SidecarScope, SidecarSpec, read_sidecars,
    sidecar_for,
};
pub use workload_entry::{WorkloadEntryItem, WorkloadEntrySpec, read_workload_entries};
