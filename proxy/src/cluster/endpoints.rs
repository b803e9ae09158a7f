//! A cluster's endpoints (from EDS) and round-robin choice among them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

/// The healthy addresses of one cluster.
#[derive(Debug, Serialize)]
pub struct Endpoints {
    pub addrs: Vec<SocketAddr>,
    #[serde(skip)]
    next: AtomicUsize,
}

impl Endpoints {
    pub fn new(addrs: Vec<SocketAddr>) -> Self {
        Endpoints {
            addrs,
            next: AtomicUsize::new(0),
        }
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
        self.addrs == other.addrs
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
    }
}
