//! The HTTP/JSON apply API (`meshctl apply/get/delete` talk to it).

mod routes;

pub use routes::{ApiMetrics, SOURCE_HEADER, api_router};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
