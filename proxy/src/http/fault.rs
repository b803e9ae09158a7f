//! Fault injection (Envoy's `envoy.filters.http.fault` with a per-route `HTTPFault`): delay a
//! share of requests by a fixed time, abort a share with an HTTP status. Runs after route
//! selection and before forwarding, so the route timeout does not include the delay.

use crate::routing::Fault;

/// Response flags of injected faults (Envoy's).
pub mod flags {
    /// Delay injected.
    pub const DELAY_INJECTED: &str = "DI";
    /// Abort injected.
    pub const FAULT_INJECTED: &str = "FI";
    /// Both.
    pub const DELAY_AND_FAULT_INJECTED: &str = "DI,FI";
}

/// What the fault filter did to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Injected {
    pub delayed: bool,
    /// The status to answer with instead of forwarding.
    pub abort: Option<u16>,
}

impl Injected {
    /// The response flags for the access log and metrics, when the request is answered by the
    /// fault (abort); a delayed and then forwarded request carries `DI` alone.
    pub fn flags(self) -> Option<&'static str> {
        match (self.delayed, self.abort.is_some()) {
            (false, false) => None,
            (true, false) => Some(flags::DELAY_INJECTED),
            (false, true) => Some(flags::FAULT_INJECTED),
            (true, true) => Some(flags::DELAY_AND_FAULT_INJECTED),
        }
    }
}

/// Applies `fault` with the two random rolls (any `u32`): sleeps for the delay when it hits, and
/// says whether to abort.
pub async fn inject(fault: &Fault, delay_roll: u32, abort_roll: u32) -> Injected {
    let mut out = Injected::default();
    if let Some((delay, share)) = fault.delay
        && share.hits(delay_roll)
    {
        tokio::time::sleep(delay).await;
        out.delayed = true;
    }
    if let Some((status, share)) = fault.abort
        && share.hits(abort_roll)
    {
        out.abort = Some(status);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::routing::PerMillion;

    #[tokio::test]
    async fn delay_and_abort_follow_their_shares() {
        let f = Fault {
            delay: Some((Duration::from_millis(50), PerMillion(500_000))),
            abort: Some((503, PerMillion(100_000))),
        };
        let started = Instant::now();
        let hit = inject(&f, 10, 99_999).await;
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(
            hit,
            Injected {
                delayed: true,
                abort: Some(503)
            }
        );
        assert_eq!(hit.flags(), Some("DI,FI"));
        let started = Instant::now();
        let miss = inject(&f, 500_000, 100_000).await;
        assert!(started.elapsed() < Duration::from_millis(50));
        assert_eq!(miss, Injected::default());
        assert_eq!(miss.flags(), None);
    }
}
