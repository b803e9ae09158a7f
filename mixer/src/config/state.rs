//! The configuration Mixer holds: typed rules, handlers, instances, attribute manifests, and the
//! pods it uses to fill in workload attributes.

use std::collections::BTreeMap;

use mesh_proto::config::{ConfigObject, HandlerSpec, InstanceSpec, Kind, Pod, RuleSpec};
use mesh_proto::mcp::sink::Update;

use super::legacy::{Legacy, LegacyKind};

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
    /// Handlers written as `kind: <adapter>` ([`super::legacy`]), by adapter then key.
    pub legacy_handlers: BTreeMap<&'static str, BTreeMap<String, HandlerSpec>>,
    /// Instances written as `kind: <template>`, by template then key.
    pub legacy_instances: BTreeMap<&'static str, BTreeMap<String, InstanceSpec>>,
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
    /// The handler `namespace/name`: a `handler` object, else a legacy `kind: <adapter>` one.
    pub fn handler(&self, key: &str) -> Option<&HandlerSpec> {
        self.handlers
            .get(key)
            .or_else(|| self.legacy_handlers.values().find_map(|m| m.get(key)))
    }

    /// The instance `namespace/name`: an `instance` object, else a legacy `kind: <template>` one.
    pub fn instance(&self, key: &str) -> Option<&InstanceSpec> {
        self.instances
            .get(key)
            .or_else(|| self.legacy_instances.values().find_map(|m| m.get(key)))
    }

    /// Applies the legacy collection of `kind` (see [`super::legacy`]): `objects` replace it
    /// (`full`) or are added, and `removed` keys are deleted. Objects of another kind are
    /// refused and nothing changes.
    pub fn apply_legacy(
        &mut self,
        kind: LegacyKind,
        full: bool,
        objects: &[ConfigObject],
        removed: &[String],
    ) -> Result<(), ApplyError> {
        let mut converted = Vec::with_capacity(objects.len());
        for obj in objects {
            if LegacyKind::of(&obj.api_version, &obj.kind) != Some(kind) {
                return Err(ApplyError::Spec {
                    kind: kind.name(),
                    key: obj.key(),
                    message: format!(
                        "object of kind {:?} in the {} collection",
                        obj.kind,
                        kind.name()
                    ),
                });
            }
            converted.push((obj.key(), kind.convert(obj)));
        }
        match kind {
            LegacyKind::Adapter(a) => {
                let map = self.legacy_handlers.entry(a).or_default();
                if full {
                    map.clear();
                }
                for k in removed {
                    map.remove(k);
                }
                for (k, l) in converted {
                    if let Legacy::Handler(h) = l {
                        map.insert(k, h);
                    }
                }
            }
            LegacyKind::Template(t) => {
                let map = self.legacy_instances.entry(t).or_default();
                if full {
                    map.clear();
                }
                for k in removed {
                    map.remove(k);
                }
                for (k, l) in converted {
                    if let Legacy::Instance(i) = l {
                        map.insert(k, i);
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds `objects` of any Mixer kind (rule, handler, instance, attributemanifest, pod, or a
    /// legacy adapter/template kind) to what is held; objects of other kinds are returned.
    pub fn apply_objects(
        &mut self,
        objects: Vec<ConfigObject>,
    ) -> Result<Vec<ConfigObject>, ApplyError> {
        let mut other = Vec::new();
        for obj in objects {
            if let Some(kind) = Kind::from_type(&obj.api_version, &obj.kind) {
                if matches!(
                    kind,
                    Kind::Rule
                        | Kind::Handler
                        | Kind::Instance
                        | Kind::AttributeManifest
                        | Kind::Pod
                        | Kind::Legacy(_)
                ) {
                    self.apply(Update {
                        kind,
                        version: String::new(),
                        incremental: true,
                        objects: vec![obj],
                        removed: vec![],
                    })?;
                    continue;
                }
            } else if let Some(kind) = LegacyKind::of(&obj.api_version, &obj.kind) {
                self.apply_legacy(kind, false, std::slice::from_ref(&obj), &[])?;
                continue;
            }
            other.push(obj);
        }
        Ok(other)
    }

    /// Applies one decoded MCP update. Either every object has a valid spec and the collection
    /// is updated (full state replaces, incremental adds and removes), or nothing changes.
    pub fn apply(&mut self, update: Update) -> Result<(), ApplyError> {
        let kind = update.kind;
        if let Kind::Legacy(_) = kind {
            let legacy = LegacyKind::from_kind(kind)
                .ok_or_else(|| ApplyError::UnknownCollection(kind.info().collection.to_string()))?;
            return self.apply_legacy(
                legacy,
                !update.incremental,
                &update.objects,
                &update.removed,
            );
        }
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
