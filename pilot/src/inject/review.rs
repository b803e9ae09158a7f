//! One `AdmissionReview` (`admission.k8s.io/v1` or `v1beta1`) answered: a Pod CREATE gets the
//! sidecar patch (`patchType: JSONPatch`, base64), anything else is allowed unchanged.

use base64::Engine as _;
use serde_json::{Value, json};

use super::patch::{Decision, decide};
use super::sidecar::InjectConfig;

use mesh_runtime::admission::AdmissionRequest;
pub use mesh_runtime::admission::ReviewError;

/// How a review was answered (for metrics and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    Skipped,
    Denied,
}

/// Answers `body`: an `AdmissionReview` of the same apiVersion whose `response` copies the uid.
pub fn review(body: &Value, config: &InjectConfig) -> Result<(Value, Outcome), ReviewError> {
    let review = AdmissionRequest::parse(body)?;
    let (response, outcome) = answer(&review, config);
    Ok((review.answer(response), outcome))
}

fn answer(review: &AdmissionRequest<'_>, config: &InjectConfig) -> (Value, Outcome) {
    let request = review.request;
    let is_pod = request.get("kind").is_some_and(|k| {
        k.get("kind") == Some(&json!("Pod")) && k.get("group").is_none_or(|g| g == "")
    });
    let operation = review.operation();
    if !is_pod || !(operation.is_empty() || operation == "CREATE") {
        return (review.allowed(), Outcome::Skipped);
    }
    let namespace = request
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let deny = |message: &str| (review.denied(400, "BadRequest", message), Outcome::Denied);
    let Some(object) = request.get("object") else {
        return deny("request.object is missing");
    };
    match decide(object, config) {
        Ok(Decision::Skip(reason)) => {
            tracing::debug!(%namespace, reason, "pod left without a sidecar");
            (review.allowed(), Outcome::Skipped)
        }
        Ok(Decision::Inject(ops)) => {
            let patch = Value::Array(ops).to_string();
            tracing::info!(%namespace, pod = %pod_name(object), "sidecar injected");
            (
                json!({
                    "uid": review.uid,
                    "allowed": true,
                    "patchType": "JSONPatch",
                    "patch": base64::engine::general_purpose::STANDARD.encode(patch),
                }),
                Outcome::Injected,
            )
        }
        Err(e) => {
            tracing::info!(%namespace, error = %e, "pod refused");
            deny(&format!("sidecar injection failed: {e}"))
        }
    }
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
