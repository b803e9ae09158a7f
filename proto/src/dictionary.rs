//! Mixer's global dictionary (Istio 1.4 `mixer/v1/global_dictionary.yaml`).
//!
//! A compressed attribute bag names attributes and string values by index; an index >= 0 is a
//! position in this list. The list is append-only and its order is part of the wire format.

use std::collections::HashMap;
use std::sync::LazyLock;

const SOURCE: &str = include_str!("../data/global_dictionary.yaml");

static WORDS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    SOURCE
        .lines()
        .filter_map(|l| l.strip_prefix("- "))
        .map(str::trim)
        .collect()
});

static INDEX: LazyLock<HashMap<&'static str, i32>> = LazyLock::new(|| {
    WORDS
        .iter()
        .enumerate()
        .map(|(i, w)| (*w, i as i32))
        .collect()
});

/// The global words, in wire order.
pub fn words() -> &'static [&'static str] {
    &WORDS
}

/// The index of `word` in the global dictionary, if present.
pub fn index_of(word: &str) -> Option<i32> {
    INDEX.get(word).copied()
}

/// The word at global index `i`.
pub fn word(i: usize) -> Option<&'static str> {
    WORDS.get(i).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_matches_istio_1_4() {
        assert_eq!(words().len(), 222);
        assert_eq!(word(0), Some("source.ip"));
        assert_eq!(index_of("source.ip"), Some(0));
        assert!(index_of("request.path").is_some());
        assert_eq!(index_of("no.such.attribute"), None);
    }
}
