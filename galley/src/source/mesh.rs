//! The mesh config source: Istio's mesh config YAML (the `mesh` key of the `istio` ConfigMap)
//! from `--mesh-config FILE`, or from a ConfigMap named `istio` with a `mesh` key in the config
//! directory. Validated as [`MeshConfig`]; stored as the one `MeshConfig` object
//! (`istio-system/meshconfig`), so MCP serves it as `istio/mesh/v1alpha1/MeshConfig`.
//!
//! A mesh config that does not validate is refused at start ([`MeshSource::sync_into`] fails)
//! and, on a later change, logged while the previous one stays.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use mesh_proto::config::{ConfigObject, Kind, MESH_CONFIG_RESOURCE, MeshConfig, ObjectMeta};
use serde_json::{Map, Value};

use super::parse::parse_text;
use super::read::read_config_file;
use crate::store::{Change, Store, StoreError};

/// A mesh config that cannot be read or does not validate: names the file, line and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid mesh config {file}:{line}: {field}{sep}{message}", sep = if field.is_empty() { "" } else { ": " })]
pub struct MeshConfigError {
    pub file: String,
    pub line: usize,
    /// Field path inside the mesh config (e.g. `accessLogEncoding`), empty for the whole text.
    pub field: String,
    pub message: String,
}

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum MeshSyncError {
    #[error(transparent)]
    Invalid(#[from] MeshConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where the mesh config came from and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundMeshConfig {
    /// The file (and, for a ConfigMap, `:data.mesh`) it was read from.
    pub source: String,
    pub config: MeshConfig,
}

type Stamp = (Option<SystemTime>, u64);

/// Reads the mesh config from its file or the config directory's `istio` ConfigMap.
#[derive(Debug)]
pub struct MeshSource {
    file: Option<PathBuf>,
    config_dir: Option<PathBuf>,
    /// Per config-dir file: its stamp and the `mesh` text of an `istio` ConfigMap in it (with
    /// the line the text starts near).
    dir_files: BTreeMap<PathBuf, (Stamp, Option<(usize, String)>)>,
    /// What is in the store (as last applied); `None` = no mesh config object.
    active: Option<MeshConfig>,
    /// Whether the store has been brought to `active` once (a stale object removed).
    synced: bool,
}

/// Reads mesh config YAML `text` (the content of the `mesh` key), named `file` in errors,
/// whose first line is line `first_line` of that file.
pub fn parse_mesh_config(
    file: &str,
    first_line: usize,
    text: &str,
) -> Result<MeshConfig, MeshConfigError> {
    let err = |line: usize, field: String, message: String| MeshConfigError {
        file: file.to_string(),
        line,
        field,
        message,
    };
    let mut docs = parse_text(file, text).into_iter();
    let (line, value) = match docs.next() {
        None => (first_line, Value::Null),
        Some(Err(e)) => return Err(err(first_line + e.line - 1, String::new(), e.message)),
        Some(Ok(doc)) => (first_line + doc.line - 1, doc.value),
    };
    if docs.next().is_some() {
        return Err(err(
            line,
            String::new(),
            "a mesh config is one YAML document".into(),
        ));
    }
    if !matches!(value, Value::Object(_) | Value::Null) {
        return Err(err(
            line,
            String::new(),
            "a mesh config is a mapping".into(),
        ));
    }
    MeshConfig::from_json(value).map_err(|e| err(line, e.field, e.message))
}

/// The store object holding `mesh`.
pub fn mesh_config_object(mesh: &MeshConfig) -> ConfigObject {
    let (namespace, name) = MESH_CONFIG_RESOURCE
        .split_once('/')
        .unwrap_or(("istio-system", "meshconfig"));
    let mut body = Map::new();
    body.insert(
        "spec".into(),
        serde_json::to_value(mesh).unwrap_or(Value::Object(Map::new())),
    );
    ConfigObject {
        api_version: Kind::MeshConfig.api_version(),
        kind: Kind::MeshConfig.info().kind.to_string(),
        metadata: ObjectMeta {
            name: name.to_string(),
            namespace: namespace.to_string(),
            ..ObjectMeta::default()
        },
        body,
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    meta.is_file().then(|| (meta.modified().ok(), meta.len()))
}

/// The `mesh` text of a ConfigMap named `istio` in `text`, with its document's line.
fn istio_configmap_mesh(name: &str, text: &str) -> Option<(usize, String)> {
    parse_text(name, text)
        .into_iter()
        .flatten()
        .find_map(|doc| {
            let v = &doc.value;
            let is_istio = v.get("kind").and_then(Value::as_str) == Some("ConfigMap")
                && v.get("apiVersion").and_then(Value::as_str) == Some("v1")
                && v.pointer("/metadata/name").and_then(Value::as_str) == Some("istio");
            let mesh = v.pointer("/data/mesh").and_then(Value::as_str)?;
            is_istio.then(|| (doc.line, mesh.to_string()))
        })
}

impl MeshSource {
    /// A source reading `file` when set, else the `istio` ConfigMap under `config_dir`.
    pub fn new(file: Option<PathBuf>, config_dir: Option<PathBuf>) -> MeshSource {
        MeshSource {
            file,
            config_dir,
            dir_files: BTreeMap::new(),
            active: None,
            synced: false,
        }
    }

    /// Whether there is anywhere to read a mesh config from.
    pub fn is_configured(&self) -> bool {
        self.file.is_some() || self.config_dir.is_some()
    }

    /// Reads the mesh config now: `Ok(None)` when there is none (no file, no ConfigMap).
    pub fn read(&mut self) -> Result<Option<FoundMeshConfig>, MeshConfigError> {
        if let Some(file) = &self.file {
            let name = file.display().to_string();
            let text = read_config_file(file).map_err(|e| MeshConfigError {
                file: name.clone(),
                line: 1,
                field: String::new(),
                message: e.to_string(),
            })?;
            let config = parse_mesh_config(&name, 1, &text)?;
            return Ok(Some(FoundMeshConfig {
                source: name,
                config,
            }));
        }
        let Some(dir) = self.config_dir.clone() else {
            return Ok(None);
        };
        self.rescan_dir(&dir);
        let Some((path, (line, text))) = self
            .dir_files
            .iter()
            .find_map(|(p, (_, m))| m.as_ref().map(|m| (p, m)))
        else {
            return Ok(None);
        };
        let name = path
            .strip_prefix(&dir)
            .unwrap_or(path)
            .display()
            .to_string();
        // The block scalar's content starts below `mesh: |`; the document line is close enough
        // to find it, and the field names the rest.
        let config = parse_mesh_config(&name, *line, text)?;
        Ok(Some(FoundMeshConfig {
            source: format!("{name}:data.mesh"),
            config,
        }))
    }

    /// Re-reads the config-dir files that changed, remembering which hold an `istio` ConfigMap.
    fn rescan_dir(&mut self, dir: &Path) {
        let mut listed = BTreeMap::new();
        let mut dirs = vec![dir.to_path_buf()];
        while let Some(d) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let hidden = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'));
                if hidden {
                    continue;
                }
                if path.is_dir() {
                    dirs.push(path);
                } else if matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                ) && let Some(s) = stamp(&path)
                {
                    listed.insert(path, s);
                }
            }
        }
        self.dir_files.retain(|p, _| listed.contains_key(p));
        for (path, s) in listed {
            if self.dir_files.get(&path).is_some_and(|(old, _)| *old == s) {
                continue;
            }
            let name = path.display().to_string();
            let mesh = read_config_file(&path)
                .ok()
                .and_then(|text| istio_configmap_mesh(&name, &text));
            self.dir_files.insert(path, (s, mesh));
        }
    }

    /// Reads the mesh config and brings the store to it (a missing one removes the stored
    /// object). Returns whether the store changed. An invalid mesh config changes nothing and
    /// is the error.
    pub async fn sync_into(&mut self, store: &Store) -> Result<bool, MeshSyncError> {
        let found = self.read()?;
        let desired = found.as_ref().map(|f| f.config.clone());
        if desired == self.active && self.synced {
            return Ok(false);
        }
        let (namespace, name) = MESH_CONFIG_RESOURCE
            .split_once('/')
            .unwrap_or(("istio-system", "meshconfig"));
        let change = match &desired {
            Some(mesh) => Change::Put(Kind::MeshConfig, mesh_config_object(mesh)),
            None => Change::Delete {
                kind: Kind::MeshConfig,
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
        };
        let res = store.apply(vec![change]).await?;
        let changed = res.applied.iter().any(|a| a.changed);
        match &found {
            Some(f) => {
                tracing::info!(source = %f.source, access_log_file = %f.config.access_log_file, revision = res.revision, changed, "mesh config loaded")
            }
            None => tracing::info!(changed, "no mesh config; proxies get Istio's defaults"),
        }
        self.active = desired;
        self.synced = true;
        Ok(changed)
    }

    /// Polls every `interval` until `shutdown` resolves; an invalid change keeps the previous
    /// mesh config.
    pub async fn watch(
        mut self,
        store: Store,
        interval: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_error: Option<MeshConfigError> = None;
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            match self.sync_into(&store).await {
                Ok(_) => last_error = None,
                Err(MeshSyncError::Invalid(e)) => {
                    if last_error.as_ref() != Some(&e) {
                        tracing::warn!(file = %e.file, line = e.line, field = %e.field, error = %e.message, "invalid mesh config; keeping the previous one");
                    }
                    last_error = Some(e);
                }
                Err(e) => tracing::warn!(error = %e, "mesh config sync failed; will retry"),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mesh_proto::config::AccessLogEncoding;

    fn stored(store: &Store) -> Option<MeshConfig> {
        let obj = store
            .get(Kind::MeshConfig, "istio-system", "meshconfig")
            .unwrap()?;
        Some(MeshConfig::from_json(obj.body["spec"].clone()).unwrap())
    }

    #[test]
    fn bad_enum_names_file_line_and_field() {
        let err = parse_mesh_config(
            "mesh.yaml",
            1,
            "accessLogFile: /dev/stdout\naccessLogEncoding: XML\n",
        )
        .unwrap_err();
        assert_eq!(err.file, "mesh.yaml");
        assert_eq!(err.field, "accessLogEncoding");
        assert!(
            err.to_string()
                .starts_with("invalid mesh config mesh.yaml:1: accessLogEncoding: "),
            "{err}"
        );
        assert!(parse_mesh_config("m", 1, "- a\n").is_err());
        assert_eq!(
            parse_mesh_config("m", 1, "# only a comment\n").unwrap(),
            MeshConfig::default()
        );
    }

    #[tokio::test]
    async fn file_is_stored_reloaded_and_bad_reload_keeps_previous() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("mesh.yaml");
        std::fs::write(
            &file,
            "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\nenableTracing: true\n",
        )
        .unwrap();
        let store = Store::temporary().unwrap();
        let mut src = MeshSource::new(Some(file.clone()), None);
        assert!(src.sync_into(&store).await.unwrap());
        let m = stored(&store).unwrap();
        assert_eq!(m.access_log_file, "/dev/stdout");
        assert_eq!(m.access_log_encoding, AccessLogEncoding::Json);
        assert!(!src.sync_into(&store).await.unwrap(), "nothing changed");

        std::fs::write(&file, "accessLogEncoding: YAML\n").unwrap();
        let err = src.sync_into(&store).await.unwrap_err();
        assert!(err.to_string().contains("accessLogEncoding"), "{err}");
        assert_eq!(stored(&store).unwrap(), m, "previous kept");

        std::fs::write(&file, "accessLogFile: \"\"\n").unwrap();
        assert!(src.sync_into(&store).await.unwrap());
        assert!(!stored(&store).unwrap().access_log_enabled());
    }

    #[tokio::test]
    async fn istio_configmap_in_config_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let cm = tmp.path().join("istio.yaml");
        std::fs::write(
            &cm,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |-\n    accessLogFile: /tmp/x.log\n    outboundTrafficPolicy:\n      mode: REGISTRY_ONLY\n",
        )
        .unwrap();
        std::fs::write(
            tmp.path().join("other.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\ndata: {mesh: 'accessLogFile: /nope'}\n",
        )
        .unwrap();
        let store = Store::temporary().unwrap();
        let mut src = MeshSource::new(None, Some(tmp.path().to_path_buf()));
        src.sync_into(&store).await.unwrap();
        assert_eq!(stored(&store).unwrap().access_log_file, "/tmp/x.log");

        std::fs::remove_file(&cm).unwrap();
        assert!(src.sync_into(&store).await.unwrap());
        assert_eq!(stored(&store), None, "removed with its ConfigMap");
    }
}
