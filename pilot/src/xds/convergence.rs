//! Convergence: how long a config change takes to be answered by every proxy.
//!
//! When a push (epoch) is published, every stream open at that moment must answer (ACK or NACK)
//! all it was sent for that epoch or a newer one; when the last of them does (or goes away), the
//! time since the change reached Pilot is observed in `pilot_xds_convergence_seconds`.

use std::collections::{BTreeMap, HashSet};

use parking_lot::Mutex;
use prometheus_client::metrics::histogram::Histogram;
use tokio::time::Instant;

/// At most this many pushes are tracked at once; older ones are dropped unobserved.
const MAX_TRACKED: usize = 64;

#[derive(Debug)]
struct Pending {
    changed_at: Instant,
    streams: HashSet<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    open: HashSet<u64>,
    pending: BTreeMap<u64, Pending>,
}

/// Tracks which streams still have to answer each push.
#[derive(Debug)]
pub(super) struct Convergence {
    inner: Mutex<Inner>,
    histogram: Histogram,
}

impl Convergence {
    pub(super) fn new(histogram: Histogram) -> Convergence {
        Convergence {
            inner: Mutex::new(Inner::default()),
            histogram,
        }
    }

    /// A stream identified its proxy.
    pub(super) fn open(&self, stream: u64) {
        self.inner.lock().open.insert(stream);
    }

    /// A stream ended: it no longer holds any push back.
    pub(super) fn close(&self, stream: u64) {
        let mut inner = self.inner.lock();
        inner.open.remove(&stream);
        self.settle(&mut inner, stream, u64::MAX);
    }

    /// Push `epoch`, caused by a change that reached Pilot at `changed_at`, is published.
    pub(super) fn begin(&self, epoch: u64, changed_at: Instant) {
        let mut inner = self.inner.lock();
        if inner.open.is_empty() {
            return;
        }
        let streams = inner.open.clone();
        inner.pending.insert(
            epoch,
            Pending {
                changed_at,
                streams,
            },
        );
        while inner.pending.len() > MAX_TRACKED {
            inner.pending.pop_first();
        }
    }

    /// `stream` answered everything it was sent up to push `epoch` (included).
    pub(super) fn done(&self, stream: u64, epoch: u64) {
        let mut inner = self.inner.lock();
        self.settle(&mut inner, stream, epoch);
    }

    fn settle(&self, inner: &mut Inner, stream: u64, epoch: u64) {
        let mut finished = Vec::new();
        for (e, p) in inner.pending.range_mut(..=epoch) {
            if p.streams.remove(&stream) && p.streams.is_empty() {
                finished.push(*e);
            }
        }
        for e in finished {
            if let Some(p) = inner.pending.remove(&e) {
                let secs = p.changed_at.elapsed().as_secs_f64();
                tracing::debug!(epoch = e, seconds = secs, "push converged");
                self.histogram.observe(secs);
            }
        }
    }

    /// Pushes still waiting on some stream (for tests).
    #[cfg(test)]
    pub(super) fn waiting(&self) -> Vec<u64> {
        self.inner.lock().pending.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::histogram::exponential_buckets;

    fn count(h: &Histogram) -> u64 {
        let reg_metrics = mesh_runtime::Metrics::default();
        reg_metrics.register(|r| r.register("c", "c", h.clone()));
        let text = reg_metrics.encode();
        text.lines()
            .find_map(|l| l.strip_prefix("c_count "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn observes_when_every_open_stream_answered() {
        let h = Histogram::new(exponential_buckets(0.001, 2.0, 4));
        let c = Convergence::new(h.clone());
        c.begin(1, Instant::now()); // nobody connected: nothing to wait for
        assert!(c.waiting().is_empty());
        c.open(10);
        c.open(11);
        c.begin(2, Instant::now());
        c.begin(3, Instant::now());
        c.done(10, 2);
        assert_eq!(c.waiting(), vec![2, 3]);
        // Answering a newer push also settles the older ones.
        c.done(11, 3);
        assert_eq!(c.waiting(), vec![3]);
        assert_eq!(count(&h), 1);
        // A stream going away does not hold a push back.
        c.close(10);
        assert!(c.waiting().is_empty());
        assert_eq!(count(&h), 2);
    }
}
