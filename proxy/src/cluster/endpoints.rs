//! A cluster's endpoints (from EDS, `load_assignment` or DNS): every endpoint with its weight,
//! priority and locality, and the hosts in use — those of the lowest priority that has any
//! healthy host (unhealthy endpoints are dropped when decoding), as Envoy does without spill-over.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;

use super::discovery::Locality;

/// Gives every `Endpoints` value its own id, so per-cluster state notices a new host set.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// One endpoint of a load assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `load_balancing_weight` (1 when unset or 0).
    pub weight: u32,
    /// The `priority` of its `LocalityLbEndpoints` (0 is the highest).
    pub priority: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<Locality>,
}

impl Endpoint {
    /// An endpoint of weight 1, priority 0, no locality.
    pub fn plain(addr: SocketAddr) -> Self {
        Endpoint {
            addr,
            weight: 1,
            priority: 0,
            locality: None,
        }
    }
}

/// The healthy endpoints of one cluster.
#[derive(Debug, Serialize)]
pub struct Endpoints {
    /// The hosts in use: the endpoints of the lowest priority present.
    pub addrs: Vec<SocketAddr>,
    /// The weight of each of `addrs` (same order).
    pub weights: Vec<u32>,
    /// Every endpoint, all priorities.
    pub endpoints: Vec<Endpoint>,
    #[serde(skip)]
    next: AtomicUsize,
    #[serde(skip)]
    id: u64,
}

impl Endpoints {
    /// Equal-weight endpoints of priority 0.
    pub fn new(addrs: Vec<SocketAddr>) -> Self {
        Self::from_endpoints(addrs.into_iter().map(Endpoint::plain).collect())
    }

    /// Endpoints with weights, priorities and localities.
    pub fn from_endpoints(endpoints: Vec<Endpoint>) -> Self {
        let top = endpoints.iter().map(|e| e.priority).min();
        let (addrs, weights) = endpoints
            .iter()
            .filter(|e| Some(e.priority) == top)
            .map(|e| (e.addr, e.weight.max(1)))
            .unzip();
        Endpoints {
            addrs,
            weights,
            endpoints,
            next: AtomicUsize::new(0),
            id: GENERATION.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Identifies this host set (a new value for every `Endpoints` built).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the hosts in use do not all have the same weight.
    pub fn weighted(&self) -> bool {
        self.weights.windows(2).any(|w| w[0] != w[1])
    }

    /// The next address in round-robin order; `None` when there is none.
    pub fn pick(&self) -> Option<SocketAddr> {
        if self.addrs.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.addrs.get(i % self.addrs.len()).copied()
    }
}

impl PartialEq for Endpoints {
    fn eq(&self, other: &Self) -> bool {
        self.endpoints == other.endpoints
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_cycles() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let e = Endpoints::new(vec![a, b]);
        assert_eq!([e.pick(), e.pick(), e.pick()], [Some(a), Some(b), Some(a)]);
        assert_eq!(Endpoints::new(vec![]).pick(), None);
        assert!(!e.weighted());
    }

    #[test]
    fn lowest_priority_with_hosts_is_used() {
        let ep = |port: u16, weight: u32, priority: u32| Endpoint {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            weight,
            priority,
            locality: None,
        };
        let e = Endpoints::from_endpoints(vec![ep(1, 1, 1), ep(2, 3, 0), ep(3, 0, 0)]);
        assert_eq!(e.addrs, vec![ep(2, 0, 0).addr, ep(3, 0, 0).addr]);
        assert_eq!(e.weights, vec![3, 1], "weight 0 is read as 1");
        assert!(e.weighted());
        assert_eq!(e.endpoints.len(), 3);
        // Only the lower priority left (the priority-0 hosts were unhealthy and dropped).
        let e = Endpoints::from_endpoints(vec![ep(1, 1, 1)]);
        assert_eq!(e.addrs, vec![ep(1, 1, 1).addr]);
        assert_ne!(Endpoints::new(vec![]).id(), Endpoints::new(vec![]).id());
    }
}
