//! The configuration Mixer holds: typed rules, handlers, instances, attribute manifests, and the
//! pods it uses to fill in workload attributes.

use std::collections::BTreeMap;

use mesh_proto::config::{ConfigObject, HandlerSpec, InstanceSpec, Kind, Pod, RuleSpec};
use mesh_proto::mcp::sink::Update;

/// What Mixer knows of a pod (Kubernetes workload attributes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
    pub ip: Option<String>,
}

/// Why a decoded MCP update could not be applied (the sink NACKs it).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("collection {0:?} is not one Mixer subscribes to")]
    UnknownCollection(String),
    #[error("{kind} {key}: {message}")]
    Spec {
        kind: &'static str,
        key: String,
        message: String,
    },
}

/// Every subscribed collection, keyed by `namespace/name`.
#[derive(Debug, Clone, Default)]
pub struct ConfigState {
    pub rules: BTreeMap<String, RuleSpec>,
    pub handlers: BTreeMap<String, HandlerSpec>,
    pub instances: BTreeMap<String, InstanceSpec>,
    pub manifests: BTreeMap<String, ConfigObject>,
    pub pods: BTreeMap<String, PodInfo>,
}

enum Typed {
    Rule(RuleSpec),
    Handler(HandlerSpec),
    Instance(InstanceSpec),
    Manifest(ConfigObject),
    Pod(PodInfo),
}

fn spec_err(kind: Kind, key: &str, e: impl std::fmt::Display) -> ApplyError {
    ApplyError::Spec {
        kind: kind.info().kind,
        key: key.to_string(),
        message: e.to_string(),
    }
}

fn typed(kind: Kind, obj: ConfigObject) -> Result<Typed, ApplyError> {
    let key = obj.key();
    Ok(match kind {
        Kind::Rule => Typed::Rule(obj.spec().map_err(|e| spec_err(kind, &key, e))?),
        Kind::Handler => Typed::Handler(obj.spec().map_err(|e| spec_err(kind, &key, e))?),
        Kind::Instance => Typed::Instance(obj.spec().map_err(|e| spec_err(kind, &key, e))?),
        Kind::AttributeManifest => Typed::Manifest(obj),
        Kind::Pod => {
            let pod: Pod = obj.body_as().map_err(|e| spec_err(kind, &key, e))?;
            Typed::Pod(PodInfo {
                name: obj.metadata.name.clone(),
                namespace: obj.metadata.namespace.clone(),
                labels: obj.metadata.labels.clone(),
                service_account: pod.spec.service_account_name,
                ip: pod.status.pod_ip,
            })
        }
        other => {
            return Err(ApplyError::UnknownCollection(
                other.info().collection.into(),
            ));
        }
    })
}

impl ConfigState {
    /// Applies one decoded MCP update. Either every object has a valid spec and the collection
    /// is updated (full state replaces, incremental adds and removes), or nothing changes.
    pub fn apply(&mut self, update: Update) -> Result<(), ApplyError> {
        let kind = update.kind;
        if !matches!(
            kind,
            Kind::Rule | Kind::Handler | Kind::Instance | Kind::AttributeManifest | Kind::Pod
        ) {
            return Err(ApplyError::UnknownCollection(
                kind.info().collection.to_string(),
            ));
        }
        let mut decoded = Vec::with_capacity(update.objects.len());
        for obj in update.objects {
            decoded.push((obj.key(), typed(kind, obj)?));
        }
        let full = !update.incremental;
        match kind {
            Kind::Rule => replace(
                &mut self.rules,
                full,
                &update.removed,
                decoded,
                |t| match t {
                    Typed::Rule(r) => Some(r),
                    _ => None,
                },
            ),
            Kind::Handler => replace(
                &mut self.handlers,
                full,
                &update.removed,
                decoded,
                |t| match t {
                    Typed::Handler(h) => Some(h),
                    _ => None,
                },
            ),
            Kind::Instance => {
                replace(
                    &mut self.instances,
                    full,
                    &update.removed,
                    decoded,
                    |t| match t {
                        Typed::Instance(i) => Some(i),
                        _ => None,
                    },
                )
            }
            Kind::AttributeManifest => replace(
                &mut self.manifests,
                full,
                &update.removed,
                decoded,
                |t| match t {
                    Typed::Manifest(m) => Some(m),
                    _ => None,
                },
            ),
            _ => replace(
                &mut self.pods,
                full,
                &update.removed,
                decoded,
                |t| match t {
                    Typed::Pod(p) => Some(p),
                    _ => None,
                },
            ),
        }
        Ok(())
    }
}

fn replace<T>(
    map: &mut BTreeMap<String, T>,
    full: bool,
    removed: &[String],
    decoded: Vec<(String, Typed)>,
    pick: impl Fn(Typed) -> Option<T>,
) {
    if full {
        map.clear();
    }
    for key in removed {
        map.remove(key);
    }
    for (key, t) in decoded {
        if let Some(v) = pick(t) {
            map.insert(key, v);
        }
    }
}
