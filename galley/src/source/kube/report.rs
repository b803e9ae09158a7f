//! Telling the cluster why an object was rejected: a merge patch of the object's `status`
//! (`validationMessages` as Istio writes them, plus the reason) and a Warning Event `Rejected`
//! on the object. A fixed object gets its messages cleared.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::kinds::WatchedKind;
use crate::validate::ValidationError;

/// Istio's analysis code for a config object that fails validation.
pub const VALIDATION_CODE: &str = "IST0106";
/// The Event reason on rejected objects.
pub const EVENT_REASON: &str = "Rejected";
/// Kubernetes caps an Event message near 1 KiB.
const MAX_EVENT_MESSAGE: usize = 1024;

/// A status or Event write the API server refused.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot patch the status of {kind} {key}: {cause}")]
    Status {
        kind: &'static str,
        key: String,
        cause: kube::Error,
    },
    #[error("cannot create an Event about {kind} {key}: {cause}")]
    Event {
        kind: &'static str,
        key: String,
        cause: kube::Error,
    },
}

impl ReportError {
    /// `status` or `event`, for the metric label.
    pub fn what(&self) -> &'static str {
        match self {
            ReportError::Status { .. } => "status",
            ReportError::Event { .. } => "event",
        }
    }
}

/// Writes status and Events through a client.
#[derive(Clone)]
pub struct Reporter {
    client: kube::Client,
    /// `reportingInstance` of the Events (the pod name when known).
    instance: String,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// The `status` merge patch for a rejected object.
pub fn rejected_status(obj: &DynamicObject, errors: &[ValidationError]) -> Value {
    let messages: Vec<Value> = errors
        .iter()
        .map(|e| {
            json!({
                "type": {"code": VALIDATION_CODE, "name": "SchemaValidationError"},
                "level": "ERROR",
                "documentationUrl": "https://istio.io/latest/docs/reference/config/analysis/ist0106/",
                "field": e.field,
                "description": reason_line(e),
            })
        })
        .collect();
    let mut status = json!({"validationMessages": messages});
    if let Some(g) = obj.metadata.generation {
        status["observedGeneration"] = json!(g);
    }
    json!({"status": status})
}

/// `field: reason` (or the reason alone).
fn reason_line(e: &ValidationError) -> String {
    if e.field.is_empty() {
        e.message.clone()
    } else {
        format!("{}: {}", e.field, e.message)
    }
}

/// Whether the object's status holds messages galley wrote (to clear once it is valid).
pub fn has_galley_messages(obj: &DynamicObject) -> bool {
    obj.data
        .get("status")
        .and_then(|s| s.get("validationMessages"))
        .and_then(Value::as_array)
        .is_some_and(|m| {
            m.iter()
                .any(|v| v["type"]["code"].as_str() == Some(VALIDATION_CODE))
        })
}

/// The Event about a rejected object.
pub fn rejected_event(
    wk: &WatchedKind,
    obj: &DynamicObject,
    errors: &[ValidationError],
    instance: &str,
) -> Event {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let mut message = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if message.len() > MAX_EVENT_MESSAGE {
        let mut cut = MAX_EVENT_MESSAGE - 3;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("...");
    }
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}.")),
            namespace: Some(event_namespace(obj).to_string()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some(wk.resource.api_version.clone()),
            kind: Some(wk.resource.kind.clone()),
            name: Some(name),
            namespace: obj.metadata.namespace.clone(),
            uid: obj.metadata.uid.clone(),
            resource_version: obj.metadata.resource_version.clone(),
            field_path: None,
        },
        reason: Some(EVENT_REASON.to_string()),
        message: Some(message),
        type_: Some("Warning".to_string()),
        source: Some(EventSource {
            component: Some("galley".to_string()),
            host: None,
        }),
        reporting_component: Some("galley".to_string()),
        reporting_instance: Some(instance.to_string()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Event::default()
    }
}

/// Events live in the object's namespace (`default` for cluster-scoped objects).
fn event_namespace(obj: &DynamicObject) -> &str {
    obj.metadata
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
}

impl Reporter {
    pub fn new(client: kube::Client, instance: impl Into<String>) -> Reporter {
        Reporter {
            client,
            instance: instance.into(),
        }
    }

    fn status_api(&self, wk: &WatchedKind, obj: &DynamicObject) -> Api<DynamicObject> {
        match obj.metadata.namespace.as_deref() {
            Some(ns) if wk.namespaced => {
                Api::namespaced_with(self.client.clone(), ns, &wk.resource)
            }
            _ => Api::all_with(self.client.clone(), &wk.resource),
        }
    }

    async fn patch_status(
        &self,
        wk: &WatchedKind,
        obj: &DynamicObject,
        patch: Value,
    ) -> Result<(), ReportError> {
        let name = obj.metadata.name.clone().unwrap_or_default();
        self.status_api(wk, obj)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(|_| ())
            .map_err(|cause| ReportError::Status {
                kind: wk.name(),
                key: super::convert::object_key(obj),
                cause,
            })
    }

    /// Writes why `obj` was rejected: its status (kinds with a status subresource) and a
    /// Warning Event. Both are tried; every failure is returned.
    pub async fn rejected(
        &self,
        wk: &WatchedKind,
        obj: &DynamicObject,
        errors: &[ValidationError],
    ) -> Vec<ReportError> {
        let mut failures = Vec::new();
        if wk.writes_status
            && let Err(e) = self
                .patch_status(wk, obj, rejected_status(obj, errors))
                .await
        {
            failures.push(e);
        }
        let event = rejected_event(wk, obj, errors, &self.instance);
        let events: Api<Event> = Api::namespaced(self.client.clone(), event_namespace(obj));
        if let Err(cause) = events.create(&PostParams::default(), &event).await {
            failures.push(ReportError::Event {
                kind: wk.name(),
                key: super::convert::object_key(obj),
                cause,
            });
        }
        failures
    }

    /// Clears the messages galley wrote on `obj`, now valid.
    pub async fn accepted(&self, wk: &WatchedKind, obj: &DynamicObject) -> Result<(), ReportError> {
        let mut status = json!({"validationMessages": null});
        if let Some(g) = obj.metadata.generation {
            status["observedGeneration"] = json!(g);
        }
        self.patch_status(wk, obj, json!({"status": status})).await
    }
}
