//! How long an issued certificate lives.

use std::time::Duration;

/// The requested lifetime was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "requested TTL {} is greater than the max allowed TTL {} (--max-ttl)",
    humantime::format_duration(std::time::Duration::from_secs(requested_secs.unsigned_abs())),
    humantime::format_duration(std::time::Duration::from_secs(*max_secs))
)]
pub struct TtlError {
    pub requested_secs: i64,
    pub max_secs: u64,
}

/// Default and maximum certificate lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct TtlPolicy {
    pub default: Duration,
    pub max: Duration,
}

impl TtlPolicy {
    /// The lifetime for a request asking for `requested_secs` (`<= 0` asks for the default).
    pub fn resolve(&self, requested_secs: i64) -> Result<Duration, TtlError> {
        if requested_secs <= 0 {
            return Ok(self.default.min(self.max));
        }
        let requested = Duration::from_secs(requested_secs.unsigned_abs());
        if requested > self.max {
            return Err(TtlError {
                requested_secs,
                max_secs: self.max.as_secs(),
            });
        }
        Ok(requested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_requested_and_too_long() {
        let p = TtlPolicy {
            default: Duration::from_secs(86400),
            max: Duration::from_secs(7 * 86400),
        };
        assert_eq!(p.resolve(0).unwrap(), Duration::from_secs(86400));
        assert_eq!(p.resolve(-5).unwrap(), Duration::from_secs(86400));
        assert_eq!(p.resolve(600).unwrap(), Duration::from_secs(600));
        assert_eq!(
            p.resolve(7 * 86400).unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(
            p.resolve(7 * 86400 + 1),
            Err(TtlError {
                requested_secs: 7 * 86400 + 1,
                max_secs: 7 * 86400
            })
        );
        // The refusal names the limit, as Istio's does.
        assert_eq!(
            p.resolve(8 * 86400).unwrap_err().to_string(),
            "requested TTL 8days is greater than the max allowed TTL 7days (--max-ttl)"
        );
    }
}
