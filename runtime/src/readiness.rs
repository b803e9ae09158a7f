//! Readiness: a set of named conditions that must all hold.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// Cloneable handle; `/readyz` answers 200 only when every registered condition is set.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    conditions: Arc<Mutex<BTreeMap<&'static str, bool>>>,
}

impl Readiness {
    /// A readiness with the given conditions, all initially unmet.
    pub fn new(conditions: &[&'static str]) -> Self {
        let r = Readiness::default();
        for c in conditions {
            r.conditions.lock().insert(c, false);
        }
        r
    }

    /// Marks `condition` met or unmet.
    pub fn set(&self, condition: &'static str, met: bool) {
        self.conditions.lock().insert(condition, met);
    }

    /// Whether every condition is met.
    pub fn is_ready(&self) -> bool {
        self.conditions.lock().values().all(|v| *v)
    }

    /// The unmet conditions, for the `/readyz` body.
    pub fn unmet(&self) -> Vec<&'static str> {
        self.conditions
            .lock()
            .iter()
            .filter(|(_, v)| !**v)
            .map(|(k, _)| *k)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_when_all_met() {
        let r = Readiness::new(&["a", "b"]);
        assert!(!r.is_ready());
        r.set("a", true);
        assert_eq!(r.unmet(), vec!["b"]);
        r.set("b", true);
        assert!(r.is_ready());
        r.set("a", false);
        assert!(!r.is_ready());
    }
}
