//! The store's history: every batch that changes something also writes, in the same atomic
//! sled batch, one entry per changed object (revision, time, operation, the object before and
//! after). `meshctl history` lists them; a rollback undoes the entries after a revision.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use mesh_proto::config::{ConfigObject, Kind};
use serde::{Deserialize, Serialize};

/// Prefix of history entries: `\x02history\0` + revision (8 bytes BE) + index (4 bytes BE).
pub(crate) const HISTORY_PREFIX: &[u8] = b"\x02history\0";
/// Key of the first revision whose changes are all in the history (the store revision when
/// history recording began; rollbacks cannot go before it).
pub(crate) const HISTORY_FLOOR_KEY: &[u8] = b"\x01history-floor";

/// One change of one object at one revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub revision: u64,
    /// Milliseconds since the Unix epoch when the batch was written.
    pub time_ms: u64,
    /// The collection the object belongs to.
    pub collection: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub before: Option<ConfigObject>,
    pub after: Option<ConfigObject>,
}

impl HistoryEntry {
    /// `create`, `update` or `delete`.
    pub fn op(&self) -> &'static str {
        match (&self.before, &self.after) {
            (None, _) => "create",
            (Some(_), Some(_)) => "update",
            (Some(_), None) => "delete",
        }
    }

    /// The entry as the history API shows it (without the object bodies).
    pub fn summary(&self) -> HistorySummary {
        HistorySummary {
            rev: self.revision,
            time: rfc3339(self.time_ms),
            op: self.op().to_string(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    pub(crate) fn key(&self, index: u32) -> Vec<u8> {
        let mut k = HISTORY_PREFIX.to_vec();
        k.extend_from_slice(&self.revision.to_be_bytes());
        k.extend_from_slice(&index.to_be_bytes());
        k
    }
}

/// One line of `meshctl history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistorySummary {
    pub rev: u64,
    /// RFC 3339, UTC, millisecond precision.
    pub time: String,
    /// `create`, `update` or `delete`.
    pub op: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// Which history entries to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    pub kind: Option<Kind>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl HistoryFilter {
    pub fn matches(&self, e: &HistoryEntry) -> bool {
        self.kind
            .is_none_or(|k| k.info().collection == e.collection)
            && self.namespace.as_ref().is_none_or(|n| *n == e.namespace)
            && self.name.as_ref().is_none_or(|n| *n == e.name)
    }
}

/// Now, in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `2026-11-22T07:05:05.123Z` for `ms` since the epoch.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

/// The content of the objects `entries` touched, as it was at revision `target`, given their
/// `current` content: every entry after `target` is undone, newest first. Keys are object keys.
pub(crate) fn undo_after(
    target: u64,
    entries: &[(Vec<u8>, HistoryEntry)],
    mut current: BTreeMap<Vec<u8>, Option<ConfigObject>>,
) -> BTreeMap<Vec<u8>, Option<ConfigObject>> {
    for (key, e) in entries.iter().rev() {
        if e.revision > target {
            current.insert(key.clone(), e.before.clone());
        }
    }
    current
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_331_105_123), "2026-11-22T07:05:05.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
