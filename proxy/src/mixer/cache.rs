//! The client-side Check cache: a Check answer is reused for a later request whose attributes
//! agree on everything the answer said it depended on (its `referenced_attributes`).
//!
//! Each distinct set of referenced attributes (a *shape*) is remembered; a lookup computes, for
//! every shape, the request's signature (the values of the EXACT attributes, with ABSENCE
//! attributes required absent) and looks it up. An answer that references a REGEX match is not
//! cached. An entry is used at most `valid_use_count` times and until `valid_duration` passes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mesh_proto::attributes::Bag;
use mesh_proto::dictionary;
use mesh_proto::istio::mixer::v1::ReferencedAttributes;
use mesh_proto::istio::mixer::v1::referenced_attributes::Condition;
use parking_lot::Mutex;

/// How many answers the cache holds at most.
pub const DEFAULT_CAPACITY: usize = 100_000;
/// How many distinct shapes of referenced attributes are remembered at most.
const MAX_SHAPES: usize = 1_000;

/// One attribute an answer depended on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Reference {
    name: String,
    map_key: Option<String>,
    /// EXACT (true) or ABSENCE (false).
    exact: bool,
}

pub(super) type Shape = Vec<Reference>;

#[derive(Debug, Clone)]
struct Entry<T> {
    answer: T,
    expires: Instant,
    uses_left: i64,
}

#[derive(Debug)]
struct Inner<T> {
    shapes: Vec<Shape>,
    entries: HashMap<(usize, String), Entry<T>>,
}

/// Hit and miss counts of a cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}

/// A Check cache holding answers of type `T`.
#[derive(Debug)]
pub struct CheckCache<T> {
    inner: Mutex<Inner<T>>,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

fn word(i: i32, words: &[String]) -> Option<String> {
    if i >= 0 {
        dictionary::word(i as usize).map(str::to_string)
    } else {
        words
            .get(usize::try_from(-(i64::from(i)) - 1).ok()?)
            .cloned()
    }
}

/// The shape of `ra`, or `None` when it cannot be cached (REGEX, unknown word).
pub(super) fn shape_of(ra: &ReferencedAttributes) -> Option<Shape> {
    let mut shape = Vec::with_capacity(ra.attribute_matches.len());
    for m in &ra.attribute_matches {
        let exact = match Condition::try_from(m.condition).ok()? {
            Condition::Exact => true,
            Condition::Absence => false,
            _ => return None,
        };
        let name = word(m.name, &ra.words)?;
        // map_key 0 is the unset field: no key (Mixer never reports global word 0 as a key).
        let map_key = if m.map_key == 0 {
            None
        } else {
            Some(word(m.map_key, &ra.words)?)
        };
        shape.push(Reference {
            name,
            map_key,
            exact,
        });
    }
    shape.sort_by(|a, b| (&a.name, &a.map_key).cmp(&(&b.name, &b.map_key)));
    shape.dedup();
    Some(shape)
}

/// The signature of `bag` for `shape`: `None` when the bag does not fit the shape (an
/// ABSENCE attribute present, an EXACT one missing).
pub(super) fn signature(shape: &Shape, bag: &Bag) -> Option<String> {
    let mut sig = String::new();
    for r in shape {
        let value = match &r.map_key {
            None => bag.get(&r.name).map(|v| format!("{v:?}")),
            Some(k) => bag
                .get_string_map(&r.name)
                .and_then(|m| m.get(k))
                .map(|v| format!("{v:?}")),
        };
        match (r.exact, value) {
            (true, Some(v)) => {
                sig.push_str(&v);
                sig.push('\u{1}');
            }
            (false, None) => sig.push('\u{2}'),
            _ => return None,
        }
    }
    Some(sig)
}

impl<T: Clone> CheckCache<T> {
    pub fn new(capacity: usize) -> Self {
        CheckCache {
            inner: Mutex::new(Inner {
                shapes: Vec::new(),
                entries: HashMap::new(),
            }),
            capacity: capacity.max(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// A cached answer for `bag` at `now` (one use of it), counted as a hit or a miss.
    pub fn lookup(&self, bag: &Bag, now: Instant) -> Option<T> {
        let found = self.find(bag, now);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn find(&self, bag: &Bag, now: Instant) -> Option<T> {
        let mut inner = self.inner.lock();
        for i in 0..inner.shapes.len() {
            let Some(sig) = signature(&inner.shapes[i], bag) else {
                continue;
            };
            let key = (i, sig);
            let Some(e) = inner.entries.get_mut(&key) else {
                continue;
            };
            if now >= e.expires || e.uses_left <= 0 {
                inner.entries.remove(&key);
                continue;
            }
            e.uses_left -= 1;
            let answer = e.answer.clone();
            if e.uses_left <= 0 {
                inner.entries.remove(&key);
            }
            return Some(answer);
        }
        None
    }

    /// Remembers `answer` for requests like `bag` on what `referenced` names, for
    /// `valid_duration` and `valid_use_count` uses. Not cached: REGEX references, a zero
    /// duration or count, a full cache.
    pub fn insert(
        &self,
        bag: &Bag,
        referenced: &ReferencedAttributes,
        valid_duration: Duration,
        valid_use_count: i32,
        answer: T,
        now: Instant,
    ) {
        if valid_duration.is_zero() || valid_use_count <= 0 {
            return;
        }
        let Some(shape) = shape_of(referenced) else {
            return;
        };
        let Some(sig) = signature(&shape, bag) else {
            return;
        };
        let mut inner = self.inner.lock();
        if inner.entries.len() >= self.capacity {
            inner
                .entries
                .retain(|_, e| e.expires > now && e.uses_left > 0);
            if inner.entries.len() >= self.capacity {
                return;
            }
        }
        let index = match inner.shapes.iter().position(|s| *s == shape) {
            Some(i) => i,
            None if inner.shapes.len() < MAX_SHAPES => {
                inner.shapes.push(shape);
                inner.shapes.len() - 1
            }
            None => return,
        };
        inner.entries.insert(
            (index, sig),
            Entry {
                answer,
                expires: now + valid_duration,
                uses_left: i64::from(valid_use_count),
            },
        );
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::istio::mixer::v1::referenced_attributes::AttributeMatch;
    use std::collections::BTreeMap;

    fn idx(w: &str) -> i32 {
        dictionary::index_of(w).unwrap()
    }

    /// Depends on `source.labels["version"]` (exact, the key as a message word) and on the
    /// absence of `request.headers["x-user"]`.
    fn referenced() -> ReferencedAttributes {
        ReferencedAttributes {
            words: vec!["version".into(), "x-user".into()],
            attribute_matches: vec![
                AttributeMatch {
                    name: idx("source.labels"),
                    condition: Condition::Exact as i32,
                    regex: String::new(),
                    map_key: -1,
                },
                AttributeMatch {
                    name: idx("request.headers"),
                    condition: Condition::Absence as i32,
                    regex: String::new(),
                    map_key: -2,
                },
            ],
        }
    }

    fn bag(version: &str, user: Option<&str>, path: &str) -> Bag {
        let mut headers = BTreeMap::new();
        if let Some(u) = user {
            headers.insert("x-user".to_string(), u.to_string());
        }
        Bag::new()
            .with(
                "source.labels",
                BTreeMap::from([("version".to_string(), version.to_string())]),
            )
            .with("request.headers", headers)
            .with("request.path", path)
    }

    #[test]
    fn hits_only_for_requests_agreeing_on_the_referenced_attributes() {
        let c = CheckCache::new(10);
        let t0 = Instant::now();
        let five = Duration::from_secs(5);
        assert_eq!(c.lookup(&bag("v3", None, "/a"), t0), None);
        c.insert(&bag("v3", None, "/a"), &referenced(), five, 100, "deny", t0);
        // request.path was not referenced: another path hits.
        assert_eq!(c.lookup(&bag("v3", None, "/b"), t0), Some("deny"));
        // Another version: miss.
        assert_eq!(c.lookup(&bag("v2", None, "/a"), t0), None);
        // The ABSENCE attribute present: miss.
        assert_eq!(c.lookup(&bag("v3", Some("bob"), "/a"), t0), None);
        assert_eq!(c.stats(), CacheStats { hits: 1, misses: 3 });
    }

    #[test]
    fn valid_duration_and_use_count_are_honoured() {
        let c = CheckCache::new(10);
        let t0 = Instant::now();
        let five = Duration::from_secs(5);
        let b = bag("v1", None, "/");
        c.insert(&b, &referenced(), five, 2, 1, t0);
        assert_eq!(c.lookup(&b, t0), Some(1));
        assert_eq!(c.lookup(&b, t0), Some(1));
        assert_eq!(c.lookup(&b, t0), None, "used twice");
        c.insert(&b, &referenced(), five, 100, 2, t0);
        assert_eq!(c.lookup(&b, t0 + Duration::from_secs(4)), Some(2));
        assert_eq!(c.lookup(&b, t0 + five), None, "expired");
    }

    #[test]
    fn regex_and_zero_validity_are_not_cached() {
        let c = CheckCache::new(10);
        let t0 = Instant::now();
        let b = bag("v1", None, "/");
        let mut ra = referenced();
        ra.attribute_matches[0].condition = Condition::Regex as i32;
        c.insert(&b, &ra, Duration::from_secs(5), 10, 1, t0);
        assert_eq!(c.lookup(&b, t0), None);
        c.insert(&b, &referenced(), Duration::ZERO, 10, 1, t0);
        c.insert(&b, &referenced(), Duration::from_secs(1), 0, 1, t0);
        assert_eq!(c.lookup(&b, t0), None);
    }

    #[test]
    fn no_references_means_every_request_hits_and_capacity_bounds() {
        let c = CheckCache::new(1);
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        c.insert(
            &bag("v1", None, "/"),
            &ReferencedAttributes::default(),
            minute,
            10,
            7,
            t0,
        );
        assert_eq!(c.lookup(&bag("v9", Some("x"), "/z"), t0), Some(7));
        // Full: a second shape's answer is not stored.
        c.insert(&bag("v1", None, "/"), &referenced(), minute, 10, 8, t0);
        assert_eq!(c.inner.lock().entries.len(), 1);
    }
}
