//! Istio's `MeshConfig` (`istio.mesh.v1alpha1.MeshConfig`): the mesh-wide settings held in the
//! `mesh` key of the `istio` ConfigMap, the fields the mesh uses.
//!
//! Galley reads it (`--mesh-config FILE` or that ConfigMap in the config dir) and serves it over
//! MCP as the one resource [`MESH_CONFIG_RESOURCE`] of collection [`MESH_CONFIG_COLLECTION`]
//! (body `{spec: <MeshConfig JSON>}`); Pilot reads it from there. Unknown fields are kept in
//! [`MeshConfig::other`] so nothing Istio writes is rejected. Defaults are Istio 1.4's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ModelError, from_value_at};

/// The MCP collection of the mesh config (Istio 1.4's name).
pub const MESH_CONFIG_COLLECTION: &str = "istio/mesh/v1alpha1/MeshConfig";
/// The `namespace/name` of the single mesh config resource (as Istio 1.4's Galley names it).
pub const MESH_CONFIG_RESOURCE: &str = "istio-system/meshconfig";

/// The mesh config (Istio's field names, camelCase in YAML/JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshConfig {
    /// Where each proxy writes its access log (`/dev/stdout` or a path); empty = off.
    pub access_log_file: String,
    /// `TEXT` (Envoy's format string) or `JSON` (one object per line).
    pub access_log_encoding: AccessLogEncoding,
    /// The format: an Envoy format string for TEXT, a JSON object of `%OPERATOR%`s for JSON;
    /// empty = the default format of the encoding.
    pub access_log_format: String,
    /// Whether proxies trace requests.
    pub enable_tracing: bool,
    /// Whether Mixer's policy checks are skipped.
    pub disable_policy_checks: bool,
    /// Let requests through when Mixer's policy service cannot be reached (Istio: default false).
    pub policy_check_fail_open: bool,
    /// What sidecars do with traffic to hosts outside the registry.
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// The namespace whose config applies mesh-wide.
    pub root_namespace: String,
    /// The SPIFFE trust domain.
    pub trust_domain: String,
    /// Proxy defaults (`ProxyConfig`), passed through untouched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_config: Option<Value>,
    /// Every other field Istio defines, kept as written.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            access_log_file: String::new(),
            access_log_encoding: AccessLogEncoding::Text,
            access_log_format: String::new(),
            enable_tracing: true,
            disable_policy_checks: true,
            policy_check_fail_open: false,
            outbound_traffic_policy: OutboundTrafficPolicy::default(),
            root_namespace: "istio-system".to_string(),
            trust_domain: "cluster.local".to_string(),
            default_config: None,
            other: BTreeMap::new(),
        }
    }
}

/// `accessLogEncoding`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessLogEncoding {
    #[default]
    #[serde(rename = "TEXT")]
    Text,
    #[serde(rename = "JSON")]
    Json,
}

/// `outboundTrafficPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OutboundTrafficPolicy {
    pub mode: OutboundTrafficMode,
}

/// `outboundTrafficPolicy.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutboundTrafficMode {
    #[serde(rename = "REGISTRY_ONLY")]
    RegistryOnly,
    #[default]
    #[serde(rename = "ALLOW_ANY")]
    AllowAny,
}

impl MeshConfig {
    /// Reads a mesh config from its JSON form (YAML parsed to JSON), naming the failing field.
    pub fn from_json(value: Value) -> Result<MeshConfig, ModelError> {
        let value = match value {
            // An empty document is the default config.
            Value::Null => Value::Object(Default::default()),
            v => v,
        };
        from_value_at("", value)
    }

    /// Whether proxies should write an access log.
    pub fn access_log_enabled(&self) -> bool {
        !self.access_log_file.is_empty()
    }
}

/// Istio's default JSON access log keys and their Envoy operators (`accessLogEncoding: JSON`
/// with no `accessLogFormat`), plus the peers' SPIFFE ids: what Pilot sends and what the
/// proxy's `--access-log` writes.
pub const ACCESS_LOG_JSON_FORMAT: &[(&str, &str)] = &[
    ("start_time", "%START_TIME%"),
    ("route_name", "%ROUTE_NAME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    (
        "istio_policy_status",
        "%DYNAMIC_METADATA(istio.mixer:status)%",
    ),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
    ("downstream_peer_uri_san", "%DOWNSTREAM_PEER_URI_SAN%"),
    ("upstream_peer_uri_san", "%UPSTREAM_PEER_URI_SAN%"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_istios() {
        let m = MeshConfig::from_json(Value::Null).unwrap();
        assert_eq!(m, MeshConfig::default());
        assert!(!m.policy_check_fail_open);
        assert!(!m.access_log_enabled());
        assert_eq!(m.access_log_encoding, AccessLogEncoding::Text);
        assert_eq!(
            m.outbound_traffic_policy.mode,
            OutboundTrafficMode::AllowAny
        );
        assert_eq!(m.root_namespace, "istio-system");
    }

    #[test]
    fn reads_istio_fields_and_keeps_unknown_ones() {
        let m = MeshConfig::from_json(serde_json::json!({
            "accessLogFile": "/dev/stdout",
            "accessLogEncoding": "JSON",
            "policyCheckFailOpen": true,
            "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
            "defaultConfig": {"connectTimeout": "10s"},
            "ingressService": "istio-ingressgateway"
        }))
        .unwrap();
        assert!(m.access_log_enabled());
        assert_eq!(m.access_log_encoding, AccessLogEncoding::Json);
        assert!(m.policy_check_fail_open);
        assert_eq!(
            m.outbound_traffic_policy.mode,
            OutboundTrafficMode::RegistryOnly
        );
        assert_eq!(m.other["ingressService"], "istio-ingressgateway");
        let back = serde_json::to_value(&m).unwrap();
        assert_eq!(back["defaultConfig"]["connectTimeout"], "10s");
        assert_eq!(back["ingressService"], "istio-ingressgateway");
        assert_eq!(MeshConfig::from_json(back).unwrap(), m);
    }

    #[test]
    fn bad_enum_names_the_field() {
        let err =
            MeshConfig::from_json(serde_json::json!({"accessLogEncoding": "XML"})).unwrap_err();
        assert_eq!(err.field, "accessLogEncoding");
        let err = MeshConfig::from_json(
            serde_json::json!({"outboundTrafficPolicy": {"mode": "SOMETIMES"}}),
        )
        .unwrap_err();
        assert_eq!(err.field, "outboundTrafficPolicy.mode");
    }
}
