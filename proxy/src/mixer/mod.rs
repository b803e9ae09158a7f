//! The Mixer client: Check before forwarding (answered from a cache keyed by the attributes
//! Mixer's answers referenced; quotas always asked of Mixer; the network fail policy decides when
//! Mixer is away), Report after the response, batched off the request path. [`MixerFilter`] is
//! Pilot's `mixer` HTTP filter config: per-service quota rules and the fail policy.

mod attributes;
mod cache;
mod client;
mod config;
mod quota;

pub use attributes::{RequestAttributes, add_response, set_destination_service};
pub use cache::{CacheStats, CheckCache};
pub use client::{CheckOutcome, DEFAULT_CHECK_TIMEOUT, MixerClient, MixerError};
pub use config::{
    ConfigError, FailPolicy, MIXER_FILTER, MixerFilter, QuotaRule, RequestPolicy, ServiceConfig,
    StringMatch, default_policy,
};
pub use quota::{CLOSE_WAIT, MIN_PREFETCH, PREDICT_WINDOW};
