//! The service registry and traffic config, built from a snapshot.

mod cache;
mod hosts;
mod registry;
mod security;
mod service;

pub use cache::RegistryCache;
pub use hosts::{resolve_host, service_fqdn};
pub use registry::Registry;
pub use security::{PolicyEntry, PolicyScope, ROOT_NAMESPACE, SecurityPolicies, scope_for};
pub use service::{
    DestinationRuleEntry, GatewayEntry, Instance, Port, Service, VirtualServiceEntry,
};
