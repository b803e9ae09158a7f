//! The sled-backed config store: objects keyed `collection\0namespace/name`, a global revision,
//! atomic batches, and a change notification.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use mesh_proto::config::{ConfigObject, Kind};
use serde::Serialize;
use tokio::sync::{Mutex, watch};

use super::history::{
    HISTORY_FLOOR_KEY, HISTORY_PREFIX, HistoryEntry, HistoryFilter, now_ms, undo_after,
};
use crate::validate::normalize_namespace;

/// Key of the global revision (collections never start with `\x01`).
const REVISION_KEY: &[u8] = b"\x01revision";
/// Prefix of the per-collection "last changed at revision" keys.
const COLLECTION_REV_PREFIX: &[u8] = b"\x01collection\0";

/// The store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // Errors carry their cause in the message (no `source()`), so logs and the one-line exit
    // message both show it once.
    #[error("cannot open store {path}: {cause}")]
    Open { path: String, cause: sled::Error },
    #[error("store: {0}")]
    Sled(sled::Error),
    #[error("store: refusing {kind} {key:?}: {reason}")]
    Invalid {
        kind: &'static str,
        key: String,
        reason: &'static str,
    },
    #[error("store: cannot encode {key}: {cause}")]
    Encode {
        key: String,
        cause: serde_json::Error,
    },
    #[error("revision {revision} is after the current revision {current}")]
    FutureRevision { revision: u64, current: u64 },
    #[error(
        "revision {revision} is before the store's history, which starts after revision {floor}"
    )]
    BeforeHistory { revision: u64, floor: u64 },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Sled(e)
    }
}

/// One change of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Create or replace an object (its namespace is normalized first).
    Put(Kind, ConfigObject),
    /// Remove an object, if present.
    Delete {
        kind: Kind,
        namespace: String,
        name: String,
    },
}

/// What a change did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The object's revision after the batch: the batch's revision when it changed, its
    /// previous one when it was already identical; for deletions the batch's revision.
    pub revision: u64,
    /// Whether the change wrote anything (false: identical put, or delete of nothing).
    #[serde(skip)]
    pub changed: bool,
}

/// What an applied batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchResult {
    /// The store revision after the batch.
    pub revision: u64,
    pub applied: Vec<Applied>,
}

struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    /// Serializes writers so each batch gets the next revision.
    write: Mutex<()>,
    revision: watch::Sender<u64>,
}

/// Cloneable handle to the store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("revision", &*self.inner.revision.borrow())
            .finish_non_exhaustive()
    }
}

/// `collection\0namespace/name` (or `collection\0name` for cluster-scoped kinds).
pub fn object_key(kind: Kind, namespace: &str, name: &str) -> Vec<u8> {
    let mut k = collection_prefix(kind);
    if kind.info().namespaced {
        k.extend_from_slice(namespace.as_bytes());
        k.push(b'/');
    }
    k.extend_from_slice(name.as_bytes());
    k
}

fn collection_prefix(kind: Kind) -> Vec<u8> {
    let mut k = kind.info().collection.as_bytes().to_vec();
    k.push(0);
    k
}

fn collection_rev_key(kind: Kind) -> Vec<u8> {
    let mut k = COLLECTION_REV_PREFIX.to_vec();
    k.extend_from_slice(kind.info().collection.as_bytes());
    k
}

fn decode_u64(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes)
}

fn decode_object(key: &[u8], value: &[u8]) -> Option<ConfigObject> {
    match serde_json::from_slice(value) {
        Ok(o) => Some(o),
        Err(e) => {
            tracing::warn!(key = %String::from_utf8_lossy(key), error = %e, "skipping unreadable stored object");
            None
        }
    }
}

/// The object without its revision, for "did it change" comparisons.
fn without_revision(obj: &ConfigObject) -> ConfigObject {
    let mut o = obj.clone();
    o.metadata.resource_version = None;
    o
}

impl Store {
    /// Opens (or creates) the store in directory `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = sled::open(path).map_err(|cause| StoreError::Open {
            path: path.display().to_string(),
            cause,
        })?;
        Store::from_db(db)
    }

    /// A store that lives in memory and a temporary file only (for tests).
    pub fn temporary() -> Result<Store, StoreError> {
        let db = sled::Config::new().temporary(true).open()?;
        Store::from_db(db)
    }

    fn from_db(db: sled::Db) -> Result<Store, StoreError> {
        let tree = db.open_tree("config")?;
        let rev = decode_u64(tree.get(REVISION_KEY)?);
        if !tree.contains_key(HISTORY_FLOOR_KEY)? {
            // History starts now: changes up to `rev` cannot be undone.
            tree.insert(HISTORY_FLOOR_KEY, &rev.to_be_bytes())?;
            db.flush()?;
        }
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                tree,
                write: Mutex::new(()),
                revision: watch::Sender::new(rev),
            }),
        })
    }

    /// The current store revision (0 for an empty, never written store).
    pub fn revision(&self) -> u64 {
        *self.inner.revision.borrow()
    }

    /// The revision of the last batch that changed `kind`'s collection (0: never changed).
    pub fn collection_revision(&self, kind: Kind) -> Result<u64, StoreError> {
        Ok(decode_u64(self.inner.tree.get(collection_rev_key(kind))?))
    }

    /// A receiver of the store revision, changed after every batch that wrote something.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.revision.subscribe()
    }

    /// Every object of `kind`, in key order, optionally only those of `namespace`.
    pub fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<Vec<ConfigObject>, StoreError> {
        let mut prefix = collection_prefix(kind);
        if let (Some(ns), true) = (namespace, kind.info().namespaced) {
            prefix.extend_from_slice(ns.as_bytes());
            prefix.push(b'/');
        }
        let mut out = Vec::new();
        for item in self.inner.tree.scan_prefix(prefix) {
            let (k, v) = item?;
            out.extend(decode_object(&k, &v));
        }
        Ok(out)
    }

    /// Every object of `kind`, in key order, each turned by `f` as soon as it is decoded (so the
    /// decoded objects are never all held at once, e.g. while encoding an MCP push).
    pub fn list_map<T>(
        &self,
        kind: Kind,
        mut f: impl FnMut(ConfigObject) -> T,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.tree.scan_prefix(collection_prefix(kind)) {
            let (k, v) = item?;
            out.extend(decode_object(&k, &v).map(&mut f));
        }
        Ok(out)
    }

    /// One object.
    pub fn get(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ConfigObject>, StoreError> {
        let key = object_key(kind, namespace, name);
        Ok(self
            .inner
            .tree
            .get(&key)?
            .and_then(|v| decode_object(&key, &v)))
    }

    /// Removes one object; `None` when it was not there.
    pub async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<u64>, StoreError> {
        let res = self
            .apply(vec![Change::Delete {
                kind,
                namespace: namespace.to_string(),
                name: name.to_string(),
            }])
            .await?;
        Ok(res
            .applied
            .first()
            .filter(|a| a.changed)
            .map(|a| a.revision))
    }

    /// Applies `changes` all together or not at all, under one new revision, and flushes to
    /// disk before returning. Puts identical to what is stored change nothing; a batch that
    /// changes nothing keeps the revision.
    pub async fn apply(&self, changes: Vec<Change>) -> Result<BatchResult, StoreError> {
        let _writer = self.inner.write.lock().await;
        self.apply_locked(changes).await
    }

    /// [`Store::apply`] for a caller holding the writer lock.
    async fn apply_locked(&self, changes: Vec<Change>) -> Result<BatchResult, StoreError> {
        let tree = &self.inner.tree;
        let mut history = Vec::new();
        let next = self.revision() + 1;
        let mut batch = sled::Batch::default();
        // What the batch has written so far, so later changes see earlier ones.
        let mut overlay: HashMap<Vec<u8>, Option<ConfigObject>> = HashMap::new();
        let mut touched = BTreeSet::new();
        let mut applied = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                Change::Put(kind, mut obj) => {
                    normalize_namespace(kind, &mut obj);
                    if obj.metadata.name.is_empty() {
                        return Err(StoreError::Invalid {
                            kind: kind.info().kind,
                            key: obj.key(),
                            reason: "an object needs a name",
                        });
                    }
                    let key = object_key(kind, &obj.metadata.namespace, &obj.metadata.name);
                    let existing = match overlay.get(&key) {
                        Some(o) => o.clone(),
                        None => tree.get(&key)?.and_then(|v| decode_object(&key, &v)),
                    };
                    let same = existing
                        .as_ref()
                        .is_some_and(|e| without_revision(e) == without_revision(&obj));
                    let revision = match (&existing, same) {
                        (Some(e), true) => e
                            .metadata
                            .resource_version
                            .as_deref()
                            .and_then(|r| r.parse().ok())
                            .unwrap_or(next),
                        _ => {
                            obj.metadata.resource_version = Some(next.to_string());
                            history.push(HistoryEntry {
                                revision: next,
                                time_ms: 0,
                                collection: kind.info().collection.to_string(),
                                kind: kind.info().kind.to_string(),
                                namespace: obj.metadata.namespace.clone(),
                                name: obj.metadata.name.clone(),
                                before: existing.clone(),
                                after: Some(obj.clone()),
                            });
                            let bytes =
                                serde_json::to_vec(&obj).map_err(|cause| StoreError::Encode {
                                    key: String::from_utf8_lossy(&key).into_owned(),
                                    cause,
                                })?;
                            batch.insert(key.clone(), bytes);
                            touched.insert(kind);
                            next
                        }
                    };
                    applied.push(Applied {
                        kind: obj.kind.clone(),
                        namespace: obj.metadata.namespace.clone(),
                        name: obj.metadata.name.clone(),
                        revision,
                        changed: !same,
                    });
                    overlay.insert(key, Some(obj));
                }
                Change::Delete {
                    kind,
                    namespace,
                    name,
                } => {
                    let key = object_key(kind, &namespace, &name);
                    let existing = match overlay.get(&key) {
                        Some(o) => o.clone(),
                        None => tree.get(&key)?.and_then(|v| decode_object(&key, &v)),
                    };
                    let exists = existing.is_some();
                    if exists {
                        history.push(HistoryEntry {
                            revision: next,
                            time_ms: 0,
                            collection: kind.info().collection.to_string(),
                            kind: kind.info().kind.to_string(),
                            namespace: namespace.clone(),
                            name: name.clone(),
                            before: existing,
                            after: None,
                        });
                        batch.remove(key.clone());
                        touched.insert(kind);
                        overlay.insert(key, None);
                    }
                    applied.push(Applied {
                        kind: kind.info().kind.to_string(),
                        namespace,
                        name,
                        revision: next,
                        changed: exists,
                    });
                }
            }
        }
        if touched.is_empty() {
            return Ok(BatchResult {
                revision: next - 1,
                applied,
            });
        }
        batch.insert(REVISION_KEY, &next.to_be_bytes());
        let time_ms = now_ms();
        for (i, mut e) in history.into_iter().enumerate() {
            e.time_ms = time_ms;
            let key = e.key(u32::try_from(i).unwrap_or(u32::MAX));
            let bytes = serde_json::to_vec(&e).map_err(|cause| StoreError::Encode {
                key: String::from_utf8_lossy(&key).into_owned(),
                cause,
            })?;
            batch.insert(key, bytes);
        }
        for kind in &touched {
            batch.insert(collection_rev_key(*kind), &next.to_be_bytes());
        }
        tree.apply_batch(batch)?;
        self.inner.db.flush_async().await?;
        self.inner.revision.send_replace(next);
        tracing::debug!(
            revision = next,
            collections = touched.len(),
            "store batch applied"
        );
        Ok(BatchResult {
            revision: next,
            applied,
        })
    }

    /// The first revision the history can restore (changes up to it were made before history
    /// was recorded).
    pub fn history_floor(&self) -> Result<u64, StoreError> {
        Ok(decode_u64(self.inner.tree.get(HISTORY_FLOOR_KEY)?))
    }

    /// The history entries matching `filter`, oldest first.
    pub fn history(&self, filter: &HistoryFilter) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.tree.scan_prefix(HISTORY_PREFIX) {
            let (k, v) = item?;
            match serde_json::from_slice::<HistoryEntry>(&v) {
                Ok(e) if filter.matches(&e) => out.push(e),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(key = %String::from_utf8_lossy(&k), error = %e, "skipping unreadable history entry");
                }
            }
        }
        Ok(out)
    }

    /// Restores every object to its content at revision `target`, as one new revision. The
    /// changes that would do it are given to `check` first; when it refuses, nothing changes
    /// and its error is returned inside `Ok`. Holds the writer lock throughout, so no other
    /// batch slips in between planning and writing.
    pub async fn rollback<E>(
        &self,
        target: u64,
        check: impl FnOnce(&[Change]) -> Result<(), E>,
    ) -> Result<Result<BatchResult, E>, StoreError> {
        let _writer = self.inner.write.lock().await;
        let current = self.revision();
        if target > current {
            return Err(StoreError::FutureRevision {
                revision: target,
                current,
            });
        }
        let floor = self.history_floor()?;
        if target < floor {
            return Err(StoreError::BeforeHistory {
                revision: target,
                floor,
            });
        }
        let mut start = HISTORY_PREFIX.to_vec();
        start.extend_from_slice(&(target + 1).to_be_bytes());
        let mut end = HISTORY_PREFIX.to_vec();
        end.extend_from_slice(&u64::MAX.to_be_bytes());
        end.extend_from_slice(&u32::MAX.to_be_bytes());
        let mut entries = Vec::new();
        let mut kinds = std::collections::BTreeMap::new();
        let mut now = std::collections::BTreeMap::new();
        for item in self.inner.tree.range(start..=end) {
            let (_, v) = item?;
            let Ok(e) = serde_json::from_slice::<HistoryEntry>(&v) else {
                continue;
            };
            let Some(kind) = Kind::from_collection(&e.collection) else {
                continue;
            };
            let key = object_key(kind, &e.namespace, &e.name);
            if !now.contains_key(&key) {
                let stored = self
                    .inner
                    .tree
                    .get(&key)?
                    .and_then(|v| decode_object(&key, &v));
                now.insert(key.clone(), stored);
            }
            kinds.insert(key.clone(), (kind, e.namespace.clone(), e.name.clone()));
            entries.push((key, e));
        }
        let wanted = undo_after(target, &entries, now.clone());
        let mut changes = Vec::new();
        for (key, want) in wanted {
            let Some((kind, namespace, name)) = kinds.get(&key).cloned() else {
                continue;
            };
            let have = now.get(&key).cloned().flatten();
            match want {
                Some(obj)
                    if have.as_ref().map(without_revision) != Some(without_revision(&obj)) =>
                {
                    changes.push(Change::Put(kind, obj));
                }
                Some(_) => {}
                None if have.is_some() => changes.push(Change::Delete {
                    kind,
                    namespace,
                    name,
                }),
                None => {}
            }
        }
        if let Err(e) = check(&changes) {
            return Ok(Err(e));
        }
        let res = self.apply_locked(changes).await?;
        tracing::info!(
            target,
            revision = res.revision,
            changes = res.applied.len(),
            "rolled back"
        );
        Ok(Ok(res))
    }
}
