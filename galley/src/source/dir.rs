//! The watched config directory: `*.yaml`, `*.yml`, `*.json` files read recursively, polled for
//! changes, turned into store changes against what the directory contributed before.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use mesh_proto::config::{ConfigObject, Kind};

use super::read::{ReadError, read_config_file};
use crate::store::{Change, Store};
use crate::validate::{Report, Skipped, ValidObject, ValidationError, check_text};

/// The directory itself cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read config dir {path}: {cause}")]
pub struct SourceError {
    pub path: String,
    pub cause: std::io::Error,
}

/// What one file last contributed: its stamp and its last valid objects.
#[derive(Debug, Clone)]
struct FileState {
    stamp: (Option<SystemTime>, u64),
    objects: Vec<ValidObject>,
}

type ObjectId = (Kind, String);

/// The result of one scan: the changes that bring the store to the directory's content, and
/// what the files read in this scan had wrong or skipped.
#[derive(Debug, Default)]
pub struct DirSync {
    pub changes: Vec<Change>,
    pub errors: Vec<ValidationError>,
    pub skipped: Vec<Skipped>,
    /// Files (re)read in this scan.
    pub files_read: usize,
    desired: BTreeMap<ObjectId, ConfigObject>,
}

/// A config directory and what it has put in the store.
#[derive(Debug)]
pub struct DirSource {
    root: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    /// The objects the directory has in the store (as last applied).
    active: BTreeMap<ObjectId, ConfigObject>,
}

fn is_config_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

impl DirSource {
    pub fn new(root: impl Into<PathBuf>) -> DirSource {
        DirSource {
            root: root.into(),
            files: BTreeMap::new(),
            active: BTreeMap::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Lists the config files under the root with their stamps.
    fn list(&self) -> Result<BTreeMap<PathBuf, (Option<SystemTime>, u64)>, SourceError> {
        let mut out = BTreeMap::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(cause) if dir == self.root => {
                    return Err(SourceError {
                        path: dir.display().to_string(),
                        cause,
                    });
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot read config subdirectory");
                    continue;
                }
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if is_hidden(&path) {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if meta.is_dir() {
                    dirs.push(path);
                } else if meta.is_file() && is_config_file(&path) {
                    out.insert(path, (meta.modified().ok(), meta.len()));
                }
            }
        }
        Ok(out)
    }

    fn display_name(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// Reads the files that are new or changed since the last scan and computes the store
    /// changes. A file with any invalid document keeps its previous (last valid) contribution;
    /// a file that is gone contributes nothing. Call [`DirSource::accept`] once the changes
    /// are stored.
    pub fn scan(&mut self) -> Result<DirSync, SourceError> {
        let listed = self.list()?;
        let mut sync = DirSync::default();
        self.files.retain(|path, _| listed.contains_key(path));
        for (path, stamp) in listed {
            if self.files.get(&path).is_some_and(|f| f.stamp == stamp) {
                continue;
            }
            let name = self.display_name(&path);
            let report = match read_config_file(&path) {
                Ok(text) => check_text(&name, &text),
                Err(e) if e.is_not_found() => continue,
                Err(e @ ReadError::Io { .. }) => {
                    tracing::warn!(file = %name, error = %e, "cannot read config file");
                    continue;
                }
                // Too large or not text: an error of the file, like an invalid document.
                Err(e) => Report {
                    errors: vec![ValidationError {
                        file: name.clone(),
                        line: 1,
                        kind: String::new(),
                        namespace: String::new(),
                        name: String::new(),
                        field: String::new(),
                        message: e.to_string(),
                    }],
                    ..Report::default()
                },
            };
            sync.files_read += 1;
            sync.skipped.extend(report.skipped);
            if report.errors.is_empty() {
                self.files.insert(
                    path,
                    FileState {
                        stamp,
                        objects: report.objects,
                    },
                );
            } else {
                sync.errors.extend(report.errors);
                let objects = self
                    .files
                    .get(&path)
                    .map(|f| f.objects.clone())
                    .unwrap_or_default();
                self.files.insert(path, FileState { stamp, objects });
            }
        }
        for file in self.files.values() {
            for v in &file.objects {
                sync.desired
                    .insert((v.kind, v.object.key()), v.object.clone());
            }
        }
        for (id, obj) in &sync.desired {
            let unchanged = self.active.get(id).is_some_and(|a| a == obj);
            if !unchanged {
                sync.changes.push(Change::Put(id.0, obj.clone()));
            }
        }
        for (kind, key) in self.active.keys() {
            if !sync.desired.contains_key(&(*kind, key.clone())) {
                let (namespace, name) = match key.split_once('/') {
                    Some((ns, n)) => (ns.to_string(), n.to_string()),
                    None => (String::new(), key.clone()),
                };
                sync.changes.push(Change::Delete {
                    kind: *kind,
                    namespace,
                    name,
                });
            }
        }
        Ok(sync)
    }

    /// Records that `sync`'s changes are in the store.
    pub fn accept(&mut self, sync: DirSync) {
        self.active = sync.desired;
    }

    /// Scans, logs what is wrong, applies the changes; returns the scan's result.
    pub async fn sync_into(&mut self, store: &Store) -> Result<SyncOutcome, SyncError> {
        let sync = self.scan()?;
        for e in &sync.errors {
            tracing::warn!(error = %e, "invalid config in directory; keeping the file's last valid objects");
        }
        for s in &sync.skipped {
            tracing::info!(file = %s.file, line = s.line, kind = %s.kind, reason = %s.reason, "skipped document");
        }
        let outcome = SyncOutcome {
            changes: sync.changes.len(),
            errors: sync.errors.len(),
        };
        if !sync.changes.is_empty() {
            let res = store.apply(sync.changes.clone()).await?;
            tracing::info!(changes = outcome.changes, revision = res.revision, dir = %self.root.display(), "config dir applied");
        }
        self.accept(sync);
        Ok(outcome)
    }

    /// Polls the directory every `interval` and applies its changes until `shutdown` resolves.
    pub async fn watch(
        mut self,
        store: Store,
        interval: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.sync_into(&store).await {
                tracing::warn!(error = %e, "config dir sync failed; will retry");
            }
        }
    }
}

/// Counts of one sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncOutcome {
    pub changes: usize,
    pub errors: usize,
}

/// A sync could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const VS_A: &str = "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {name: a}\nspec: {hosts: [a], tcp: [{route: [{destination: {host: a}}]}]}\n";
    const VS_B: &str = "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {name: b}\nspec: {hosts: [b], tcp: [{route: [{destination: {host: b}}]}]}\n";

    fn keys(store: &Store) -> Vec<String> {
        store
            .list(Kind::VirtualService, None)
            .unwrap()
            .iter()
            .map(ConfigObject::key)
            .collect()
    }

    #[tokio::test]
    async fn files_added_changed_broken_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a.yaml"), VS_A).unwrap();
        std::fs::write(
            dir.path().join("sub/b.yml"),
            format!("{VS_B}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: x}}\n"),
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "kind: nope").unwrap();
        let store = Store::temporary().unwrap();
        let mut src = DirSource::new(dir.path());
        let out = src.sync_into(&store).await.unwrap();
        assert_eq!(
            out,
            SyncOutcome {
                changes: 2,
                errors: 0
            }
        );
        assert_eq!(keys(&store), vec!["default/a", "default/b"]);
        assert_eq!(
            src.sync_into(&store).await.unwrap().changes,
            0,
            "nothing changed"
        );

        // b also defined in a second file: removing one keeps it
        std::fs::write(
            dir.path().join("b2.json"),
            serde_json::to_string(&serde_saphyr::from_str::<serde_json::Value>(VS_B).unwrap())
                .unwrap(),
        )
        .unwrap();
        src.sync_into(&store).await.unwrap();
        std::fs::remove_file(dir.path().join("sub/b.yml")).unwrap();
        src.sync_into(&store).await.unwrap();
        assert_eq!(keys(&store), vec!["default/a", "default/b"]);

        // an invalid edit keeps the last valid content and reports the error with the file name
        let rev = store.revision();
        std::fs::write(
            dir.path().join("a.yaml"),
            VS_A.replace("hosts: [a]", "hosts: []") + "\n",
        )
        .unwrap();
        let mut scan = src.scan().unwrap();
        assert_eq!(scan.errors.len(), 1);
        assert_eq!(scan.errors[0].file, "a.yaml");
        assert_eq!(scan.errors[0].field, "spec.hosts");
        assert!(scan.changes.is_empty());
        scan.changes.clear();
        src.accept(scan);
        assert_eq!(store.revision(), rev);

        std::fs::remove_file(dir.path().join("b2.json")).unwrap();
        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        let out = src.sync_into(&store).await.unwrap();
        assert_eq!(out.changes, 2);
        assert!(keys(&store).is_empty());
    }

    #[tokio::test]
    async fn watch_picks_up_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::temporary().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(DirSource::new(dir.path()).watch(
            store.clone(),
            Duration::from_millis(50),
            async move {
                let _ = rx.await;
            },
        ));
        std::fs::write(dir.path().join("a.yaml"), VS_A).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while keys(&store).is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "new file not applied"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tx.send(()).unwrap();
        task.await.unwrap();
    }

    #[test]
    fn missing_dir_is_an_error() {
        let mut src = DirSource::new("/nonexistent/galley/config");
        let err = src.scan().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read config dir /nonexistent/galley/config")
        );
    }
}
