//! Picking free loopback ports for every listener of the local mesh.

use std::net::{SocketAddr, TcpListener};

/// Picks `n` distinct free ports on 127.0.0.1: all are held open together (so none repeats) and
/// released when this returns, for the children to bind.
pub fn pick_free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(TcpListener::bind("127.0.0.1:0")?);
    }
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// Hands out picked ports one at a time, as loopback socket addresses.
#[derive(Debug)]
pub struct PortPool {
    ports: std::vec::IntoIter<u16>,
}

/// The pool ran out: more listeners were planned than ports picked.
#[derive(Debug, thiserror::Error)]
#[error("ran out of picked ports")]
pub struct Exhausted;

impl PortPool {
    pub fn new(ports: Vec<u16>) -> Self {
        PortPool {
            ports: ports.into_iter(),
        }
    }

    /// The next address `127.0.0.1:<port>`.
    pub fn next_addr(&mut self) -> Result<SocketAddr, Exhausted> {
        self.ports
            .next()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .ok_or(Exhausted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn picks_distinct_bindable_ports() {
        let ports = pick_free_ports(40).unwrap();
        assert_eq!(ports.len(), 40);
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), 40);
        assert!(ports.iter().all(|p| *p != 0));
        // Released: each can be bound again.
        let l = TcpListener::bind(("127.0.0.1", ports[0])).unwrap();
        drop(l);
        let mut pool = PortPool::new(ports[..2].to_vec());
        assert_eq!(pool.next_addr().unwrap().port(), ports[0]);
        assert_eq!(pool.next_addr().unwrap().ip().to_string(), "127.0.0.1");
        assert!(pool.next_addr().is_err());
    }
}
