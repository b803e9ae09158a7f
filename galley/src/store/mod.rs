//! The config store: sled on disk, one global revision, all-or-nothing batches, and a history
//! of every change (for `meshctl history` and rollbacks).

mod history;
mod sled_store;

pub use history::{HistoryEntry, HistoryFilter, HistorySummary, rfc3339};
pub use sled_store::{Applied, BatchResult, Change, Store, StoreError, object_key};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
