//! Interned resource-name lists: SotW clients re-send their whole EDS/RDS name list on every
//! request, and thousands of proxies name the same thousands of clusters. Each distinct list is
//! kept once (sorted, deduplicated) and shared by every stream naming it.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

/// A sorted, deduplicated list of resource names.
pub(super) type Names = Arc<[String]>;

/// Inserts between sweeps of lists no stream holds any more.
const SWEEP_EVERY: usize = 1024;

#[derive(Debug, Default)]
struct Inner {
    by_hash: HashMap<u64, Vec<Weak<[String]>>>,
    inserts: usize,
}

/// The distinct name lists in use.
#[derive(Debug, Default)]
pub(super) struct NameInterner {
    inner: Mutex<Inner>,
    /// Lists interned so far (each a sort, hash and lookup): for tests and debugging.
    interned: std::sync::atomic::AtomicUsize,
}

impl NameInterner {
    /// The shared copy of `names` (in any order, duplicates allowed).
    pub(super) fn intern(&self, mut names: Vec<String>) -> Names {
        self.interned
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        names.sort_unstable();
        names.dedup();
        let mut h = std::hash::DefaultHasher::new();
        names.hash(&mut h);
        let key = h.finish();
        let mut inner = self.inner.lock();
        if let Some(found) = inner.by_hash.get(&key).and_then(|v| {
            v.iter()
                .filter_map(Weak::upgrade)
                .find(|n| n.as_ref() == names.as_slice())
        }) {
            return found;
        }
        let shared: Names = names.into();
        inner.inserts += 1;
        if inner.inserts.is_multiple_of(SWEEP_EVERY) {
            inner.by_hash.retain(|_, v| {
                v.retain(|w| w.strong_count() > 0);
                !v.is_empty()
            });
        }
        inner
            .by_hash
            .entry(key)
            .or_default()
            .push(Arc::downgrade(&shared));
        shared
    }
}

impl NameInterner {
    /// How many lists were interned (found or added).
    #[cfg(test)]
    pub(super) fn interned(&self) -> usize {
        self.interned.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Whether sorted `names` holds `name`.
pub(super) fn contains(names: &[String], name: &str) -> bool {
    names.binary_search_by(|n| n.as_str().cmp(name)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_lists_share_one_copy() {
        let i = NameInterner::default();
        let a = i.intern(vec!["b".into(), "a".into(), "b".into()]);
        let b = i.intern(vec!["a".into(), "b".into()]);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.as_ref(), ["a".to_string(), "b".to_string()]);
        assert!(contains(&a, "b") && !contains(&a, "c"));
        let c = i.intern(vec!["a".into()]);
        assert!(!Arc::ptr_eq(&a, &c));
        // Once nobody holds a list, a new copy is made.
        let ptr = Arc::as_ptr(&c);
        drop(c);
        let d = i.intern(vec!["a".into()]);
        assert_eq!(d.len(), 1);
        let _ = ptr;
    }
}
