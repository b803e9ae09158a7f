//! One analyzer finding, with Istio's code and level.

use serde::{Deserialize, Serialize};

/// How serious a finding is (Istio's levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Level {
    Error,
    Warning,
    Info,
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Error => "Error",
            Level::Warning => "Warning",
            Level::Info => "Info",
        })
    }
}

/// A problem found across objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Istio's message code, e.g. `IST0101`.
    pub code: String,
    pub level: Level,
    /// The object the finding is about.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Where the object came from (empty when read from galley).
    pub file: String,
    pub line: usize,
    /// The field the finding points at, e.g. `spec.http[0].route[0].destination.subset`.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Finding {
    /// `Error [IST0101] (VirtualService default/reviews file.yaml:12) message`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{}] ({} ", self.level, self.code, self.kind)?;
        if !self.namespace.is_empty() {
            write!(f, "{}/", self.namespace)?;
        }
        write!(f, "{}", self.name)?;
        if !self.file.is_empty() {
            write!(f, " {}:{}", self.file, self.line)?;
        }
        write!(f, ") {}", self.message)
    }
}

/// Istio's messages used here (code, level, text), from `pkg/config/analysis/msg/messages.yaml`.
pub(crate) mod msg {
    use super::Level;

    pub fn referenced_not_found(reftype: &str, refval: &str) -> (&'static str, Level, String) {
        (
            "IST0101",
            Level::Error,
            format!("Referenced {reftype} not found: {refval:?}"),
        )
    }

    pub fn conflicting_mesh_hosts(vs: &str, host: &str) -> (&'static str, Level, String) {
        (
            "IST0109",
            Level::Error,
            format!(
                "The VirtualServices {vs} associated with mesh gateway define the same host {host} which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource."
            ),
        )
    }

    pub fn port_selector_required(host: &str, ports: &[i64]) -> (&'static str, Level, String) {
        let ports: Vec<String> = ports.iter().map(ToString::to_string).collect();
        (
            "IST0112",
            Level::Error,
            format!(
                "This VirtualService routes to a service {host:?} that exposes multiple ports [{}]. Specifying a port in the destination is required to disambiguate.",
                ports.join(" ")
            ),
        )
    }

    pub fn host_not_in_gateway(
        hosts: &[String],
        vs: &str,
        gw: &str,
    ) -> (&'static str, Level, String) {
        (
            "IST0132",
            Level::Warning,
            format!(
                "one or more host [{}] defined in VirtualService {vs} not found in Gateway {gw}.",
                hosts.join(" ")
            ),
        )
    }

    pub fn unknown_destination_rule_host(host: &str) -> (&'static str, Level, String) {
        (
            "IST0174",
            Level::Warning,
            format!(
                "The host {host} defined in the DestinationRule does not match any services in the mesh."
            ),
        )
    }

    pub fn no_server_cert_verification(
        dr: &str,
        ns: &str,
        mode: &str,
        host: &str,
        port: Option<i64>,
    ) -> (&'static str, Level, String) {
        let text = format!(
            "DestinationRule {dr} in namespace {ns} has TLS mode set to {mode} but no caCertificates are set to validate server identity for host: {host}"
        );
        match port {
            None => ("IST0128", Level::Warning, text),
            Some(p) => ("IST0129", Level::Warning, format!("{text} at port {p}")),
        }
    }

    pub fn service_entry_addresses_required() -> (&'static str, Level, String) {
        (
            "IST0134",
            Level::Warning,
            "ServiceEntry addresses are required for this protocol.".to_string(),
        )
    }

    pub fn envoy_filter_relative_operation() -> (&'static str, Level, String) {
        (
            "IST0151",
            Level::Warning,
            "This EnvoyFilter does not have a priority and has a relative patch operation set which can cause the EnvoyFilter not to be applied. Using the INSERT_FIRST of ADD option or setting the priority may help in ensuring the EnvoyFilter is applied correctly.".to_string(),
        )
    }

    pub fn negative_condition(
        kind: &str,
        reason: &str,
        message: &str,
    ) -> (&'static str, Level, String) {
        (
            "IST0171",
            Level::Warning,
            format!(
                "A condition with a negative status is present: type={kind}, reason={reason}, message={message}."
            ),
        )
    }

    pub fn conflicting_gateways(
        gateways: &str,
        selector: &str,
        port: i64,
        hosts: &[&str],
    ) -> (&'static str, Level, String) {
        (
            "IST0145",
            Level::Error,
            format!(
                "Conflict with gateways {gateways} (workload selector {selector}, port {port}, hosts [{}]).",
                hosts.join(" ")
            ),
        )
    }
}
