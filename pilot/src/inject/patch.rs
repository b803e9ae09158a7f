//! Deciding whether a pod gets a sidecar, and the JSON Patch (RFC 6902) that adds it.

use serde_json::{Value, json};

use super::capture::{Capture, CaptureError};
use super::pod::PodView;
use super::sidecar::{
    INIT_CONTAINER, InjectConfig, PROXY_CONTAINER, init_container, proxy_container,
    status_annotation, volumes,
};

/// Annotation (or label) opting a pod out (`false`) or in.
pub const INJECT_ANNOTATION: &str = "sidecar.istio.io/inject";
/// Annotation recording an injection.
pub const STATUS_ANNOTATION: &str = "sidecar.istio.io/status";

/// What to do with a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Leave it as it is, for this reason.
    Skip(&'static str),
    /// Apply these JSON Patch operations.
    Inject(Vec<Value>),
}

/// A pod the injector cannot work with (the review is answered `allowed: false`).
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("cannot read the pod: {0}")]
    Pod(#[from] serde_json::Error),
    #[error(transparent)]
    Capture(#[from] CaptureError),
}

/// Decides for the pod `object` (the review's JSON) and builds the patch.
pub fn decide(object: &Value, config: &InjectConfig) -> Result<Decision, InjectError> {
    let pod = PodView::from_value(object)?;
    let annotations = pod.annotations();
    if pod.spec.host_network == Some(true) {
        return Ok(Decision::Skip("host network"));
    }
    if annotations
        .get(INJECT_ANNOTATION)
        .is_some_and(|v| is_off(v))
        || pod
            .labels()
            .get(INJECT_ANNOTATION)
            .is_some_and(|v| is_off(v))
    {
        return Ok(Decision::Skip("opted out"));
    }
    let has = |list: &[super::pod::Container], name: &str| list.iter().any(|c| c.name == name);
    if annotations.contains_key(STATUS_ANNOTATION)
        || has(&pod.spec.containers, PROXY_CONTAINER)
        || has(
            pod.spec.init_containers.as_deref().unwrap_or(&[]),
            INIT_CONTAINER,
        )
    {
        return Ok(Decision::Skip("already injected"));
    }
    let capture = Capture::from_annotations(&annotations)?;

    let mut ops = Vec::new();
    // Appended after the pod's own init containers: those run before capture starts, so they
    // can reach the network without a proxy.
    append(
        &mut ops,
        "/spec/initContainers",
        pod.spec.init_containers.is_some(),
        vec![init_container(config, &capture)],
    );
    ops.push(
        json!({"op": "add", "path": "/spec/containers/-", "value": proxy_container(config, &pod)}),
    );
    append(
        &mut ops,
        "/spec/volumes",
        pod.spec.volumes.is_some(),
        volumes(),
    );
    if pod.metadata.annotations.is_some() {
        ops.push(json!({
            "op": "add",
            "path": format!("/metadata/annotations/{}", escape(STATUS_ANNOTATION)),
            "value": status_annotation(),
        }));
    } else {
        if object.get("metadata").is_none_or(|m| !m.is_object()) {
            ops.push(json!({"op": "add", "path": "/metadata", "value": {}}));
        }
        ops.push(json!({
            "op": "add",
            "path": "/metadata/annotations",
            "value": {STATUS_ANNOTATION: status_annotation()},
        }));
    }
    Ok(Decision::Inject(ops))
}

/// Istio's "no" words for `sidecar.istio.io/inject`.
fn is_off(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "false" | "n" | "no" | "off"
    )
}

/// Adds `items` to the array at `path`: created whole when the pod has none.
fn append(ops: &mut Vec<Value>, path: &str, exists: bool, items: Vec<Value>) {
    if exists {
        for item in items {
            ops.push(json!({"op": "add", "path": format!("{path}/-"), "value": item}));
        }
    } else {
        ops.push(json!({"op": "add", "path": path, "value": items}));
    }
}

/// A JSON Pointer reference token (RFC 6901): `~` → `~0`, `/` → `~1`.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}
