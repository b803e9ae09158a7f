//! The Bookinfo-shaped demo application and end-to-end test support.
//!
//! - [`demo`]: the `bookinfo` app (one binary plays productpage, details, reviews or ratings):
//!   each answers with its own name and version plus the answers of the services it calls
//!   through its sidecar, so a response shows the whole call tree the mesh routed.

pub mod demo;
