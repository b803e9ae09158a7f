//! The `AdmissionReview` envelope both admission webhooks (galley's validation, pilot's sidecar
//! injection) read and answer: `admission.k8s.io/v1` or `v1beta1`, answered in the version asked.

use serde_json::{Value, json};

/// The AdmissionReview API versions answered.
pub const VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// A body that is not an AdmissionReview request (a webhook answers it with 400 and this text).
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

/// The parts of an `AdmissionReview` request every webhook needs.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionRequest<'a> {
    /// The review's apiVersion, echoed in the answer.
    pub api_version: &'a str,
    /// `request.uid`, copied into the response.
    pub uid: &'a str,
    /// `request` itself (operation, kind, namespace, object, ...).
    pub request: &'a Value,
}

impl<'a> AdmissionRequest<'a> {
    /// Reads the envelope of `body`, refusing anything that is not an AdmissionReview request of
    /// a supported version with a uid.
    pub fn parse(body: &'a Value) -> Result<Self, ReviewError> {
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
        Ok(AdmissionRequest {
            api_version,
            uid,
            request,
        })
    }

    /// `request.operation` (`CREATE`, `UPDATE`, `DELETE`, `CONNECT`), empty when absent.
    pub fn operation(&self) -> &'a str {
        self.request
            .get("operation")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The answering `AdmissionReview` (same apiVersion) carrying `response`.
    pub fn answer(&self, response: Value) -> Value {
        json!({"apiVersion": self.api_version, "kind": "AdmissionReview", "response": response})
    }

    /// A response allowing the request.
    pub fn allowed(&self) -> Value {
        json!({"uid": self.uid, "allowed": true})
    }

    /// A response denying the request with a `Failure` status of `code` and `reason`.
    pub fn denied(&self, code: u16, reason: &str, message: &str) -> Value {
        json!({
            "uid": self.uid,
            "allowed": false,
            "status": {"status": "Failure", "reason": reason, "code": code, "message": message},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(api_version: &str) -> Value {
        json!({"apiVersion": api_version, "kind": "AdmissionReview",
               "request": {"uid": "u-1", "operation": "CREATE"}})
    }

    #[test]
    fn reads_both_versions_and_answers_in_the_version_asked() {
        for v in VERSIONS {
            let b = body(v);
            let r = AdmissionRequest::parse(&b).unwrap();
            assert_eq!(r.uid, "u-1");
            assert_eq!(r.operation(), "CREATE");
            let a = r.answer(r.allowed());
            assert_eq!(a["apiVersion"], v);
            assert_eq!(a["response"], json!({"uid": "u-1", "allowed": true}));
        }
    }

    #[test]
    fn refuses_what_is_not_a_review_request() {
        let e = |b: Value| AdmissionRequest::parse(&b).unwrap_err();
        assert_eq!(
            e(body("admission.k8s.io/v2")),
            ReviewError::Version("admission.k8s.io/v2".into())
        );
        assert_eq!(
            e(json!({"apiVersion": VERSIONS[0], "kind": "Pod", "request": {"uid": "x"}})),
            ReviewError::Kind("Pod".into())
        );
        assert_eq!(
            e(json!({"apiVersion": VERSIONS[0], "kind": "AdmissionReview"})),
            ReviewError::NoRequest
        );
        assert_eq!(
            e(
                json!({"apiVersion": VERSIONS[0], "kind": "AdmissionReview", "request": {"uid": ""}})
            ),
            ReviewError::NoUid
        );
    }

    #[test]
    fn a_denial_carries_the_status() {
        let b = body(VERSIONS[1]);
        let r = AdmissionRequest::parse(&b).unwrap();
        let d = r.denied(422, "Invalid", "spec.hosts: empty");
        assert_eq!(d["allowed"], false);
        assert_eq!(d["status"]["code"], 422);
        assert_eq!(d["status"]["reason"], "Invalid");
        assert_eq!(d["status"]["message"], "spec.hosts: empty");
    }
}
