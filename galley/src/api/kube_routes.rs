//! The apply API's handlers with `--kube` (see [`super::kube`]): apply and delete write the API
//! server and answer once this replica's watch delivered the change; history and rollback are
//! not offered (the API server keeps no history galley could roll back to, and each replica's
//! local revisions differ).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mesh_proto::config::Kind;
use serde_json::{Value, json};

use super::kube::{KubeWriter, Written};
use super::routes::{ApiState, error};
use crate::source::kube::is_from_kubernetes;
use crate::validate::Report;

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY)
}

/// `POST /apis/v1/apply` after validation passed: every object is checked to be writable (else
/// nothing is written), written in order (the first refusal stops, and the answer lists what
/// was written before it), then awaited in this replica's store.
pub(super) async fn apply(
    s: &ApiState,
    writer: &KubeWriter,
    source: &str,
    report: Report,
) -> Response {
    let refusals: Vec<(u16, Value)> = report
        .objects
        .iter()
        .filter_map(|v| {
            writer
                .refusal(v.kind, &v.object.metadata.namespace)
                .map(|r| {
                    (
                        r.status,
                        json!({"file": v.file, "line": v.line, "kind": v.kind.info().kind,
                           "namespace": v.object.metadata.namespace, "name": v.object.metadata.name,
                           "field": "", "message": r.message}),
                    )
                })
        })
        .collect();
    if let Some((code, first)) = refusals.first() {
        s.metrics.rejected.inc();
        let errors: Vec<Value> = refusals.iter().map(|(_, e)| e.clone()).collect();
        tracing::info!(source = %source, refused = errors.len(), "apply refused: not writable with --kube");
        return (
            status(*code),
            Json(json!({"error": first["message"], "errors": errors})),
        )
            .into_response();
    }

    let mut written: Vec<(Kind, String, String, String, String)> = Vec::new();
    for v in &report.objects {
        match writer.put(v.kind, &v.object).await {
            Ok(rv) => written.push((
                v.kind,
                v.object.key(),
                v.object.metadata.namespace.clone(),
                v.object.metadata.name.clone(),
                rv,
            )),
            Err(e) => {
                s.metrics.kube_write_errors.inc();
                tracing::warn!(source = %source, error = %e, written = written.len(), "apply: the API server refused a write");
                let done: Vec<Value> = written
                    .iter()
                    .map(|(k, _, ns, n, rv)| json!({"kind": k.info().kind, "namespace": ns, "name": n, "resourceVersion": rv}))
                    .collect();
                return (
                    status(e.status()),
                    Json(
                        json!({"error": e.to_string(), "applied": done, "skipped": report.skipped}),
                    ),
                )
                    .into_response();
            }
        }
    }

    let mut applied = Vec::with_capacity(written.len());
    for (kind, key, namespace, name, rv) in written {
        if !writer.wait_delivered(kind, &key, &rv).await {
            s.metrics.kube_wait_timeouts.inc();
            tracing::warn!(kind = kind.info().kind, object = %key, resource_version = %rv, "apply: written, but not delivered by this replica's watch in time");
            return error(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "{} {key}: the API server accepted the write (resourceVersion {rv}) but this \
                     galley's watch did not deliver it within {} ms; it is stored in Kubernetes \
                     and will reach the mesh when the watch catches up",
                    kind.info().kind,
                    writer.wait().as_millis()
                ),
            );
        }
        let revision = s
            .store
            .get(kind, &namespace, &name)
            .ok()
            .flatten()
            .and_then(|o| o.metadata.resource_version)
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| s.store.revision());
        applied.push(Written {
            kind: kind.info().kind.to_string(),
            namespace,
            name,
            revision,
            resource_version: rv,
        });
    }
    s.metrics.applies.inc();
    tracing::info!(source = %source, objects = applied.len(), revision = s.store.revision(), "apply written to the API server");
    Json(json!({"applied": applied, "skipped": report.skipped})).into_response()
}

/// `DELETE /apis/v1/{kind}/{namespace}/{name}`: deleted in the API server, answered once this
/// replica's store no longer has it.
pub(super) async fn remove(
    s: &ApiState,
    writer: &KubeWriter,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Response {
    let kind_name = kind.info().kind;
    if let Some(r) = writer.refusal(kind, namespace) {
        return error(status(r.status), r.message);
    }
    match writer.delete(kind, namespace, name).await {
        Ok(true) => {
            if !writer.wait_gone(&s.store, kind, namespace, name).await {
                s.metrics.kube_wait_timeouts.inc();
                return error(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "{kind_name} {namespace}/{name}: deleted in the API server but this \
                         galley's watch did not deliver the deletion within {} ms",
                        writer.wait().as_millis()
                    ),
                );
            }
            tracing::info!(
                kind = kind_name,
                namespace,
                name,
                "deleted in the API server"
            );
            Json(json!({"deleted": {
                "kind": kind_name, "namespace": namespace, "name": name, "revision": s.store.revision()
            }}))
            .into_response()
        }
        Ok(false) => match s.store.get(kind, namespace, name) {
            Ok(Some(o)) if !is_from_kubernetes(&o) => error(
                StatusCode::CONFLICT,
                format!(
                    "{kind_name} {namespace}/{name} is not in the API server: it comes from \
                     galley's config directory (the chart's ConfigMap); remove it there"
                ),
            ),
            _ => error(
                StatusCode::NOT_FOUND,
                format!("{kind_name} {namespace}/{name} not found"),
            ),
        },
        Err(e) => {
            s.metrics.kube_write_errors.inc();
            tracing::warn!(error = %e, "delete: the API server refused it");
            error(status(e.status()), e.to_string())
        }
    }
}

/// History and rollback with `--kube`: 501.
pub(super) fn no_history() -> Response {
    error(
        StatusCode::NOT_IMPLEMENTED,
        "history and rollback are not available with --kube: the Kubernetes API server is the \
         store and keeps no history; each galley replica's local revisions differ. Use your \
         manifests' version control (or kubectl) to restore an earlier object",
    )
}
