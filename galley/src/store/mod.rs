//! The config store: sled on disk, one global revision, all-or-nothing batches.

mod sled_store;

pub use sled_store::{Applied, BatchResult, Change, Store, StoreError, object_key};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
