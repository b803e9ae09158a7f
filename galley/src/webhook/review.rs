//! Judging one `AdmissionReview`: the request's object is checked as `meshctl validate` checks a
//! document, and the answer is an `AdmissionReview` of the version asked.

use serde_json::{Value, json};

use crate::source::Document;
use crate::validate::{Checked, check_document};

/// The AdmissionReview API versions answered.
const VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// A body that is not an AdmissionReview request (answered with 400).
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

/// The answer to `body` (an `AdmissionReview` with a `request`): an `AdmissionReview` of the same
/// apiVersion whose `response` copies the uid and allows or denies the object. DELETE is always
/// allowed, as are kinds galley does not validate; a denial's `status.message` holds one line per
/// problem, each `Kind namespace/name: field: reason`.
pub fn review(body: &Value) -> Result<Value, ReviewError> {
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
    let operation = request
        .get("operation")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let verdict = if operation == "DELETE" {
        Ok(())
    } else {
        judge(request)
    };
    let response = match verdict {
        Ok(()) => json!({"uid": uid, "allowed": true}),
        Err(message) => json!({
            "uid": uid,
            "allowed": false,
            "status": {"status": "Failure", "reason": "Invalid", "code": 422, "message": message},
        }),
    };
    Ok(json!({"apiVersion": api_version, "kind": "AdmissionReview", "response": response}))
}

/// Checks the request's object; `Err` holds the denial message.
fn judge(request: &Value) -> Result<(), String> {
    let Some(object) = request.get("object").filter(|o| o.is_object()) else {
        return Err("request.object is missing".to_string());
    };
    let mut object = object.clone();
    // The API server sends the namespace of a namespaced create in the request when the object
    // itself leaves it out.
    let request_ns = request
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !request_ns.is_empty()
        && let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut)
        && meta
            .get("namespace")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        meta.insert("namespace".into(), Value::String(request_ns.to_string()));
    }
    let doc = Document {
        file: String::new(),
        line: 0,
        value: object,
    };
    match check_document(&doc) {
        Checked::Valid(v) => {
            tracing::debug!(kind = v.kind.info().kind, namespace = %v.object.metadata.namespace, name = %v.object.metadata.name, "admitted");
            Ok(())
        }
        Checked::Skipped(s) => {
            tracing::debug!(kind = %s.kind, "admitted a kind galley does not validate");
            Ok(())
        }
        Checked::Invalid(errs) => {
            let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
            tracing::info!(errors = errs.len(), first = %lines.first().map_or("", String::as_str), "denied");
            Err(lines.join("\n"))
        }
    }
}
