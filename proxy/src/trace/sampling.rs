//! Sampling: a percentage of traces, decided where a trace starts (from its trace id, so every
//! proxy that must decide for the same trace decides alike); the hops below follow the caller's
//! sampled flag.

use opentelemetry::trace::{SpanKind, TraceId};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};

/// Istio's default (`values.pilot.traceSampling`): 1% of the traces started here.
pub const DEFAULT_PERCENT: f64 = 1.0;

/// The share of new traces to record, in percent (0 to 100).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    percent: f64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            percent: DEFAULT_PERCENT,
        }
    }
}

impl Sampling {
    /// `percent` of new traces; `None` outside 0–100 (or not a number).
    pub fn percent(percent: f64) -> Option<Self> {
        (0.0..=100.0)
            .contains(&percent)
            .then_some(Sampling { percent })
    }

    /// Parses the `--trace-sampling` flag (`1`, `0.5`, `100`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let p: f64 = s
            .trim()
            .parse()
            .map_err(|e| format!("{s:?} is not a percentage: {e}"))?;
        Sampling::percent(p).ok_or_else(|| format!("{s:?} is not between 0 and 100"))
    }

    /// The percentage.
    pub fn as_percent(self) -> f64 {
        self.percent
    }

    /// The SDK sampler: the caller's decision when it made one, else this ratio by trace id.
    pub fn sampler(self) -> Sampler {
        Sampler::ParentBased(Box::new(self.root()))
    }

    /// Whether a trace that starts here (or whose caller deferred) is recorded.
    pub fn sample_root(self, trace_id: TraceId) -> bool {
        let d = self
            .root()
            .should_sample(None, trace_id, "", &SpanKind::Internal, &[], &[])
            .decision;
        d == SamplingDecision::RecordAndSample
    }

    fn root(self) -> Sampler {
        Sampler::TraceIdRatioBased(self.percent / 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u64) -> impl Iterator<Item = TraceId> {
        // Spread over the id space as random ids would be.
        (1..=n).map(|i| TraceId::from(u128::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) << 1 | 1))
    }

    #[test]
    fn flag_is_a_percentage() {
        assert_eq!(Sampling::parse("100").unwrap().as_percent(), 100.0);
        assert_eq!(Sampling::parse(" 0.5 ").unwrap().as_percent(), 0.5);
        assert!(Sampling::parse("101").is_err());
        assert!(Sampling::parse("-1").is_err());
        assert!(Sampling::parse("NaN").is_err());
        assert!(Sampling::parse("ten").is_err());
        assert_eq!(Sampling::default().as_percent(), 1.0);
    }

    #[test]
    fn all_none_or_about_the_share() {
        let all = Sampling::percent(100.0).unwrap();
        assert!(ids(1000).all(|t| all.sample_root(t)));
        let none = Sampling::percent(0.0).unwrap();
        assert!(!ids(1000).any(|t| none.sample_root(t)));
        let ten = Sampling::percent(10.0).unwrap();
        let n = ids(20_000).filter(|t| ten.sample_root(*t)).count();
        assert!((1_500..2_500).contains(&n), "{n} of 20000 at 10%");
    }

    #[test]
    fn same_trace_same_decision() {
        let s = Sampling::percent(50.0).unwrap();
        for t in ids(200) {
            assert_eq!(s.sample_root(t), s.sample_root(t));
        }
    }
}
