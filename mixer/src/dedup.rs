//! Remembers the answers to recent Check calls by `deduplication_id`, so a retried call gets the
//! same answer. Bounded: the least recently used id is forgotten first.

use std::collections::{BTreeMap, HashMap};

/// A bounded least-recently-used map from deduplication id to answer.
#[derive(Debug)]
pub struct Dedup<V> {
    capacity: usize,
    tick: u64,
    entries: HashMap<String, (u64, V)>,
    order: BTreeMap<u64, String>,
}

impl<V: Clone> Dedup<V> {
    pub fn new(capacity: usize) -> Self {
        Dedup {
            capacity: capacity.max(1),
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    /// The answer remembered for `id`, marking it recently used.
    pub fn get(&mut self, id: &str) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        let (used, v) = self.entries.get_mut(id)?;
        self.order.remove(used);
        *used = tick;
        self.order.insert(tick, id.to_string());
        Some(v.clone())
    }

    /// Remembers `value` for `id`, forgetting the least recently used id when full.
    pub fn insert(&mut self, id: &str, value: V) {
        self.tick += 1;
        if let Some((used, _)) = self.entries.remove(id) {
            self.order.remove(&used);
        }
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.entries.insert(id.to_string(), (self.tick, value));
        self.order.insert(self.tick, id.to_string());
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_lru() {
        let mut d = Dedup::new(2);
        d.insert("a", 1);
        d.insert("b", 2);
        assert_eq!(d.get("a"), Some(1)); // a is now the most recent
        d.insert("c", 3); // evicts b
        assert_eq!(d.get("b"), None);
        assert_eq!(d.get("a"), Some(1));
        assert_eq!(d.get("c"), Some(3));
        assert_eq!(d.len(), 2);
        d.insert("c", 4);
        assert_eq!(d.get("c"), Some(4));
        assert_eq!(d.len(), 2);
    }
}
