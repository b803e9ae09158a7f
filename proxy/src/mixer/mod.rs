//! The Mixer client: Check before forwarding (fail open when Mixer is away), Report after the
//! response, batched off the request path.

mod attributes;
mod client;

pub use attributes::{RequestAttributes, add_response};
pub use client::{CheckOutcome, MixerClient, MixerError};
