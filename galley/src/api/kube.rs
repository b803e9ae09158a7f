//! The apply API with `--kube`: the API server is the store. An apply is validated exactly as
//! without `--kube` (same errors, nothing written when invalid), then each object is written to
//! the API server, and the answer waits (bounded) until this replica's own watch delivered the
//! written `resourceVersion` into its store, so its MCP snapshot has it (read-your-write). Every
//! other replica's watch brings it into theirs.
//!
//! Writes are create-or-replace, not server-side apply: `meshctl apply` means "the object
//! becomes this document" (as a store `Put` does without `--kube`); server-side apply would
//! merge with fields other managers own (a route added with `kubectl edit` would survive a
//! `meshctl apply` that leaves it out). The replace carries the `resourceVersion` just read, so
//! a change by someone else in between is a 409 reported to the caller, never overwritten.
//! Context kinds (Service, Endpoints, Pod, ...) belong to Kubernetes and its controllers: they
//! are read-only here (405).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use mesh_proto::config::{ConfigObject, Kind};
use serde::Serialize;

use crate::source::kube::{ORIGIN_ANNOTATION, Observed, WatchedKind, is_from_kubernetes};
use crate::store::Store;

/// The field manager of galley's writes (`metadata.managedFields[].manager`).
pub const FIELD_MANAGER: &str = "galley";
/// How long an apply waits for this replica's watch to deliver what it wrote.
pub const READ_YOUR_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes Istio config objects to the API server for the apply API.
#[derive(Clone)]
pub struct KubeWriter {
    client: kube::Client,
    observed: Observed,
    /// `--kube-namespace`: the only namespace watched, so the only one writable.
    namespace: Option<String>,
    /// The writable kinds: the Istio kinds with a CRD.
    kinds: Arc<HashMap<Kind, WatchedKind>>,
    wait: Duration,
}

impl std::fmt::Debug for KubeWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeWriter")
            .field("namespace", &self.namespace)
            .field("kinds", &self.kinds.len())
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

/// Why an object cannot be written through galley in `--kube` mode (before anything is sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 405 (a kind galley does not write) or 403 (outside the watched namespace).
    pub status: u16,
    pub message: String,
}

/// A write the API server refused or that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(
        "{kind} {key}: conflict: the API server refused the write ({message}); the object changed \
         while galley wrote it, apply again"
    )]
    Conflict {
        kind: &'static str,
        key: String,
        message: String,
    },
    #[error("{kind} {key}: the API server refused the write: {code} {reason}: {message}")]
    Refused {
        kind: &'static str,
        key: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("{kind} {key}: cannot write to the API server: {cause}")]
    Unreachable {
        kind: &'static str,
        key: String,
        cause: kube::Error,
    },
    #[error("{kind} {key}: cannot encode the object for the API server: {cause}")]
    Encode {
        kind: &'static str,
        key: String,
        cause: serde_json::Error,
    },
}

impl WriteError {
    /// The HTTP status the apply API answers with: 409 for a conflict, the API server's own
    /// 4xx for a request it found wrong (400, 403, 422), else 502 (galley could not write).
    pub fn status(&self) -> u16 {
        match self {
            WriteError::Conflict { .. } => 409,
            WriteError::Refused { code, .. } if matches!(code, 400 | 403 | 422) => *code,
            _ => 502,
        }
    }

    fn from_kube(kind: &'static str, key: String, e: kube::Error) -> WriteError {
        match e {
            kube::Error::Api(s) if s.is_conflict() || s.is_already_exists() => {
                WriteError::Conflict {
                    kind,
                    key,
                    message: s.message,
                }
            }
            kube::Error::Api(s) => WriteError::Refused {
                kind,
                key,
                code: s.code,
                reason: s.reason,
                message: s.message,
            },
            cause => WriteError::Unreachable { kind, key, cause },
        }
    }
}

/// One object written: what the apply API answers per object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Written {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// This replica's store revision holding the object (what its MCP snapshot reports).
    pub revision: u64,
    /// The API server's `resourceVersion` of the write.
    #[serde(rename = "resourceVersion")]
    pub resource_version: String,
}

impl KubeWriter {
    /// `observed`: the replica's own watches (`KubeSource::observed`); `namespace`: the
    /// `--kube-namespace` watched, if any.
    pub fn new(client: kube::Client, observed: Observed, namespace: Option<String>) -> KubeWriter {
        let kinds = crate::source::kube::watched_kinds()
            .into_iter()
            .filter(|w| w.kind.info().group.ends_with("istio.io"))
            .map(|w| (w.kind, w))
            .collect();
        KubeWriter {
            client,
            observed,
            namespace,
            kinds: Arc::new(kinds),
            wait: READ_YOUR_WRITE_TIMEOUT,
        }
    }

    /// How long a write waits for the replica's watch (default [`READ_YOUR_WRITE_TIMEOUT`]).
    pub fn with_wait(mut self, wait: Duration) -> KubeWriter {
        self.wait = wait;
        self
    }

    /// How long a write waits for the replica's watch.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// Why `kind` in `namespace` cannot be written, if it cannot.
    pub fn refusal(&self, kind: Kind, namespace: &str) -> Option<Refusal> {
        let name = kind.info().kind;
        if !self.kinds.contains_key(&kind) {
            let message = if kind.info().group.ends_with("istio.io") {
                format!("{name} has no CRD galley writes to; it cannot be applied with --kube")
            } else {
                format!(
                    "{name} is read-only through galley with --kube: it belongs to Kubernetes \
                     (write it with kubectl; galley watches it)"
                )
            };
            return Some(Refusal {
                status: 405,
                message,
            });
        }
        match &self.namespace {
            Some(ns) if kind.info().namespaced && ns != namespace => Some(Refusal {
                status: 403,
                message: format!(
                    "{name} in namespace {namespace:?}: galley watches only namespace {ns:?} \
                     (--kube-namespace)"
                ),
            }),
            _ => None,
        }
    }

    fn api(&self, wk: &WatchedKind, namespace: &str) -> Api<DynamicObject> {
        if wk.namespaced {
            Api::namespaced_with(self.client.clone(), namespace, &wk.resource)
        } else {
            Api::all_with(self.client.clone(), &wk.resource)
        }
    }

    fn params() -> PostParams {
        PostParams {
            dry_run: false,
            field_manager: Some(FIELD_MANAGER.to_string()),
        }
    }

    /// Creates or replaces `obj` (a validated `kind` object) in the API server; its new
    /// `resourceVersion`.
    pub async fn put(&self, kind: Kind, obj: &ConfigObject) -> Result<String, WriteError> {
        let name = kind.info().kind;
        let key = obj.key();
        let Some(wk) = self.kinds.get(&kind) else {
            return Err(WriteError::Refused {
                kind: name,
                key,
                code: 405,
                reason: "MethodNotAllowed".into(),
                message: "not an Istio kind with a CRD".into(),
            });
        };
        let mut body = to_dynamic(wk, obj).map_err(|cause| WriteError::Encode {
            kind: name,
            key: key.clone(),
            cause,
        })?;
        let api = self.api(wk, &obj.metadata.namespace);
        let current = api
            .get_opt(&obj.metadata.name)
            .await
            .map_err(|e| WriteError::from_kube(name, key.clone(), e))?;
        let written = match current {
            None => api.create(&Self::params(), &body).await,
            Some(cur) => {
                body.metadata.resource_version = cur.metadata.resource_version;
                api.replace(&obj.metadata.name, &Self::params(), &body)
                    .await
            }
        }
        .map_err(|e| WriteError::from_kube(name, key.clone(), e))?;
        Ok(written.metadata.resource_version.unwrap_or_default())
    }

    /// Deletes `kind` `namespace/name` from the API server; `false` when it is not there.
    pub async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<bool, WriteError> {
        let kind_name = kind.info().kind;
        let key = if kind.info().namespaced {
            format!("{namespace}/{name}")
        } else {
            name.to_string()
        };
        let Some(wk) = self.kinds.get(&kind) else {
            return Err(WriteError::Refused {
                kind: kind_name,
                key,
                code: 405,
                reason: "MethodNotAllowed".into(),
                message: "not an Istio kind with a CRD".into(),
            });
        };
        match self
            .api(wk, namespace)
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(false),
            Err(e) => Err(WriteError::from_kube(kind_name, key, e)),
        }
    }

    /// Waits until this replica's watch delivered `kind` `key` at `version`; whether it did
    /// within the wait.
    pub async fn wait_delivered(&self, kind: Kind, key: &str, version: &str) -> bool {
        self.observed.wait(kind, key, version, self.wait).await
    }

    /// Waits until `store` no longer holds the Kubernetes object `kind` `namespace/name`;
    /// whether that happened within the wait.
    pub async fn wait_gone(&self, store: &Store, kind: Kind, namespace: &str, name: &str) -> bool {
        let mut rx = store.subscribe();
        let gone = async {
            loop {
                rx.borrow_and_update();
                match store.get(kind, namespace, name) {
                    Ok(Some(o)) if is_from_kubernetes(&o) => {}
                    Ok(_) => return true,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the store");
                        return false;
                    }
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(self.wait, gone).await.unwrap_or(false)
    }
}

/// `obj` as the API server takes it: in the watched version, without galley's bookkeeping
/// (store revision, origin annotation) and without `status` (the status subresource's).
fn to_dynamic(wk: &WatchedKind, obj: &ConfigObject) -> Result<DynamicObject, serde_json::Error> {
    let mut o = obj.clone();
    o.api_version = wk.resource.api_version.clone();
    o.kind = wk.resource.kind.clone();
    o.metadata.resource_version = None;
    o.metadata.creation_timestamp = None;
    o.metadata.annotations.remove(ORIGIN_ANNOTATION);
    o.body.remove("status");
    if !wk.namespaced {
        o.metadata.namespace.clear();
    }
    serde_json::from_value(serde_json::to_value(&o)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn writer(namespace: Option<&str>) -> KubeWriter {
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        KubeWriter::new(client, Observed::new(), namespace.map(str::to_string))
    }

    #[tokio::test]
    async fn context_kinds_and_other_namespaces_are_refused() {
        let w = writer(Some("prod"));
        assert_eq!(w.refusal(Kind::VirtualService, "prod"), None);
        let r = w.refusal(Kind::Service, "prod").unwrap();
        assert_eq!(r.status, 405);
        assert!(
            r.message.starts_with("Service is read-only"),
            "{}",
            r.message
        );
        let r = w.refusal(Kind::VirtualService, "dev").unwrap();
        assert_eq!(r.status, 403);
        assert!(r.message.contains("--kube-namespace"), "{}", r.message);
        assert_eq!(writer(None).refusal(Kind::Gateway, "any"), None);
    }

    #[test]
    fn written_object_is_in_the_watched_version_without_bookkeeping() {
        let wk = crate::source::kube::watched_kinds()
            .into_iter()
            .find(|w| w.kind == Kind::VirtualService)
            .unwrap();
        let obj: ConfigObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
            "metadata": {"name": "r", "namespace": "prod", "resourceVersion": "42",
                "labels": {"app": "r"},
                "annotations": {ORIGIN_ANNOTATION: "kubernetes", "note": "kept"}},
            "spec": {"hosts": ["r"]}, "status": {"x": 1}
        }))
        .unwrap();
        let d = to_dynamic(&wk, &obj).unwrap();
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["apiVersion"], "networking.istio.io/v1");
        assert_eq!(v["metadata"]["namespace"], "prod");
        assert_eq!(v["metadata"]["labels"]["app"], "r");
        assert_eq!(
            v["metadata"]["annotations"],
            serde_json::json!({"note": "kept"})
        );
        assert!(v["metadata"].get("resourceVersion").is_none(), "{v}");
        assert!(v.get("status").is_none(), "{v}");
        assert_eq!(v["spec"]["hosts"][0], "r");
    }

    /// An API server that takes every create (resourceVersion 7) but whose watch never
    /// delivers: the apply answers 504 after the wait, naming the version written.
    #[tokio::test]
    async fn a_write_the_watch_does_not_deliver_is_a_504_after_the_wait() {
        use axum::http::{Method, Request};
        use tower::ServiceExt;
        let api = axum::Router::new().fallback(|method: Method, body: axum::body::Bytes| async move {
            let (code, body) = if method == Method::POST {
                let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                v["metadata"]["resourceVersion"] = "7".into();
                (201, v)
            } else {
                (404, serde_json::json!({"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}))
            };
            (
                axum::http::StatusCode::from_u16(code).unwrap(),
                [("content-type", "application/json")],
                body.to_string(),
            )
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, api).await });
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let writer = KubeWriter::new(
            kube::Client::try_from(config).unwrap(),
            Observed::new(),
            None,
        )
        .with_wait(Duration::from_millis(50));
        let metrics = super::super::ApiMetrics::default();
        let app =
            super::super::kube_api_router(Store::temporary().unwrap(), metrics.clone(), writer);
        let req = Request::post("/apis/v1/apply")
            .body(axum::body::Body::from(
                "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: prod}\n\
                 spec: {selector: {istio: ingressgateway}, servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]}\n",
            ))
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), 504);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let message = body["error"].as_str().unwrap();
        assert!(
            message.starts_with(
                "Gateway prod/gw: the API server accepted the write (resourceVersion 7)"
            ),
            "{message}"
        );
        assert_eq!(metrics.kube_wait_timeouts.get(), 1);
    }

    #[test]
    fn api_server_errors_map_to_clear_statuses() {
        let status = |code: u16, reason: &str| {
            kube::Error::Api(Box::new(
                serde_json::from_value(serde_json::json!({
                    "status": "Failure", "code": code, "reason": reason, "message": "m"
                }))
                .unwrap(),
            ))
        };
        let e = WriteError::from_kube("VirtualService", "prod/r".into(), status(409, "Conflict"));
        assert_eq!(e.status(), 409);
        assert!(
            e.to_string()
                .starts_with("VirtualService prod/r: conflict: "),
            "{e}"
        );
        let e = WriteError::from_kube("VirtualService", "prod/r".into(), status(422, "Invalid"));
        assert_eq!(e.status(), 422);
        let e = WriteError::from_kube(
            "VirtualService",
            "prod/r".into(),
            status(500, "InternalError"),
        );
        assert_eq!(e.status(), 502);
    }
}
