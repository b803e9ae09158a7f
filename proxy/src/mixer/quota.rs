//! Quota prefetch, after Istio's mixer client (`quota_cache` + `prefetch/quota_prefetch`): per
//! quota key a pool of units Mixer granted ahead, which serves requests locally until each
//! grant's `valid_duration` passes.
//!
//! A quota key is the quota name plus the values of the attributes Mixer's answer said the
//! allocation depended on (its `referenced_attributes`, EXACT and ABSENCE, as for the Check
//! cache). The first request of a quota name asks Mixer for exactly its amount (not best effort)
//! to learn those attributes. Later requests take from their key's pool; a pool that runs low
//! (fewer units than half the predicted need) is refilled in the background, and an empty one
//! asks Mixer while the request waits (one call per quota name at a time; waiting requests share
//! its answer). A refill asks, best effort, for what the last second's requests used (at least
//! [`MIN_PREFETCH`]), so Mixer grants all it has left when that is less.
//!
//! When Mixer granted less than asked, the budget is spent: for [`CLOSE_WAIT`] after that
//! answer a request the pool cannot serve is refused (429) without a round trip; the next one
//! asks Mixer again. Every unit served was granted by Mixer, so a budget of N still admits at
//! most N requests per window; units granted to a pool and not used before they expire are
//! lost to the window that granted them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_proto::attributes::Bag;
use mesh_proto::istio::mixer::v1::ReferencedAttributes;
use parking_lot::Mutex;

use super::cache::{Shape, shape_of, signature};

/// The least a refill asks for (Istio: `kMinPrefetchAmount`).
pub const MIN_PREFETCH: i64 = 10;
/// The window over which the request rate is measured to size a refill (Istio:
/// `kPredictWindowInMs`).
pub const PREDICT_WINDOW: Duration = Duration::from_secs(1);
/// How long after Mixer granted less than asked the pool refuses without asking (Istio:
/// `kCloseWaitWindowInMs`).
pub const CLOSE_WAIT: Duration = Duration::from_millis(500);
/// How long a grant without a `valid_duration` is held (Istio: `kMaxExpirationInMs`).
const DEFAULT_VALIDITY: Duration = Duration::from_secs(60);
/// The rate counter's bucket.
const BUCKET: Duration = Duration::from_millis(50);
/// Shapes remembered per quota name.
const MAX_SHAPES: usize = 100;
/// Pools kept per quota name.
const MAX_POOLS: usize = 10_000;

/// What Mixer answered for one quota.
#[derive(Debug, Clone, Default)]
pub struct Granted {
    pub amount: i64,
    /// Zero: held for [`DEFAULT_VALIDITY`].
    pub valid_duration: Duration,
    pub referenced: ReferencedAttributes,
}

/// What the pools decided without asking Mixer.
#[derive(Debug)]
pub enum Local {
    /// Served from the pool; `refill`, when set, should be asked of Mixer in the background
    /// (holding the guard for the call) and given to [`QuotaPools::add`].
    Served(Option<Refill>),
    /// Mixer granted less than asked less than [`CLOSE_WAIT`] ago: refused without asking.
    Refused,
    /// Mixer must be asked: take [`QuotaPools::fetch_lock`], then [`QuotaPools::retake`].
    Ask,
}

/// A background refill to make.
#[derive(Debug)]
pub struct Refill {
    pub guard: tokio::sync::OwnedMutexGuard<()>,
    pub amount: i64,
}

/// What to ask Mixer, decided under the fetch lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    pub amount: i64,
    pub best_effort: bool,
}

/// Requests per bucket over the predict window.
#[derive(Debug, Default)]
struct RateWindow {
    buckets: VecDeque<(Instant, i64)>,
}

impl RateWindow {
    fn add(&mut self, amount: i64, now: Instant) {
        self.expire(now);
        match self.buckets.back_mut() {
            Some((start, n)) if now.saturating_duration_since(*start) < BUCKET => *n += amount,
            _ => self.buckets.push_back((now, amount)),
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((start, _)) = self.buckets.front()
            && now.saturating_duration_since(*start) >= PREDICT_WINDOW
        {
            self.buckets.pop_front();
        }
    }

    fn count(&mut self, now: Instant) -> i64 {
        self.expire(now);
        self.buckets.iter().map(|(_, n)| n).sum()
    }
}

/// The units of one quota key.
#[derive(Debug, Default)]
struct Pool {
    /// (units left, expiry), in the order granted.
    slots: VecDeque<(i64, Instant)>,
    /// When Mixer last granted less than asked; `None` once it grants all.
    closed_at: Option<Instant>,
    rate: RateWindow,
}

impl Pool {
    fn available(&mut self, now: Instant) -> i64 {
        self.slots.retain(|(n, until)| *n > 0 && now < *until);
        self.slots.iter().map(|(n, _)| n).sum()
    }

    fn may_ask(&self, now: Instant) -> bool {
        self.closed_at
            .is_none_or(|t| now.saturating_duration_since(t) >= CLOSE_WAIT)
    }

    fn desired(&mut self, now: Instant) -> i64 {
        self.rate.count(now).max(MIN_PREFETCH)
    }

    /// Takes `amount` when available; the units left after.
    fn take(&mut self, amount: i64, now: Instant) -> Option<i64> {
        let avail = self.available(now);
        if avail < amount {
            return None;
        }
        let mut need = amount;
        for (n, _) in self.slots.iter_mut() {
            let d = need.min(*n);
            *n -= d;
            need -= d;
            if need == 0 {
                break;
            }
        }
        self.slots.retain(|(n, _)| *n > 0);
        Some(avail - amount)
    }

    fn add(&mut self, granted: &Granted, asked: i64, now: Instant) {
        if granted.amount > 0 {
            let valid = if granted.valid_duration.is_zero() {
                DEFAULT_VALIDITY
            } else {
                granted.valid_duration
            };
            self.slots.push_back((granted.amount, now + valid));
        }
        self.closed_at = (granted.amount < asked).then_some(now);
    }
}

/// The pools of one quota name.
#[derive(Debug)]
struct Name {
    /// One Mixer call per quota name at a time.
    fetching: Arc<tokio::sync::Mutex<()>>,
    shapes: Vec<Shape>,
    pools: HashMap<(usize, String), Pool>,
    /// Mixer's answer referenced a REGEX (or too many shapes): never pooled.
    uncacheable: bool,
}

impl Name {
    fn key(&self, bag: &Bag) -> Option<(usize, String)> {
        self.shapes
            .iter()
            .enumerate()
            .find_map(|(i, s)| signature(s, bag).map(|sig| (i, sig)))
    }
}

/// Every quota name's pools.
#[derive(Debug, Default)]
pub struct QuotaPools {
    names: Mutex<HashMap<String, Name>>,
}

impl QuotaPools {
    pub fn new() -> Self {
        QuotaPools::default()
    }

    /// Serves `amount` of `quota` for `bag` from its pool if it can (counting the request
    /// toward the predicted rate), else says whether to refuse or ask Mixer.
    pub fn take(&self, quota: &str, amount: i64, bag: &Bag, now: Instant) -> Local {
        let mut names = self.names.lock();
        let Some(name) = names.get_mut(quota) else {
            return Local::Ask;
        };
        let Some(key) = name.key(bag) else {
            return Local::Ask;
        };
        let fetching = name.fetching.clone();
        let Some(pool) = name.pools.get_mut(&key) else {
            return Local::Ask;
        };
        pool.rate.add(amount, now);
        match pool.take(amount, now) {
            Some(left) => {
                let desired = pool.desired(now);
                let refill = (left < desired / 2 && pool.may_ask(now))
                    .then(|| fetching.try_lock_owned().ok())
                    .flatten()
                    .map(|guard| Refill {
                        guard,
                        amount: desired,
                    });
                Local::Served(refill)
            }
            None if !pool.may_ask(now) => Local::Refused,
            None => Local::Ask,
        }
    }

    /// The lock to hold while asking Mixer for `quota` on the request path.
    pub fn fetch_lock(&self, quota: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut names = self.names.lock();
        names
            .entry(quota.to_string())
            .or_insert_with(|| Name {
                fetching: Arc::new(tokio::sync::Mutex::new(())),
                shapes: Vec::new(),
                pools: HashMap::new(),
                uncacheable: false,
            })
            .fetching
            .clone()
    }

    /// Under the fetch lock: serves the request from what another call just granted, refuses
    /// it, or says what to ask Mixer (exactly `amount`, not best effort, while the quota's
    /// referenced attributes are unknown or uncacheable; else a best-effort refill).
    pub fn retake(&self, quota: &str, amount: i64, bag: &Bag, now: Instant) -> Result<bool, Ask> {
        let exact = Ask {
            amount,
            best_effort: false,
        };
        let mut names = self.names.lock();
        let Some(name) = names.get_mut(quota) else {
            return Err(exact);
        };
        if name.uncacheable {
            return Err(exact);
        }
        let Some(key) = name.key(bag) else {
            return Err(exact);
        };
        let pool = name.pools.entry(key).or_default();
        if pool.take(amount, now).is_some() {
            return Ok(true);
        }
        if !pool.may_ask(now) {
            return Ok(false);
        }
        Err(Ask {
            amount: pool.desired(now).max(amount),
            best_effort: true,
        })
    }

    /// Adds what Mixer granted for `asked` units of `quota` (asked for `bag`) to its pool.
    /// `false` when the answer cannot be pooled (REGEX references, a full table): the caller
    /// uses the grant directly.
    pub fn add(&self, quota: &str, bag: &Bag, asked: i64, granted: &Granted, now: Instant) -> bool {
        let mut names = self.names.lock();
        let Some(name) = names.get_mut(quota) else {
            return false;
        };
        let Some(shape) = shape_of(&granted.referenced) else {
            name.uncacheable = true;
            return false;
        };
        let Some(sig) = signature(&shape, bag) else {
            return false;
        };
        let index = match name.shapes.iter().position(|s| *s == shape) {
            Some(i) => i,
            None if name.shapes.len() < MAX_SHAPES => {
                name.shapes.push(shape);
                name.shapes.len() - 1
            }
            None => {
                name.uncacheable = true;
                return false;
            }
        };
        if name.pools.len() >= MAX_POOLS && !name.pools.contains_key(&(index, sig.clone())) {
            name.pools
                .retain(|_, p| p.available(now) > 0 || !p.may_ask(now));
            if name.pools.len() >= MAX_POOLS {
                return false;
            }
        }
        name.pools
            .entry((index, sig))
            .or_default()
            .add(granted, asked, now);
        true
    }

    /// Units held for `quota` and `bag` now.
    #[cfg(test)]
    pub fn available(&self, quota: &str, bag: &Bag, now: Instant) -> i64 {
        let mut names = self.names.lock();
        let Some(name) = names.get_mut(quota) else {
            return 0;
        };
        let Some(key) = name.key(bag) else {
            return 0;
        };
        name.pools
            .get_mut(&key)
            .map_or(0, |pool| pool.available(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::dictionary;
    use mesh_proto::istio::mixer::v1::referenced_attributes::{AttributeMatch, Condition};

    /// The allocation depended on `request.path`.
    fn by_path() -> ReferencedAttributes {
        ReferencedAttributes {
            words: vec![],
            attribute_matches: vec![AttributeMatch {
                name: dictionary::index_of("request.path").unwrap() as i32,
                condition: Condition::Exact as i32,
                regex: String::new(),
                map_key: 0,
            }],
        }
    }

    fn granted(amount: i64, valid_ms: u64) -> Granted {
        Granted {
            amount,
            valid_duration: Duration::from_millis(valid_ms),
            referenced: by_path(),
        }
    }

    /// The request path a caller follows: local, else ask (the fake Mixer's `grant`).
    fn request(
        pools: &QuotaPools,
        bag: &Bag,
        now: Instant,
        calls: &mut Vec<Ask>,
        mut grant: impl FnMut(Ask) -> Granted,
    ) -> bool {
        match pools.take("q", 1, bag, now) {
            Local::Served(refill) => {
                if let Some(r) = refill {
                    let ask = Ask {
                        amount: r.amount,
                        best_effort: true,
                    };
                    calls.push(ask);
                    pools.add("q", bag, r.amount, &grant(ask), now);
                }
                true
            }
            Local::Refused => false,
            Local::Ask => {
                let _lock = pools.fetch_lock("q");
                match pools.retake("q", 1, bag, now) {
                    Ok(served) => served,
                    Err(ask) => {
                        calls.push(ask);
                        let g = grant(ask);
                        if !pools.add("q", bag, ask.amount, &g, now) {
                            return g.amount >= 1;
                        }
                        pools.retake("q", 1, bag, now) == Ok(true)
                    }
                }
            }
        }
    }

    #[test]
    fn requests_within_the_budget_make_few_calls() {
        let pools = QuotaPools::new();
        let bag = Bag::new().with("request.path", "/a");
        let t0 = Instant::now();
        let mut budget = 1_000i64;
        let mut calls = Vec::new();
        for i in 0..200u64 {
            let now = t0 + Duration::from_millis(i);
            let ok = request(&pools, &bag, now, &mut calls, |ask| {
                let n = if ask.amount <= budget || ask.best_effort {
                    ask.amount.min(budget)
                } else {
                    0
                };
                budget -= n;
                granted(n, 10_000)
            });
            assert!(ok, "request {i} refused");
        }
        eprintln!("{} calls for 200 requests: {calls:?}", calls.len());
        assert!(calls.len() <= 10, "{} calls: {calls:?}", calls.len());
        // The first call learns the key with exactly the amount; the rest are best-effort refills.
        assert_eq!(
            calls[0],
            Ask {
                amount: 1,
                best_effort: false
            }
        );
        assert!(
            calls[1..]
                .iter()
                .all(|a| a.best_effort && a.amount >= MIN_PREFETCH)
        );
        // Every unit served was granted: granted = served + held.
        assert_eq!(
            1_000 - budget,
            200 + pools.available("q", &bag, t0 + Duration::from_millis(200))
        );
    }

    #[test]
    fn a_budget_of_n_admits_exactly_n_and_then_refuses_without_asking() {
        let pools = QuotaPools::new();
        let bag = Bag::new().with("request.path", "/a");
        let t0 = Instant::now();
        let mut budget = 3i64;
        let mut calls = Vec::new();
        let mut mixer = |ask: Ask| {
            let n = if ask.amount <= budget || ask.best_effort {
                ask.amount.min(budget)
            } else {
                0
            };
            budget -= n;
            granted(n, 5_000)
        };
        let admitted: Vec<bool> = (0..6)
            .map(|i| {
                request(
                    &pools,
                    &bag,
                    t0 + Duration::from_millis(i),
                    &mut calls,
                    &mut mixer,
                )
            })
            .collect();
        assert_eq!(admitted, [true, true, true, false, false, false]);
        // Exact first call, one best-effort refill granted the 2 left; the refusals asked nothing.
        assert_eq!(calls.len(), 2, "{calls:?}");
        // After the close wait the next request asks again (and is refused: nothing left).
        let later = t0 + CLOSE_WAIT + Duration::from_millis(10);
        assert!(!request(&pools, &bag, later, &mut calls, &mut mixer));
        assert_eq!(calls.len(), 3);
        // Another key has its own pool.
        let other = Bag::new().with("request.path", "/b");
        assert!(matches!(pools.take("q", 1, &other, t0), Local::Ask));
    }

    #[test]
    fn granted_units_expire_with_valid_duration() {
        let pools = QuotaPools::new();
        let bag = Bag::new().with("request.path", "/a");
        let t0 = Instant::now();
        pools.fetch_lock("q");
        assert_eq!(
            pools.retake("q", 1, &bag, t0),
            Err(Ask {
                amount: 1,
                best_effort: false
            })
        );
        assert!(pools.add("q", &bag, 1, &granted(1, 100), t0));
        assert_eq!(pools.retake("q", 1, &bag, t0), Ok(true));
        // The key is known now: the pool asks for a refill of the predicted need.
        let ask = pools.retake("q", 1, &bag, t0).unwrap_err();
        assert!(ask.best_effort && ask.amount >= MIN_PREFETCH);
        assert!(pools.add("q", &bag, ask.amount, &granted(ask.amount, 100), t0));
        assert_eq!(
            pools.available("q", &bag, t0 + Duration::from_millis(99)),
            ask.amount
        );
        assert!(matches!(
            pools.take("q", 1, &bag, t0 + Duration::from_millis(50)),
            Local::Served(_)
        ));
        // At valid_duration the units are gone and Mixer must be asked again.
        let expired = t0 + Duration::from_millis(100);
        assert_eq!(pools.available("q", &bag, expired), 0);
        assert!(matches!(pools.take("q", 1, &bag, expired), Local::Ask));
    }

    #[test]
    fn regex_references_are_never_pooled() {
        let pools = QuotaPools::new();
        let bag = Bag::new().with("request.path", "/a");
        let t0 = Instant::now();
        pools.fetch_lock("q");
        let mut regex = by_path();
        regex.attribute_matches[0].condition = Condition::Regex as i32;
        let g = Granted {
            amount: 1,
            valid_duration: Duration::from_secs(5),
            referenced: regex,
        };
        assert!(!pools.add("q", &bag, 1, &g, t0));
        assert_eq!(
            pools.retake("q", 1, &bag, t0),
            Err(Ask {
                amount: 1,
                best_effort: false
            })
        );
    }
}
