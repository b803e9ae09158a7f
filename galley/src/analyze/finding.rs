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
}
