//! Scraping every proxy's `/stats/prometheus` once a second and keeping the last ten minutes of
//! [`Snapshot`]s, so the graph can be computed over any window inside that.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::exposition;
use super::graph::Snapshot;

/// How often the proxies are scraped.
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);
/// How much history is kept.
pub const HISTORY: Duration = Duration::from_secs(600);

/// What the dashboard reads from: every proxy's admin URL by pod name.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub proxies: BTreeMap<String, String>,
}

/// The outcome of the last scrape of one proxy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScrapeStatus {
    pub pod: String,
    pub ok: bool,
    /// Why the last scrape failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Snapshots, oldest first.
#[derive(Debug, Default)]
pub struct History {
    snapshots: VecDeque<(Instant, Arc<Snapshot>)>,
    pub status: Vec<ScrapeStatus>,
}

impl History {
    /// Appends a snapshot and forgets those older than [`HISTORY`].
    pub fn push(&mut self, at: Instant, snap: Snapshot) {
        self.snapshots.push_back((at, Arc::new(snap)));
        while let Some((t, _)) = self.snapshots.front() {
            if at.duration_since(*t) > HISTORY {
                self.snapshots.pop_front();
            } else {
                break;
            }
        }
    }

    /// The newest snapshot.
    pub fn latest(&self) -> Option<(Instant, Arc<Snapshot>)> {
        self.snapshots.back().cloned()
    }

    /// The newest snapshot taken at least `age` before `from` (else the oldest one kept).
    pub fn at_or_before(&self, from: Instant, age: Duration) -> Option<(Instant, Arc<Snapshot>)> {
        let cutoff = from.checked_sub(age)?;
        self.snapshots
            .iter()
            .rev()
            .find(|(t, _)| *t <= cutoff)
            .or_else(|| self.snapshots.front())
            .cloned()
    }
}

/// Shared between the scraper and the HTTP routes.
pub type SharedHistory = Arc<RwLock<History>>;

/// Scrapes every target once (all at the same time) and sums the results into one snapshot.
pub async fn scrape(http: &reqwest::Client, targets: &Targets) -> (Snapshot, Vec<ScrapeStatus>) {
    let mut fetches = tokio::task::JoinSet::new();
    for (pod, admin) in &targets.proxies {
        let (http, pod) = (http.clone(), pod.clone());
        let url = format!("{}/stats/prometheus", admin.trim_end_matches('/'));
        fetches.spawn(async move {
            let res = async {
                let resp = http
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| format!("{url}: {e}"))?;
                if !resp.status().is_success() {
                    return Err(format!("{url}: HTTP {}", resp.status()));
                }
                resp.text().await.map_err(|e| format!("{url}: {e}"))
            }
            .await;
            (pod, res)
        });
    }
    let mut snap = Snapshot::default();
    let mut status = Vec::new();
    while let Some(joined) = fetches.join_next().await {
        let Ok((pod, res)) = joined else { continue };
        match res {
            Ok(text) => {
                snap.add(&exposition::parse(&text, "istio_"));
                status.push(ScrapeStatus {
                    pod,
                    ok: true,
                    error: None,
                });
            }
            Err(e) => {
                tracing::debug!(pod = %pod, error = %e, "scrape failed");
                status.push(ScrapeStatus {
                    pod,
                    ok: false,
                    error: Some(e),
                });
            }
        }
    }
    status.sort_by(|a, b| a.pod.cmp(&b.pod));
    (snap, status)
}

/// Scrapes forever (until the task is dropped).
pub async fn run(targets: Targets, history: SharedHistory) {
    let http = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(900))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "dashboard cannot build its HTTP client; no metrics");
            return;
        }
    };
    let mut tick = tokio::time::interval(SCRAPE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (snap, status) = scrape(&http, &targets).await;
        if let Ok(mut h) = history.write() {
            h.push(Instant::now(), snap);
            h.status = status;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_finds_the_snapshot_a_window_back_and_forgets_old_ones() {
        let mut h = History::default();
        let t0 = Instant::now();
        for s in 0..700u64 {
            h.push(t0 + Duration::from_secs(s), Snapshot::default());
        }
        let now = t0 + Duration::from_secs(699);
        let (t, _) = h.at_or_before(now, Duration::from_secs(10)).unwrap();
        assert_eq!(now.duration_since(t), Duration::from_secs(10));
        // Older than the history: the oldest kept, 600 s back.
        let (t, _) = h.at_or_before(now, Duration::from_secs(3000)).unwrap();
        assert_eq!(now.duration_since(t), Duration::from_secs(600));
        assert_eq!(h.latest().unwrap().0, now);
    }
}
