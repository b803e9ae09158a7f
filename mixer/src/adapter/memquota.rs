//! The `memquota` adapter: quotas counted in this process's memory.
//!
//! Each counter key (quota, dimensions, override) has a rolling window of `validDuration`
//! counted in buckets (`bucketDuration`, else a tenth of the window), or a fixed window when
//! `rateLimitAlgorithm: FIXED_WINDOW`; a zero `validDuration` is an allocation that never expires.
//! A retried allocation with the same deduplication id is answered from memory and not counted
//! again while its grant is valid.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::quota::{Algorithm, Applied, Grant};
use crate::dedup::Dedup;

/// How many deduplication ids a memquota handler remembers.
const DEDUP_CAPACITY: usize = 10_000;

#[derive(Debug)]
enum Counter {
    /// Never expires.
    Cell(i64),
    /// Fixed window: `used` until `ends`.
    Fixed { used: i64, ends: Instant },
    /// Rolling window: amounts per bucket start, oldest first.
    Rolling {
        bucket: Duration,
        buckets: VecDeque<(Instant, i64)>,
        used: i64,
    },
}

/// One memquota handler's counters.
#[derive(Debug, Default)]
pub struct MemQuota {
    counters: Mutex<HashMap<String, Counter>>,
    dedup: Mutex<Option<Dedup<(Grant, Instant)>>>,
}

impl MemQuota {
    pub fn new() -> Self {
        MemQuota::default()
    }

    /// Allocates `amount` against `limit` at `now`. Not best effort: all or nothing; best
    /// effort: as much as is left.
    pub fn alloc(
        &self,
        limit: &Applied,
        amount: i64,
        best_effort: bool,
        dedup_id: &str,
        now: Instant,
    ) -> Grant {
        let dedup_key = format!("{dedup_id}\u{0}{}", limit.key);
        if !dedup_id.is_empty()
            && let Some((grant, until)) = self
                .dedup
                .lock()
                .get_or_insert_with(|| Dedup::new(DEDUP_CAPACITY))
                .get(&dedup_key)
            && now < until
        {
            return Grant {
                valid_duration: until.saturating_duration_since(now),
                ..grant
            };
        }
        let grant = self.alloc_counted(limit, amount, best_effort, now);
        if !dedup_id.is_empty() && grant.amount > 0 {
            let until = now + grant.valid_duration.max(Duration::from_secs(1));
            self.dedup
                .lock()
                .get_or_insert_with(|| Dedup::new(DEDUP_CAPACITY))
                .insert(&dedup_key, (grant.clone(), until));
        }
        grant
    }

    fn alloc_counted(
        &self,
        limit: &Applied,
        amount: i64,
        best_effort: bool,
        now: Instant,
    ) -> Grant {
        let mut counters = self.counters.lock();
        let counter = counters.entry(limit.key.clone()).or_insert_with(|| {
            if limit.valid_duration.is_zero() {
                Counter::Cell(0)
            } else if limit.algorithm == Algorithm::FixedWindow {
                Counter::Fixed {
                    used: 0,
                    ends: now + limit.valid_duration,
                }
            } else {
                let bucket = if limit.bucket_duration.is_zero()
                    || limit.bucket_duration >= limit.valid_duration
                {
                    (limit.valid_duration / 10).max(Duration::from_millis(1))
                } else {
                    limit.bucket_duration
                };
                Counter::Rolling {
                    bucket,
                    buckets: VecDeque::new(),
                    used: 0,
                }
            }
        });
        let (used, valid) = match counter {
            Counter::Cell(used) => (used, Duration::ZERO),
            Counter::Fixed { used, ends } => {
                if now >= *ends {
                    *used = 0;
                    *ends = now + limit.valid_duration;
                }
                let left = ends.saturating_duration_since(now);
                (used, left)
            }
            Counter::Rolling {
                bucket,
                buckets,
                used,
            } => {
                while let Some((start, n)) = buckets.front()
                    && now.saturating_duration_since(*start) >= limit.valid_duration
                {
                    *used -= n;
                    buckets.pop_front();
                }
                match buckets.back() {
                    Some((start, _)) if now.saturating_duration_since(*start) < *bucket => {}
                    _ => buckets.push_back((now, 0)),
                }
                (used, limit.valid_duration)
            }
        };
        let left = (limit.max_amount - *used).max(0);
        let granted = if amount <= left {
            amount
        } else if best_effort {
            left
        } else {
            0
        };
        *used += granted;
        if let Counter::Rolling { buckets, .. } = counter
            && let Some((_, n)) = buckets.back_mut()
        {
            *n += granted;
        }
        tracing::debug!(key = %limit.key, requested = amount, granted, max = limit.max_amount, "memquota");
        Grant::ok(granted, if granted > 0 { valid } else { Duration::ZERO })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(max: i64, valid_ms: u64, algorithm: Algorithm) -> Applied {
        Applied {
            key: "q;destination=productpage".into(),
            max_amount: max,
            valid_duration: Duration::from_millis(valid_ms),
            bucket_duration: Duration::ZERO,
            algorithm,
        }
    }

    #[test]
    fn rolling_window_grants_up_to_the_budget_then_recovers() {
        let m = MemQuota::new();
        let l = limit(2, 5000, Algorithm::RollingWindow);
        let t0 = Instant::now();
        assert_eq!(m.alloc(&l, 1, false, "", t0).amount, 1);
        assert_eq!(
            m.alloc(&l, 1, false, "", t0 + Duration::from_secs(2))
                .amount,
            1
        );
        let third = m.alloc(&l, 1, false, "", t0 + Duration::from_secs(3));
        assert_eq!(third.amount, 0);
        // The first allocation leaves the window at 5s; the second is still inside it.
        assert_eq!(
            m.alloc(&l, 1, false, "", t0 + Duration::from_millis(5100))
                .amount,
            1
        );
        assert_eq!(
            m.alloc(&l, 1, false, "", t0 + Duration::from_millis(5200))
                .amount,
            0
        );
    }

    #[test]
    fn fixed_window_resets_and_best_effort_takes_what_is_left() {
        let m = MemQuota::new();
        let l = limit(5, 1000, Algorithm::FixedWindow);
        let t0 = Instant::now();
        assert_eq!(m.alloc(&l, 3, false, "", t0).amount, 3);
        assert_eq!(m.alloc(&l, 3, false, "", t0).amount, 0, "all or nothing");
        let g = m.alloc(&l, 3, true, "", t0 + Duration::from_millis(400));
        assert_eq!(g.amount, 2);
        assert_eq!(g.valid_duration, Duration::from_millis(600));
        assert_eq!(
            m.alloc(&l, 3, false, "", t0 + Duration::from_millis(1000))
                .amount,
            3
        );
    }

    #[test]
    fn deduplicated_retries_do_not_consume_twice() {
        let m = MemQuota::new();
        let l = limit(1, 5000, Algorithm::RollingWindow);
        let t0 = Instant::now();
        assert_eq!(m.alloc(&l, 1, false, "req-1", t0).amount, 1);
        assert_eq!(m.alloc(&l, 1, false, "req-1", t0).amount, 1, "same answer");
        assert_eq!(
            m.alloc(&l, 1, false, "req-2", t0).amount,
            0,
            "budget used once"
        );
    }

    #[test]
    fn zero_valid_duration_never_expires() {
        let m = MemQuota::new();
        let l = limit(1, 0, Algorithm::RollingWindow);
        let t0 = Instant::now();
        assert_eq!(m.alloc(&l, 1, false, "", t0).amount, 1);
        assert_eq!(
            m.alloc(&l, 1, false, "", t0 + Duration::from_secs(3600))
                .amount,
            0
        );
    }
}
