//! One `AdmissionReview` (`admission.k8s.io/v1` or `v1beta1`) answered: a Pod CREATE gets the
//! sidecar patch (`patchType: JSONPatch`, base64), anything else is allowed unchanged.

use base64::Engine as _;
use serde_json::{Value, json};

use super::patch::{Decision, decide};
use super::sidecar::InjectConfig;

/// The AdmissionReview API versions answered.
const VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// A body that is not an AdmissionReview request (answered with 400 and this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("apiVersion {0:?} is not one of admission.k8s.io/v1, admission.k8s.io/v1beta1")]
    Version(String),
    #[error("kind {0:?} is not AdmissionReview")]
    Kind(String),
    #[error("request is missing")]
    NoRequest,
    #[error("request.uid is missing")]
    NoUid,
}

/// How a review was answered (for metrics and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    Skipped,
    Denied,
}

/// Answers `body`: an `AdmissionReview` of the same apiVersion whose `response` copies the uid.
pub fn review(body: &Value, config: &InjectConfig) -> Result<(Value, Outcome), ReviewError> {
    let api_version = body
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !VERSIONS.contains(&api_version) {
        return Err(ReviewError::Version(api_version.to_string()));
    }
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind != "AdmissionReview" {
        return Err(ReviewError::Kind(kind.to_string()));
    }
    let request = body
        .get("request")
        .filter(|r| r.is_object())
        .ok_or(ReviewError::NoRequest)?;
    let uid = request
        .get("uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .ok_or(ReviewError::NoUid)?;
    let (response, outcome) = answer(uid, request, config);
    Ok((
        json!({"apiVersion": api_version, "kind": "AdmissionReview", "response": response}),
        outcome,
    ))
}

fn answer(uid: &str, request: &Value, config: &InjectConfig) -> (Value, Outcome) {
    let allowed = json!({"uid": uid, "allowed": true});
    let is_pod = request.get("kind").is_some_and(|k| {
        k.get("kind") == Some(&json!("Pod")) && k.get("group").is_none_or(|g| g == "")
    });
    let operation = request.get("operation").and_then(Value::as_str);
    if !is_pod || operation.is_some_and(|op| op != "CREATE") {
        return (allowed, Outcome::Skipped);
    }
    let namespace = request
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(object) = request.get("object") else {
        return deny(uid, "request.object is missing");
    };
    match decide(object, config) {
        Ok(Decision::Skip(reason)) => {
            tracing::debug!(%namespace, reason, "pod left without a sidecar");
            (allowed, Outcome::Skipped)
        }
        Ok(Decision::Inject(ops)) => {
            let patch = Value::Array(ops).to_string();
            tracing::info!(%namespace, pod = %pod_name(object), "sidecar injected");
            (
                json!({
                    "uid": uid,
                    "allowed": true,
                    "patchType": "JSONPatch",
                    "patch": base64::engine::general_purpose::STANDARD.encode(patch),
                }),
                Outcome::Injected,
            )
        }
        Err(e) => {
            tracing::info!(%namespace, error = %e, "pod refused");
            deny(uid, &format!("sidecar injection failed: {e}"))
        }
    }
}

fn deny(uid: &str, message: &str) -> (Value, Outcome) {
    (
        json!({
            "uid": uid,
            "allowed": false,
            "status": {"status": "Failure", "reason": "BadRequest", "code": 400, "message": message},
        }),
        Outcome::Denied,
    )
}

fn pod_name(object: &Value) -> String {
    let meta = &object["metadata"];
    meta["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .or_else(|| meta["generateName"].as_str().map(|g| format!("{g}*")))
        .unwrap_or_default()
}
