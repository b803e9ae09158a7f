//! Per-cluster runtime state that outlives config updates: endpoint choice (round robin, least
//! request by power of two choices, random), circuit breaking (connections, pending and active
//! requests, retries) and outlier detection (consecutive 5xx / gateway errors eject a host).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::endpoints::Endpoints;
use super::model::{Cluster, LbPolicy, Limits, OutlierDetection};

/// The hasher of the maps read per request (seeded; faster than SipHash for short keys).
type FastHash = foldhash::fast::RandomState;

/// Envoy's default healthy panic threshold: below 50% usable hosts, all hosts are used.
const PANIC_THRESHOLD_PERCENT: usize = 50;

/// The state of every cluster, by name.
#[derive(Default)]
pub struct ClusterStates {
    map: Mutex<HashMap<String, Arc<ClusterState>, FastHash>>,
}

impl ClusterStates {
    /// The state of `cluster`; a change of its circuit breaker limits starts fresh counters.
    pub fn get(&self, cluster: &Cluster) -> Arc<ClusterState> {
        let mut map = self.map.lock();
        if let Some(s) = map.get(&cluster.name)
            && s.limits == cluster.limits
        {
            return s.clone();
        }
        let fresh = Arc::new(ClusterState::new(cluster.limits));
        if let Some(old) = map.get(&cluster.name) {
            // Keep what outlier detection learnt about the hosts.
            *fresh.hosts.lock() = old.hosts.lock().clone();
        }
        map.insert(cluster.name.clone(), fresh.clone());
        fresh
    }
}

/// Outcome of one attempt as outlier detection counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostOutcome {
    Status(u16),
    /// Connect failure, reset or timeout: a locally originated gateway error (counts as 503).
    LocalFailure,
}

#[derive(Debug, Clone, Default)]
struct HostState {
    active: u32,
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    ejected_until: Option<Instant>,
    times_ejected: u32,
}

impl HostState {
    /// Nothing learnt: the entry can go (it is what a missing entry means).
    fn is_idle(&self) -> bool {
        self.active == 0
            && self.consecutive_5xx == 0
            && self.consecutive_gateway == 0
            && self.ejected_until.is_none()
            && self.times_ejected == 0
    }
}

/// Weights by host and the smooth weighted round-robin counters.
#[derive(Debug, Default)]
struct WeightTable {
    /// `Endpoints::id` of the host set these weights came from.
    id: u64,
    weight: HashMap<SocketAddr, u32>,
    current: HashMap<SocketAddr, i64>,
}

/// One cluster's counters.
pub struct ClusterState {
    limits: Limits,
    connections: Option<Arc<Semaphore>>,
    pending: AtomicU32,
    active: AtomicU32,
    retries: AtomicU32,
    rr: AtomicUsize,
    known_hosts: AtomicUsize,
    hosts: Mutex<HashMap<SocketAddr, HostState, FastHash>>,
    /// Endpoint weights of the host set last observed (empty: all equal).
    weights: Mutex<WeightTable>,
    /// Requests refused by a circuit breaker.
    pub overflows: AtomicU64,
    /// Hosts ejected by outlier detection, ever.
    pub ejections: AtomicU64,
}

/// Why a request was refused at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overflow {
    #[error("circuit breaker: too many requests (max_requests {0})")]
    Requests(u32),
    #[error("circuit breaker: too many pending requests (max_pending_requests {0})")]
    Pending(u32),
}

/// A request counted against the cluster's limits until dropped.
pub struct Admission {
    state: Arc<ClusterState>,
    _connection: Option<OwnedSemaphorePermit>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.state.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A retry counted against `max_retries` until dropped.
pub struct RetryToken(Arc<ClusterState>);

impl Drop for RetryToken {
    fn drop(&mut self) {
        self.0.retries.fetch_sub(1, Ordering::AcqRel);
    }
}

struct PendingGuard<'a>(&'a AtomicU32);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ClusterState {
    pub fn new(limits: Limits) -> Self {
        ClusterState {
            limits,
            connections: limits
                .max_connections
                .map(|n| Arc::new(Semaphore::new(n.max(1) as usize))),
            pending: AtomicU32::new(0),
            active: AtomicU32::new(0),
            retries: AtomicU32::new(0),
            rr: AtomicUsize::new(0),
            known_hosts: AtomicUsize::new(0),
            hosts: Mutex::new(HashMap::default()),
            weights: Mutex::new(WeightTable::default()),
            overflows: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
        }
    }

    /// Admits a request: over `max_requests` active, or with every connection busy and
    /// `max_pending_requests` already waiting, it overflows at once; otherwise it may wait for a
    /// connection (HTTP/1.1: one request per connection).
    pub async fn admit(self: &Arc<Self>) -> Result<Admission, Overflow> {
        let active = self.active.fetch_add(1, Ordering::AcqRel);
        // From here the Admission's drop undoes the count, whatever happens.
        let mut admission = Admission {
            state: self.clone(),
            _connection: None,
        };
        if let Some(max) = self.limits.max_requests
            && active >= max
        {
            self.overflows.fetch_add(1, Ordering::Relaxed);
            return Err(Overflow::Requests(max));
        }
        let Some(sem) = &self.connections else {
            return Ok(admission);
        };
        if let Ok(p) = sem.clone().try_acquire_owned() {
            admission._connection = Some(p);
            return Ok(admission);
        }
        let max_pending = self.limits.max_pending_requests.unwrap_or(u32::MAX);
        let waiting = self.pending.fetch_add(1, Ordering::AcqRel);
        let _pending = PendingGuard(&self.pending);
        if waiting >= max_pending {
            self.overflows.fetch_add(1, Ordering::Relaxed);
            return Err(Overflow::Pending(max_pending));
        }
        match sem.clone().acquire_owned().await {
            Ok(p) => admission._connection = Some(p),
            Err(_) => return Ok(admission), // never closed
        }
        Ok(admission)
    }

    /// Whether one more retry is allowed by `max_retries` (then held until the token drops).
    pub fn try_retry(self: &Arc<Self>) -> Option<RetryToken> {
        let n = self.retries.fetch_add(1, Ordering::AcqRel);
        let token = RetryToken(self.clone());
        match self.limits.max_retries {
            Some(max) if n >= max => {
                self.overflows.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => Some(token),
        }
    }

    /// Takes the endpoint weights of `endpoints` (the cluster's current host set) for the picks
    /// that follow; cheap when the set is the one already observed.
    pub fn observe(&self, endpoints: &Endpoints) {
        let mut t = self.weights.lock();
        if t.id == endpoints.id() {
            return;
        }
        t.id = endpoints.id();
        t.current.clear();
        t.weight = if endpoints.weighted() {
            endpoints
                .addrs
                .iter()
                .copied()
                .zip(endpoints.weights.iter().copied())
                .collect()
        } else {
            HashMap::new()
        };
    }

    /// Chooses an endpoint among `addrs` by `lb`, skipping ejected hosts (unless fewer than half
    /// are usable: Envoy's panic mode uses all) and, when possible, those in `avoid`.
    pub fn pick(
        &self,
        addrs: &[SocketAddr],
        lb: LbPolicy,
        avoid: &[SocketAddr],
        roll: u64,
    ) -> Option<SocketAddr> {
        if addrs.is_empty() {
            return None;
        }
        self.known_hosts.store(addrs.len(), Ordering::Relaxed);
        let now = Instant::now();
        let hosts = self.hosts.lock();
        // Without ejections or hosts to avoid (the usual case) the candidates are `addrs`
        // themselves: no copy.
        let mut candidates: &[SocketAddr] = addrs;
        let usable: Vec<SocketAddr>;
        if hosts
            .values()
            .any(|h| h.ejected_until.is_some_and(|t| t > now))
        {
            usable = addrs
                .iter()
                .copied()
                .filter(|a| {
                    hosts
                        .get(a)
                        .and_then(|h| h.ejected_until)
                        .is_none_or(|t| t <= now)
                })
                .collect();
            if usable.len() * 100 >= addrs.len() * PANIC_THRESHOLD_PERCENT {
                candidates = &usable;
            }
        }
        let fresh: Vec<SocketAddr>;
        if candidates.len() > 1 && !avoid.is_empty() {
            fresh = candidates
                .iter()
                .copied()
                .filter(|a| !avoid.contains(a))
                .collect();
            if !fresh.is_empty() {
                candidates = &fresh;
            }
        }
        let n = candidates.len();
        let mut table = self.weights.lock();
        if !table.weight.is_empty() {
            let load = |x: &SocketAddr| hosts.get(x).map_or(0, |h| h.active);
            return Some(weighted_pick(&mut table, candidates, lb, roll, load));
        }
        drop(table);
        let chosen = match lb {
            LbPolicy::RoundRobin => candidates[self.rr.fetch_add(1, Ordering::Relaxed) % n],
            LbPolicy::Random => candidates[(roll % n as u64) as usize],
            // `roll` is the request's hash key: the host with the highest hash of (key, host).
            LbPolicy::RingHash => *candidates
                .iter()
                .max_by_key(|a| rendezvous(roll, a))
                .unwrap_or(&candidates[0]),
            LbPolicy::LeastRequest => {
                // Two distinct random hosts (when there are two); the less loaded wins.
                let i = (roll % n as u64) as usize;
                let j = if n > 1 {
                    (i + 1 + ((roll >> 32) % (n as u64 - 1)) as usize) % n
                } else {
                    i
                };
                let (a, b) = (candidates[i], candidates[j]);
                let load = |x: &SocketAddr| hosts.get(x).map_or(0, |h| h.active);
                if load(&b) < load(&a) { b } else { a }
            }
        };
        Some(chosen)
    }

    /// Counts a request starting on `addr` (for least request).
    pub fn host_started(&self, addr: SocketAddr) {
        self.hosts.lock().entry(addr).or_default().active += 1;
    }

    /// Counts a request on `addr` ending with `outcome`; with outlier detection on, ejects the
    /// host after too many consecutive errors (bounded by `max_ejection_percent`). Returns
    /// whether it was ejected now.
    pub fn host_finished(
        &self,
        addr: SocketAddr,
        outcome: HostOutcome,
        od: Option<&OutlierDetection>,
    ) -> bool {
        let now = Instant::now();
        let mut hosts = self.hosts.lock();
        let ejected_now = hosts
            .values()
            .filter(|h| h.ejected_until.is_some_and(|t| t > now))
            .count();
        let ejected = self.judge(&mut hosts, addr, now, ejected_now, outcome, od);
        if hosts.get(&addr).is_some_and(HostState::is_idle) {
            hosts.remove(&addr);
        }
        ejected
    }

    fn judge(
        &self,
        hosts: &mut HashMap<SocketAddr, HostState, FastHash>,
        addr: SocketAddr,
        now: Instant,
        ejected_now: usize,
        outcome: HostOutcome,
        od: Option<&OutlierDetection>,
    ) -> bool {
        let h = hosts.entry(addr).or_default();
        h.active = h.active.saturating_sub(1);
        let status = match outcome {
            HostOutcome::Status(s) => s,
            HostOutcome::LocalFailure => 503,
        };
        if status >= 500 {
            h.consecutive_5xx += 1;
        } else {
            h.consecutive_5xx = 0;
        }
        if matches!(status, 502..=504) {
            h.consecutive_gateway += 1;
        } else {
            h.consecutive_gateway = 0;
        }
        let Some(od) = od else {
            return false;
        };
        if h.ejected_until.is_some_and(|t| t > now) {
            return false;
        }
        let tripped = od.consecutive_5xx.is_some_and(|n| h.consecutive_5xx >= n)
            || od
                .consecutive_gateway
                .is_some_and(|n| h.consecutive_gateway >= n);
        if !tripped {
            return false;
        }
        let total = self.known_hosts.load(Ordering::Relaxed).max(1);
        // Envoy: eject while the ejected share is below max_ejection_percent.
        if ejected_now * 100 >= total * od.max_ejection_percent as usize {
            return false;
        }
        h.times_ejected += 1;
        let time = ejection_time(od, h.times_ejected);
        h.ejected_until = Some(now + time);
        h.consecutive_5xx = 0;
        h.consecutive_gateway = 0;
        self.ejections.fetch_add(1, Ordering::Relaxed);
        tracing::info!(host = %addr, ejection_ms = time.as_millis() as u64, "outlier detection ejected host");
        true
    }

    /// Whether `addr` is ejected now.
    pub fn is_ejected(&self, addr: SocketAddr) -> bool {
        let now = Instant::now();
        self.hosts
            .lock()
            .get(&addr)
            .and_then(|h| h.ejected_until)
            .is_some_and(|t| t > now)
    }

    /// Requests currently counted as pending (waiting for a connection).
    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Acquire)
    }
}

/// A pick that honours endpoint weights: smooth weighted round robin, weighted random,
/// least request over two weighted draws comparing (active + 1) / weight, and weighted
/// rendezvous hashing (score = weight / -ln(u)).
fn weighted_pick(
    table: &mut WeightTable,
    candidates: &[SocketAddr],
    lb: LbPolicy,
    roll: u64,
    load: impl Fn(&SocketAddr) -> u32,
) -> SocketAddr {
    let weight =
        |t: &WeightTable, a: &SocketAddr| u64::from(t.weight.get(a).copied().unwrap_or(1).max(1));
    let total: u64 = candidates.iter().map(|a| weight(table, a)).sum();
    let draw = |t: &WeightTable, r: u64| {
        let mut x = r % total.max(1);
        for a in candidates {
            let w = weight(t, a);
            if x < w {
                return *a;
            }
            x -= w;
        }
        candidates[candidates.len() - 1]
    };
    match lb {
        LbPolicy::RoundRobin => {
            let mut best = candidates[0];
            let mut best_value = i64::MIN;
            for a in candidates {
                let w = weight(table, a) as i64;
                let cur = table.current.entry(*a).or_insert(0);
                *cur += w;
                if *cur > best_value {
                    best_value = *cur;
                    best = *a;
                }
            }
            if let Some(c) = table.current.get_mut(&best) {
                *c -= total as i64;
            }
            best
        }
        LbPolicy::Random => draw(table, roll),
        LbPolicy::LeastRequest => {
            let a = draw(table, roll & 0xffff_ffff);
            let b = draw(table, roll >> 32);
            let (la, lb_) = (u64::from(load(&a)) + 1, u64::from(load(&b)) + 1);
            // b wins when its load per unit of weight is lower.
            if lb_ * weight(table, &a) < la * weight(table, &b) {
                b
            } else {
                a
            }
        }
        LbPolicy::RingHash => {
            let score = |a: &SocketAddr| {
                let u = ((rendezvous(roll, a) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                weight(table, a) as f64 / -u.ln()
            };
            *candidates
                .iter()
                .max_by(|x, y| score(x).total_cmp(&score(y)))
                .unwrap_or(&candidates[0])
        }
    }
}

/// Rendezvous (highest random weight) score of `host` for `key`: FNV-1a over both, mixed.
fn rendezvous(key: u64, host: &SocketAddr) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    key.to_le_bytes().into_iter().for_each(&mut eat);
    host.to_string().bytes().for_each(&mut eat);
    // splitmix64 finaliser for a good spread
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// How long an ejection lasts at most for a host ejected `times` times.
pub fn ejection_time(od: &OutlierDetection, times: u32) -> Duration {
    od.base_ejection_time
        .saturating_mul(times)
        .min(od.max_ejection_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (1..=n)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect()
    }

    fn od(consecutive_5xx: u32, max_percent: u32) -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: Some(consecutive_5xx),
            consecutive_gateway: None,
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: max_percent,
        }
    }

    #[tokio::test]
    async fn pending_and_request_limits_overflow_at_once() {
        let s = Arc::new(ClusterState::new(Limits {
            max_connections: Some(1),
            max_pending_requests: Some(1),
            ..Limits::default()
        }));
        let first = s.admit().await.unwrap();
        // Second waits for the connection (pending 1 of 1)...
        let s2 = s.clone();
        let waiting = tokio::spawn(async move { s2.admit().await.map(|_| ()) });
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.pending() == 0 {
            assert!(Instant::now() < deadline, "second request never queued");
            tokio::task::yield_now().await;
        }
        // ...and a third overflows.
        assert_eq!(s.admit().await.err(), Some(Overflow::Pending(1)));
        assert_eq!(s.overflows.load(Ordering::Relaxed), 1);
        drop(first);
        waiting.await.unwrap().unwrap();

        let r = Arc::new(ClusterState::new(Limits {
            max_requests: Some(1),
            ..Limits::default()
        }));
        let held = r.admit().await.unwrap();
        assert_eq!(r.admit().await.err(), Some(Overflow::Requests(1)));
        drop(held);
        assert!(r.admit().await.is_ok(), "the count was released");
    }

    #[test]
    fn retries_are_bounded() {
        let s = Arc::new(ClusterState::new(Limits {
            max_retries: Some(1),
            ..Limits::default()
        }));
        let t = s.try_retry().unwrap();
        assert!(s.try_retry().is_none());
        drop(t);
        assert!(s.try_retry().is_some());
    }

    #[test]
    fn round_robin_random_and_least_request() {
        let a = addrs(3);
        let s = ClusterState::new(Limits::default());
        let rr: Vec<_> = (0..4)
            .map(|_| s.pick(&a, LbPolicy::RoundRobin, &[], 0).unwrap())
            .collect();
        assert_eq!(rr, vec![a[0], a[1], a[2], a[0]]);
        assert_eq!(s.pick(&a, LbPolicy::Random, &[], 5), Some(a[2]));
        // a[0] busy: of the two choices (a[0], a[1]) the idle one wins.
        s.host_started(a[0]);
        s.host_started(a[0]);
        for roll in [0u64, 1, 2, 1 << 32, (1 << 32) | 2, u64::MAX] {
            let p = s.pick(&a, LbPolicy::LeastRequest, &[], roll).unwrap();
            assert_ne!(p, a[0], "the busy host never wins against an idle one");
        }
        // Retries avoid previous hosts when others exist.
        for r in 0..10 {
            let p = s.pick(&a, LbPolicy::Random, &[a[0], a[1]], r).unwrap();
            assert_eq!(p, a[2]);
        }
        assert_eq!(s.pick(&[], LbPolicy::RoundRobin, &[], 0), None);
    }

    #[test]
    fn consecutive_errors_eject_within_the_percent_bound() {
        let a = addrs(2);
        let s = ClusterState::new(Limits::default());
        let od = od(2, 50);
        s.pick(&a, LbPolicy::RoundRobin, &[], 0);
        s.host_started(a[0]);
        assert!(!s.host_finished(a[0], HostOutcome::Status(500), Some(&od)));
        s.host_started(a[0]);
        assert!(
            !s.host_finished(a[0], HostOutcome::Status(200), Some(&od)),
            "reset"
        );
        for _ in 0..2 {
            s.host_started(a[0]);
            s.host_finished(a[0], HostOutcome::LocalFailure, Some(&od));
        }
        assert!(s.is_ejected(a[0]));
        for _ in 0..4 {
            assert_eq!(s.pick(&a, LbPolicy::RoundRobin, &[], 0), Some(a[1]));
        }
        // The second host may not be ejected: 50% already are.
        for _ in 0..3 {
            s.host_started(a[1]);
            assert!(!s.host_finished(a[1], HostOutcome::Status(503), Some(&od)));
        }
        assert!(!s.is_ejected(a[1]));
        // Without outlier detection nothing is ejected.
        let plain = ClusterState::new(Limits::default());
        for _ in 0..10 {
            assert!(!plain.host_finished(a[0], HostOutcome::Status(500), None));
        }
        assert_eq!(ejection_time(&od, 2), Duration::from_secs(60));
    }

    #[test]
    fn consistent_hash_keeps_a_key_on_its_host() {
        let a = addrs(5);
        let s = ClusterState::new(Limits::default());
        let mut spread = std::collections::HashSet::new();
        for key in 0..50u64 {
            let first = s.pick(&a, LbPolicy::RingHash, &[], key).unwrap();
            for _ in 0..3 {
                assert_eq!(s.pick(&a, LbPolicy::RingHash, &[], key), Some(first));
            }
            // Removing another host does not move the key.
            let others: Vec<SocketAddr> = a
                .iter()
                .copied()
                .filter(|x| *x == first || *x != a[(key % 5) as usize])
                .collect();
            assert_eq!(s.pick(&others, LbPolicy::RingHash, &[], key), Some(first));
            spread.insert(first);
        }
        assert!(spread.len() >= 4, "keys spread over the hosts: {spread:?}");
    }

    #[test]
    fn all_ejected_means_panic_mode() {
        let a = addrs(1);
        let s = ClusterState::new(Limits::default());
        let od = od(1, 100);
        s.pick(&a, LbPolicy::RoundRobin, &[], 0);
        s.host_finished(a[0], HostOutcome::Status(500), Some(&od));
        assert!(s.is_ejected(a[0]));
        assert_eq!(s.pick(&a, LbPolicy::RoundRobin, &[], 0), Some(a[0]));
    }

    fn weighted(weights: &[u32]) -> Endpoints {
        Endpoints::from_endpoints(
            addrs(weights.len() as u16)
                .into_iter()
                .zip(weights)
                .map(|(addr, w)| super::super::endpoints::Endpoint {
                    addr,
                    weight: *w,
                    priority: 0,
                    locality: None,
                })
                .collect(),
        )
    }

    #[test]
    fn endpoint_weights_shape_every_policy() {
        let e = weighted(&[1, 3]);
        let a = e.addrs.clone();
        let s = ClusterState::new(Limits::default());
        s.observe(&e);
        // Smooth weighted round robin: 1:3, interleaved.
        let rr: Vec<_> = (0..8)
            .map(|_| s.pick(&a, LbPolicy::RoundRobin, &[], 0).unwrap())
            .collect();
        assert_eq!(rr.iter().filter(|x| **x == a[1]).count(), 6);
        assert_eq!(rr[..4].iter().filter(|x| **x == a[0]).count(), 1);
        // Weighted random: rolls 0 → a[0], 1..=3 → a[1].
        assert_eq!(s.pick(&a, LbPolicy::Random, &[], 0), Some(a[0]));
        for r in 1..4 {
            assert_eq!(s.pick(&a, LbPolicy::Random, &[], r), Some(a[1]));
        }
        // Weighted rendezvous: the heavy host gets most keys.
        let heavy = (0..400u64)
            .filter(|k| s.pick(&a, LbPolicy::RingHash, &[], *k) == Some(a[1]))
            .count();
        assert!((240..=360).contains(&heavy), "{heavy} of 400 keys");
        // Least request: a[1] has 3 active (1 per unit of weight), a[0] 2 (2 per unit): a[1].
        for _ in 0..3 {
            s.host_started(a[1]);
        }
        s.host_started(a[0]);
        s.host_started(a[0]);
        let roll = 1u64 << 32; // draws a[0] then a[1]
        assert_eq!(s.pick(&a, LbPolicy::LeastRequest, &[], roll), Some(a[1]));
        // Equal weights observed: plain round robin again.
        s.observe(&Endpoints::new(a.clone()));
        let rr: Vec<_> = (0..4)
            .map(|_| s.pick(&a, LbPolicy::RoundRobin, &[], 0).unwrap())
            .collect();
        assert_eq!(rr.iter().filter(|x| **x == a[0]).count(), 2);
    }

    #[test]
    fn idle_host_entries_are_dropped() {
        let a = addrs(1);
        let s = ClusterState::new(Limits::default());
        s.host_started(a[0]);
        s.host_finished(a[0], HostOutcome::Status(200), None);
        assert!(
            s.hosts.lock().is_empty(),
            "an original-destination host leaves no trace"
        );
        s.host_started(a[0]);
        s.host_finished(a[0], HostOutcome::Status(503), None);
        assert_eq!(s.hosts.lock().len(), 1, "a failure is remembered");
    }
}
