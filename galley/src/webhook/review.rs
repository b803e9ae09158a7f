//! Judging one `AdmissionReview`: the request's object is checked as `meshctl validate` checks a
//! document, and the answer is an `AdmissionReview` of the version asked.

use serde_json::Value;

use crate::source::Document;
use crate::validate::{Checked, check_document};

use mesh_runtime::admission::AdmissionRequest;
pub use mesh_runtime::admission::ReviewError;

/// The answer to `body` (an `AdmissionReview` with a `request`): an `AdmissionReview` of the same
/// apiVersion whose `response` copies the uid and allows or denies the object. DELETE is always
/// allowed, as are kinds galley does not validate; a denial's `status.message` holds one line per
/// problem, each `Kind namespace/name: field: reason`.
pub fn review(body: &Value) -> Result<Value, ReviewError> {
    let review = AdmissionRequest::parse(body)?;
    let verdict = if review.operation() == "DELETE" {
        Ok(())
    } else {
        judge(review.request)
    };
    let response = match verdict {
        Ok(()) => review.allowed(),
        Err(message) => review.denied(422, "Invalid", &message),
    };
    Ok(review.answer(response))
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
