//! The Mixer client: Check before forwarding (answered from a cache keyed by the attributes
//! Mixer's answers referenced; fail open when Mixer is away), Report after the response,
//! batched off the request path.

mod attributes;
mod cache;
mod client;

pub use attributes::{RequestAttributes, add_response};
pub use cache::{CacheStats, CheckCache};
pub use client::{CheckOutcome, MixerClient, MixerError};
