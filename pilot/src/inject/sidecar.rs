//! What injection adds to a pod: the `istio-init` init container (traffic capture), the
//! `istio-proxy` container (mesh-proxy), their volumes and the status annotation.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::capture::{Capture, INBOUND_PORT, OUTBOUND_PORT, PROXY_UID};
use super::pod::PodView;

/// The init container's name.
pub const INIT_CONTAINER: &str = "istio-init";
/// The proxy container's name.
pub const PROXY_CONTAINER: &str = "istio-proxy";
/// The projected service-account token volume (audience `istio-ca`).
pub const TOKEN_VOLUME: &str = "istio-token";
/// A writable scratch volume for the proxy (its root file system is read-only).
pub const SCRATCH_VOLUME: &str = "istio-envoy";
/// Where the token is mounted in the proxy.
pub const TOKEN_DIR: &str = "/var/run/secrets/tokens";
/// The proxy's health port (`/healthz`, `/readyz`, `/metrics`).
pub const HEALTH_PORT: u16 = 15021;
/// The injected proxy's explicit HTTP-proxy listener, on loopback.
pub const LOCAL_OUTBOUND_PORT: u16 = 15081;
/// The injected proxy's plain inbound listener, on loopback (captured inbound traffic goes to
/// the capture listener on 15006).
pub const LOCAL_INBOUND_PORT: u16 = 15082;
/// Annotation overriding the proxy's CPU request.
pub const PROXY_CPU: &str = "sidecar.istio.io/proxyCPU";
/// Annotation overriding the proxy's memory request.
pub const PROXY_MEMORY: &str = "sidecar.istio.io/proxyMemory";

/// What every injected sidecar is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectConfig {
    /// The mesh-proxy image of the `istio-proxy` container.
    pub proxy_image: String,
    /// The image of `istio-init` (needs `sh` and `iptables`).
    pub init_image: String,
    /// Pilot's xDS address given to the proxy (`--xds-addr`).
    pub xds_addr: String,
    /// Citadel's address given to the proxy (`--citadel-addr`).
    pub citadel_addr: String,
    /// Mixer's address given to the proxy (`--mixer-addr`), if any.
    pub mixer_addr: Option<String>,
    /// The mesh trust domain (`--trust-domain`).
    pub trust_domain: String,
}

/// The `sidecar.istio.io/status` value recorded on an injected pod.
pub fn status_annotation() -> String {
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "initContainers": [INIT_CONTAINER],
        "containers": [PROXY_CONTAINER],
        "volumes": [SCRATCH_VOLUME, TOKEN_VOLUME],
        "imagePullSecrets": null,
    })
    .to_string()
}

/// The `istio-init` container: runs the capture's iptables script as root with only
/// `NET_ADMIN` and `NET_RAW`.
pub fn init_container(config: &InjectConfig, capture: &Capture) -> Value {
    json!({
        "name": INIT_CONTAINER,
        "image": config.init_image,
        "command": ["sh", "-c", capture.script()],
        "resources": {
            "requests": {"cpu": "10m", "memory": "10Mi"},
            "limits": {"cpu": "100m", "memory": "50Mi"},
        },
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": false,
            "privileged": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": false,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
    })
}

/// The `istio-proxy` container for `pod`.
pub fn proxy_container(config: &InjectConfig, pod: &PodView) -> Value {
    let mut args = vec![
        "--type".to_string(),
        "sidecar".to_string(),
        "--xds-addr".to_string(),
        config.xds_addr.clone(),
        "--citadel-addr".to_string(),
        config.citadel_addr.clone(),
        "--trust-domain".to_string(),
        config.trust_domain.clone(),
        "--token-file".to_string(),
        format!("{TOKEN_DIR}/{TOKEN_VOLUME}"),
        // The iptables REDIRECT targets: connections are served by their original destination
        // (SO_ORIGINAL_DST), outbound by port and Host, inbound to the application's port.
        "--capture-outbound-addr".to_string(),
        format!("0.0.0.0:{OUTBOUND_PORT}"),
        "--capture-inbound-addr".to_string(),
        format!("0.0.0.0:{INBOUND_PORT}"),
        // The explicit HTTP-proxy listener (local mode's form) and the plain inbound listener
        // stay on loopback: captured traffic never reaches them.
        "--outbound-addr".to_string(),
        format!("127.0.0.1:{LOCAL_OUTBOUND_PORT}"),
        "--inbound-addr".to_string(),
        format!("127.0.0.1:{LOCAL_INBOUND_PORT}"),
        "--admin-addr".to_string(),
        "127.0.0.1:15000".to_string(),
        "--monitoring-addr".to_string(),
        format!("0.0.0.0:{HEALTH_PORT}"),
    ];
    if let Some(mixer) = &config.mixer_addr {
        args.push("--mixer-addr".into());
        args.push(mixer.clone());
    }
    if let Some(port) = pod.first_app_port() {
        args.push("--app-addr".into());
        args.push(format!("127.0.0.1:{port}"));
    }
    let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}});
    let mut env = vec![
        field("MESH_PROXY_POD", "metadata.name"),
        field("MESH_PROXY_NAMESPACE", "metadata.namespace"),
        field("MESH_PROXY_IP", "status.podIP"),
        field("MESH_PROXY_SERVICE_ACCOUNT", "spec.serviceAccountName"),
        json!({"name": "MESH_PROXY_LABELS", "value": labels_flag(&pod.labels())}),
    ];
    if let Some(workload) = pod.workload_name() {
        env.push(json!({"name": "MESH_PROXY_WORKLOAD_NAME", "value": workload}));
    }
    let annotations = pod.annotations();
    let cpu = annotations.get(PROXY_CPU).map_or("100m", String::as_str);
    let memory = annotations
        .get(PROXY_MEMORY)
        .map_or("128Mi", String::as_str);
    json!({
        "name": PROXY_CONTAINER,
        "image": config.proxy_image,
        "args": args,
        "env": env,
        "ports": [{"name": "mesh-health", "containerPort": HEALTH_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": HEALTH_PORT},
            "initialDelaySeconds": 1,
            "periodSeconds": 2,
            "failureThreshold": 30,
        },
        "resources": {
            "requests": {"cpu": cpu, "memory": memory},
            "limits": {"cpu": "2", "memory": "1Gi"},
        },
        "securityContext": {
            "runAsUser": PROXY_UID,
            "runAsGroup": PROXY_UID,
            "runAsNonRoot": true,
            "privileged": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true},
            {"name": SCRATCH_VOLUME, "mountPath": "/etc/istio/proxy"},
        ],
    })
}

/// The volumes the proxy mounts.
pub fn volumes() -> Vec<Value> {
    vec![
        json!({"name": SCRATCH_VOLUME, "emptyDir": {"medium": "Memory"}}),
        json!({
            "name": TOKEN_VOLUME,
            "projected": {"sources": [{"serviceAccountToken": {
                "audience": "istio-ca",
                "expirationSeconds": 43200,
                "path": TOKEN_VOLUME,
            }}]},
        }),
    ]
}

/// `--labels` text: `k=v` pairs, sorted, comma separated.
fn labels_flag(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
