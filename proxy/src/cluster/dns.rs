//! `STRICT_DNS` / `LOGICAL_DNS` clusters: one task per cluster resolves its hosts now and every
//! `dns_refresh_rate`, and publishes the result into the shared config (see
//! `SharedConfig::set_dns_endpoints`). A failed lookup keeps that host's last good addresses
//! and is counted in `proxy_dns_resolutions_total{cluster, result="failure"}`.
//!
//! The resolver is the system's (`tokio::net::lookup_host`, i.e. `getaddrinfo` on the blocking
//! pool): it reads `/etc/hosts` and `nsswitch.conf` like every other program on the host (so
//! `localhost` and cluster-local names resolve as the application would see them), needs no
//! extra dependency, and the refresh rate is fixed as in Envoy's default (`respect_dns_ttl`
//! false), so the TTLs a stub resolver such as hickory-resolver would expose are not needed.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::discovery::{Discovery, DnsMode, DnsSpec};
use super::endpoints::{Endpoint, Endpoints};
use crate::xds::{Config, SharedConfig};

/// Looks host names up. A trait so tests can fail lookups on purpose.
pub trait Resolver: Send + Sync + 'static {
    /// The addresses of `host` (a name or an IP literal) with `port`.
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>>;
}

/// The system resolver (`getaddrinfo`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        Box::pin(async move {
            let mut out: Vec<SocketAddr> = Vec::new();
            for a in tokio::net::lookup_host((host, port)).await? {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
            Ok(out)
        })
    }
}

/// Labels of `proxy_dns_resolutions_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DnsLabels {
    pub cluster: String,
    /// `success` or `failure` (per host name looked up).
    pub result: &'static str,
}

/// DNS cluster metrics.
#[derive(Debug, Clone, Default)]
pub struct DnsMetrics {
    pub resolutions: Family<DnsLabels, Counter>,
}

impl DnsMetrics {
    /// Creates the metrics and registers them in `metrics`.
    pub fn register(metrics: &mesh_runtime::Metrics) -> Self {
        let m = DnsMetrics::default();
        metrics.register(|r| {
            r.register(
                "proxy_dns_resolutions",
                "Host name lookups of STRICT_DNS/LOGICAL_DNS clusters, by cluster and result",
                m.resolutions.clone(),
            );
        });
        m
    }

    fn count(&self, cluster: &str, result: &'static str) {
        self.resolutions
            .get_or_create(&DnsLabels {
                cluster: cluster.to_string(),
                result,
            })
            .inc();
    }

    /// Lookups of `cluster` that ended with `result`.
    pub fn count_of(&self, cluster: &str, result: &'static str) -> u64 {
        self.resolutions
            .get_or_create(&DnsLabels {
                cluster: cluster.to_string(),
                result,
            })
            .get()
    }
}

/// The last good addresses of each target of one DNS cluster.
#[derive(Debug)]
pub struct DnsState {
    spec: Arc<DnsSpec>,
    last: Vec<Option<Vec<SocketAddr>>>,
}

impl DnsState {
    pub fn new(spec: Arc<DnsSpec>) -> Self {
        let last = vec![None; spec.targets.len()];
        DnsState { spec, last }
    }

    /// Looks every target up once; a failure (or no address of the wanted family) keeps that
    /// target's previous addresses. Returns the endpoints and how many lookups failed.
    pub async fn refresh(
        &mut self,
        cluster: &str,
        resolver: &dyn Resolver,
        metrics: &DnsMetrics,
    ) -> (Endpoints, usize) {
        let mut failures = 0;
        for (i, t) in self.spec.targets.iter().enumerate() {
            let result = resolver
                .resolve(&t.host, t.port)
                .await
                .map(|addrs| self.spec.family.filter(addrs));
            match result {
                Ok(addrs) if !addrs.is_empty() => {
                    metrics.count(cluster, "success");
                    self.last[i] = Some(addrs);
                }
                Ok(_) => {
                    failures += 1;
                    metrics.count(cluster, "failure");
                    tracing::warn!(cluster, host = %t.host, family = ?self.spec.family, "dns lookup found no address of the family; keeping the last good set");
                }
                Err(e) => {
                    failures += 1;
                    metrics.count(cluster, "failure");
                    tracing::warn!(cluster, host = %t.host, error = %e, "dns lookup failed; keeping the last good set");
                }
            }
        }
        (self.endpoints(), failures)
    }

    /// The endpoints from the addresses held: every address (STRICT_DNS) or the first one
    /// (LOGICAL_DNS).
    pub fn endpoints(&self) -> Endpoints {
        let mut out = Vec::new();
        for (t, addrs) in self.spec.targets.iter().zip(&self.last) {
            let Some(addrs) = addrs else { continue };
            let addrs = match self.spec.mode {
                DnsMode::Strict => &addrs[..],
                DnsMode::Logical => &addrs[..addrs.len().min(1)],
            };
            out.extend(addrs.iter().map(|a| Endpoint {
                addr: *a,
                weight: t.weight,
                priority: t.priority,
                locality: t.locality.clone(),
            }));
        }
        Endpoints::from_endpoints(out)
    }
}

/// The DNS clusters of a config, by name.
fn dns_clusters(config: &Config) -> BTreeMap<String, Arc<DnsSpec>> {
    config
        .discovery
        .iter()
        .filter_map(|(name, d)| match d {
            Discovery::Dns(spec) => Some((name.clone(), spec.clone())),
            _ => None,
        })
        .collect()
}

/// Keeps one resolving task per DNS cluster of the published config (restarted when its
/// hosts or settings change) until `shutdown` resolves.
pub async fn run(
    config: SharedConfig,
    resolver: Arc<dyn Resolver>,
    metrics: DnsMetrics,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut tasks: HashMap<String, (Arc<DnsSpec>, tokio::task::JoinHandle<()>)> = HashMap::new();
    let mut rx = config.subscribe();
    let work = async {
        loop {
            let wanted = dns_clusters(&rx.borrow_and_update());
            tasks.retain(|name, (spec, task)| {
                let keep = wanted.get(name) == Some(spec);
                if !keep {
                    task.abort();
                }
                keep
            });
            config.retain_dns(|name| wanted.contains_key(name));
            for (name, spec) in wanted {
                if tasks.contains_key(&name) {
                    continue;
                }
                tracing::info!(cluster = %name, mode = ?spec.mode, refresh_ms = spec.refresh.as_millis() as u64, "resolving dns cluster");
                let task = tokio::spawn(resolve_forever(
                    name.clone(),
                    spec.clone(),
                    config.clone(),
                    resolver.clone(),
                    metrics.clone(),
                ));
                tasks.insert(name, (spec, task));
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = work => {}
        _ = shutdown => {}
    }
    for (_, (_, task)) in tasks {
        task.abort();
    }
}

async fn resolve_forever(
    name: String,
    spec: Arc<DnsSpec>,
    config: SharedConfig,
    resolver: Arc<dyn Resolver>,
    metrics: DnsMetrics,
) {
    let mut state = DnsState::new(spec.clone());
    loop {
        let (endpoints, _) = state.refresh(&name, resolver.as_ref(), &metrics).await;
        config.set_dns_endpoints(&name, &spec, endpoints);
        tokio::time::sleep(spec.refresh).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::cluster::discovery::{DnsTarget, LookupFamily};

    fn spec(mode: DnsMode, hosts: &[&str]) -> Arc<DnsSpec> {
        Arc::new(DnsSpec {
            mode,
            family: LookupFamily::V4Only,
            refresh: Duration::from_millis(20),
            targets: hosts
                .iter()
                .map(|h| DnsTarget {
                    host: h.to_string(),
                    port: 8080,
                    weight: 2,
                    priority: 0,
                    locality: None,
                })
                .collect(),
        })
    }

    /// Answers from a table until told to fail.
    struct Flaky {
        fail: AtomicBool,
        table: HashMap<&'static str, Vec<&'static str>>,
    }

    impl Resolver for Flaky {
        fn resolve<'a>(
            &'a self,
            host: &'a str,
            port: u16,
        ) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
            Box::pin(async move {
                if self.fail.load(Ordering::SeqCst) {
                    return Err(io::Error::other("SERVFAIL"));
                }
                Ok(self.table.get(host).map_or(vec![], |ips| {
                    ips.iter()
                        .map(|ip| SocketAddr::new(ip.parse().unwrap(), port))
                        .collect()
                }))
            })
        }
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback() {
        let mut st = DnsState::new(spec(DnsMode::Strict, &["localhost"]));
        let m = DnsMetrics::default();
        let (e, failures) = st.refresh("c", &SystemResolver, &m).await;
        assert_eq!(failures, 0);
        assert_eq!(
            e.addrs,
            vec!["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(e.weights, vec![2]);
        assert_eq!(m.count_of("c", "success"), 1);
    }

    #[tokio::test]
    async fn strict_keeps_all_logical_the_first_and_failures_keep_the_last_good_set() {
        let r = Flaky {
            fail: AtomicBool::new(false),
            table: [("db", vec!["10.0.0.1", "10.0.0.2", "::1"])]
                .into_iter()
                .collect(),
        };
        let m = DnsMetrics::default();
        let mut strict = DnsState::new(spec(DnsMode::Strict, &["db"]));
        let (e, _) = strict.refresh("s", &r, &m).await;
        let want: Vec<SocketAddr> = vec![
            "10.0.0.1:8080".parse().unwrap(),
            "10.0.0.2:8080".parse().unwrap(),
        ];
        assert_eq!(e.addrs, want, "V4_ONLY drops ::1");
        let mut logical = DnsState::new(spec(DnsMode::Logical, &["db"]));
        let (e, _) = logical.refresh("l", &r, &m).await;
        assert_eq!(e.addrs, want[..1]);
        // The resolver breaks: the endpoints stay, the failure is counted.
        r.fail.store(true, Ordering::SeqCst);
        let (e, failures) = strict.refresh("s", &r, &m).await;
        assert_eq!((e.addrs, failures), (want.clone(), 1));
        assert_eq!(m.count_of("s", "failure"), 1);
        // No address ever: no endpoints (a 503 at the cluster), counted.
        let mut never = DnsState::new(spec(DnsMode::Strict, &["nowhere"]));
        r.fail.store(false, Ordering::SeqCst);
        let (e, failures) = never.refresh("n", &r, &m).await;
        assert!(e.addrs.is_empty());
        assert_eq!(failures, 1);
    }

    #[tokio::test]
    async fn the_task_publishes_and_keeps_endpoints_when_lookups_fail() {
        let resolver = Arc::new(Flaky {
            fail: AtomicBool::new(false),
            table: [("db", vec!["10.0.0.7"])].into_iter().collect(),
        });
        let config = SharedConfig::default();
        let mut c = Config::default();
        c.discovery
            .insert("dns".into(), Discovery::Dns(spec(DnsMode::Strict, &["db"])));
        config.store(c);
        let metrics = DnsMetrics::default();
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(
            config.clone(),
            resolver.clone(),
            metrics.clone(),
            async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            },
        ));
        let want: SocketAddr = "10.0.0.7:8080".parse().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while config.load().endpoints.get("dns").map(|e| e.addrs.clone()) != Some(vec![want]) {
            assert!(tokio::time::Instant::now() < deadline, "never resolved");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        resolver.fail.store(true, Ordering::SeqCst);
        while metrics.count_of("dns", "failure") < 2 {
            assert!(tokio::time::Instant::now() < deadline, "no failed refresh");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(config.load().endpoints["dns"].addrs, vec![want]);
        // A config update from xDS keeps the resolved endpoints.
        let mut c = Config::default();
        c.discovery
            .insert("dns".into(), Discovery::Dns(spec(DnsMode::Strict, &["db"])));
        config.store(c);
        assert_eq!(config.load().endpoints["dns"].addrs, vec![want]);
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }
}
