//! Pushes: Galley's snapshots, debounced, become a [`PushContext`] that every stream reads.
//!
//! - Debounce: a push starts once no change came for [`DEBOUNCE_QUIET`], or [`DEBOUNCE_MAX`]
//!   after the first change it holds, whichever is first; a burst becomes one push.
//! - The proxy-independent part (registry, CDS, EDS) is built once per push and shared.
//! - LDS/RDS depend only on the proxy's [`ProxyKey`] (type, namespace, labels, service
//!   account): they are computed once per key and push, and kept across a push that only
//!   changed service instances ([`PushKind::Endpoints`]: Endpoints or Pods).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mesh_proto::config::Kind;
use mesh_proto::type_url;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use super::convergence::Convergence;
use crate::galley_client::Snapshot;
use crate::metrics::PilotMetrics;
use crate::model::Registry;
use crate::translate::{
    Options, ProxyInfo, Skipped, TypeResources, XdsType, translate_proxy, translate_shared,
};

/// A push waits for this long without a change before it starts.
pub const DEBOUNCE_QUIET: Duration = Duration::from_millis(100);
/// A push starts at most this long after the first change it holds.
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(1);

/// Collections whose changes only move service instances: their pushes keep LDS/RDS.
const INSTANCE_KINDS: [Kind; 2] = [Kind::Endpoints, Kind::Pod];

/// What a push recomputed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKind {
    /// Everything (also the first push).
    Full,
    /// Only service instances changed: CDS and EDS are rebuilt, LDS/RDS kept.
    Endpoints,
}

impl PushKind {
    /// `full` or `endpoints`, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            PushKind::Full => "full",
            PushKind::Endpoints => "endpoints",
        }
    }
}

/// What the per-proxy part of the translation depends on. Proxies with equal keys get the same
/// LDS and RDS (the translation reads only these fields of [`ProxyInfo`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProxyKey(String);

impl ProxyKey {
    /// The key of `proxy`.
    pub fn of(proxy: &ProxyInfo) -> ProxyKey {
        ProxyKey(format!(
            "{:?}|{}|{:?}|{:?}",
            proxy.proxy_type, proxy.namespace, proxy.labels, proxy.service_account
        ))
    }
}

/// LDS and RDS of one [`ProxyKey`].
#[derive(Debug)]
struct ProxyOutput {
    listeners: Arc<TypeResources>,
    routes: Arc<TypeResources>,
    skipped: Vec<Skipped>,
}

type Memo = HashMap<ProxyKey, Arc<OnceLock<Arc<ProxyOutput>>>>;

/// One proxy's encoded config: shared parts behind `Arc`s.
#[derive(Debug, Clone, Default)]
pub(super) struct ProxyResources {
    clusters: Arc<TypeResources>,
    endpoints: Arc<TypeResources>,
    listeners: Arc<TypeResources>,
    routes: Arc<TypeResources>,
}

impl ProxyResources {
    /// The resources of `t`.
    pub(super) fn get(&self, t: XdsType) -> &TypeResources {
        match t {
            XdsType::Cluster => &self.clusters,
            XdsType::Endpoint => &self.endpoints,
            XdsType::Listener => &self.listeners,
            XdsType::Route => &self.routes,
        }
    }
}

/// Everything a push needs, built once per (debounced) change.
pub struct PushContext {
    /// Increases by one per push.
    pub epoch: u64,
    pub kind: PushKind,
    /// When the first change this push holds reached Pilot.
    pub changed_at: Instant,
    pub snapshot: Arc<Snapshot>,
    pub registry: Arc<Registry>,
    options: Options,
    clusters: Arc<TypeResources>,
    endpoints: Arc<TypeResources>,
    per_proxy: Mutex<Memo>,
}

impl std::fmt::Debug for PushContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushContext")
            .field("epoch", &self.epoch)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl PushContext {
    /// Builds the push of `snapshot`; with `previous` and [`PushKind::Endpoints`], the per-proxy
    /// LDS/RDS already computed are kept.
    pub fn build(
        epoch: u64,
        kind: PushKind,
        changed_at: Instant,
        snapshot: Arc<Snapshot>,
        domain_suffix: &str,
        options: &Options,
        previous: Option<&PushContext>,
    ) -> PushContext {
        let registry = Arc::new(Registry::from_snapshot(&snapshot, domain_suffix));
        let (clusters, endpoints) = translate_shared(&registry, options);
        let clusters = TypeResources::encode(
            type_url::CLUSTER,
            clusters.into_iter().map(|c| (c.name.clone(), c)),
        );
        let endpoints = TypeResources::encode(
            type_url::ENDPOINT,
            endpoints.into_iter().map(|c| (c.cluster_name.clone(), c)),
        );
        let per_proxy = match (kind, previous) {
            (PushKind::Endpoints, Some(p)) => p.per_proxy.lock().clone(),
            _ => Memo::new(),
        };
        PushContext {
            epoch,
            kind,
            changed_at,
            snapshot,
            registry,
            options: options.clone(),
            clusters: Arc::new(clusters),
            endpoints: Arc::new(endpoints),
            per_proxy: Mutex::new(per_proxy),
        }
    }

    /// `proxy`'s resources, and the VirtualServices left out of them (computed once per key).
    pub(super) fn resources(&self, proxy: &ProxyInfo) -> (ProxyResources, Vec<Skipped>) {
        let cell = self
            .per_proxy
            .lock()
            .entry(ProxyKey::of(proxy))
            .or_default()
            .clone();
        let out = cell.get_or_init(|| {
            let (listeners, routes, skipped) = translate_proxy(&self.registry, proxy, &self.options);
            for s in &skipped {
                tracing::warn!(epoch = self.epoch, namespace = %proxy.namespace, virtual_service = %s.virtual_service, reason = %s.reason, "VirtualService skipped");
            }
            Arc::new(ProxyOutput {
                listeners: Arc::new(TypeResources::encode(
                    type_url::LISTENER,
                    listeners.into_iter().map(|l| (l.name.clone(), l)),
                )),
                routes: Arc::new(TypeResources::encode(
                    type_url::ROUTE,
                    routes.into_iter().map(|r| (r.name.clone(), r)),
                )),
                skipped,
            })
        });
        (
            ProxyResources {
                clusters: self.clusters.clone(),
                endpoints: self.endpoints.clone(),
                listeners: out.listeners.clone(),
                routes: out.routes.clone(),
            },
            out.skipped.clone(),
        )
    }

    /// Number of distinct per-proxy outputs computed (for tests and logs).
    pub fn proxy_keys(&self) -> usize {
        self.per_proxy.lock().len()
    }
}

/// What changed from `old` to `new`.
pub fn classify(old: &Snapshot, new: &Snapshot) -> PushKind {
    let mut kinds = old.collections.keys().chain(new.collections.keys());
    let only_instances = kinds
        .all(|k| INSTANCE_KINDS.contains(k) || old.collections.get(k) == new.collections.get(k));
    if only_instances {
        PushKind::Endpoints
    } else {
        PushKind::Full
    }
}

/// The debouncing task: turns `snapshots` into pushes on `pushes` until the snapshot sender
/// goes away or `shutdown` flips.
pub(super) struct Pusher {
    pub(super) snapshots: watch::Receiver<Arc<Snapshot>>,
    pub(super) pushes: watch::Sender<Arc<PushContext>>,
    pub(super) domain_suffix: Arc<str>,
    pub(super) options: Options,
    pub(super) metrics: PilotMetrics,
    pub(super) convergence: Arc<Convergence>,
    pub(super) shutdown: watch::Receiver<bool>,
}

impl Pusher {
    pub(super) async fn run(mut self) {
        loop {
            tokio::select! {
                r = self.snapshots.changed() => if r.is_err() { return },
                _ = self.shutdown.changed() => return,
            }
            let first = Instant::now();
            let latest = first + DEBOUNCE_MAX;
            let mut merged = 1u32;
            let mut open = true;
            while open {
                let quiet = (Instant::now() + DEBOUNCE_QUIET).min(latest);
                tokio::select! {
                    r = self.snapshots.changed() => {
                        open = r.is_ok();
                        merged += u32::from(open);
                        if Instant::now() >= latest {
                            break;
                        }
                    }
                    _ = tokio::time::sleep_until(quiet) => break,
                    _ = self.shutdown.changed() => return,
                }
            }
            let snapshot = self.snapshots.borrow_and_update().clone();
            self.push(snapshot, first, merged);
            if !open {
                return;
            }
        }
    }

    fn push(&self, snapshot: Arc<Snapshot>, changed_at: Instant, merged: u32) {
        let previous = self.pushes.borrow().clone();
        if Arc::ptr_eq(&previous.snapshot, &snapshot) {
            return;
        }
        let kind = classify(&previous.snapshot, &snapshot);
        let started = std::time::Instant::now();
        let next = PushContext::build(
            previous.epoch + 1,
            kind,
            changed_at,
            snapshot,
            &self.domain_suffix,
            &self.options,
            Some(&previous),
        );
        let secs = started.elapsed().as_secs_f64();
        self.metrics.push_context_time.observe(secs);
        self.metrics.trigger(kind.as_str());
        tracing::info!(
            epoch = next.epoch,
            kind = kind.as_str(),
            changes = merged,
            build_seconds = secs,
            "push"
        );
        self.convergence.begin(next.epoch, changed_at);
        self.pushes.send_replace(Arc::new(next));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::galley_client::Collection;
    use crate::translate::ProxyType;
    use mesh_proto::config::ConfigObject;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::metrics::histogram::exponential_buckets;

    fn service(name: &str, port: u16) -> ConfigObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": port}]}
        }))
        .unwrap()
    }

    fn endpoints(name: &str, ip: &str) -> ConfigObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": name, "namespace": "default"},
            "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "http", "port": 9080}]}]
        }))
        .unwrap()
    }

    fn options() -> Options {
        Options {
            trust_domain: "cluster.local".into(),
        }
    }

    fn proxy(ns: &str, app: &str) -> ProxyInfo {
        ProxyInfo {
            id: format!("sidecar~10.0.0.1~{app}-1.{ns}~{ns}.svc.cluster.local"),
            proxy_type: ProxyType::Sidecar,
            ip: "10.0.0.1".into(),
            pod: format!("{app}-1"),
            namespace: ns.into(),
            labels: [("app".to_string(), app.to_string())].into(),
            service_account: None,
            workload_name: None,
        }
    }

    /// A pusher over a snapshot channel; returns the snapshot sender and the push receiver.
    fn pusher() -> (
        watch::Sender<Arc<Snapshot>>,
        watch::Receiver<Arc<PushContext>>,
        watch::Sender<bool>,
    ) {
        let initial = Arc::new(Snapshot::from_objects([service("a", 80)]));
        let (snap_tx, snap_rx) = watch::channel(initial.clone());
        let first = PushContext::build(
            1,
            PushKind::Full,
            Instant::now(),
            initial,
            "cluster.local",
            &options(),
            None,
        );
        let (push_tx, push_rx) = watch::channel(Arc::new(first));
        let (stop_tx, stop_rx) = watch::channel(false);
        let p = Pusher {
            snapshots: snap_rx,
            pushes: push_tx,
            domain_suffix: "cluster.local".into(),
            options: options(),
            metrics: PilotMetrics::default(),
            convergence: Arc::new(Convergence::new(Histogram::new(exponential_buckets(
                0.001, 2.0, 4,
            )))),
            shutdown: stop_rx,
        };
        tokio::spawn(p.run());
        (snap_tx, push_rx, stop_tx)
    }

    #[tokio::test(start_paused = true)]
    async fn debounce_merges_a_burst_into_one_push() {
        let (snaps, mut pushes, _stop) = pusher();
        pushes.borrow_and_update();
        let start = Instant::now();
        for i in 0..5u16 {
            snaps.send_replace(Arc::new(Snapshot::from_objects([
                service("a", 80),
                service("b", 8000 + i),
            ])));
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let last_change = start + Duration::from_millis(120);
        pushes.changed().await.unwrap();
        let push = pushes.borrow_and_update().clone();
        assert_eq!(push.epoch, 2, "one push for the whole burst");
        assert_eq!(push.kind, PushKind::Full);
        assert!(Instant::now() >= last_change + DEBOUNCE_QUIET);
        let b = &push.registry.services["b.default.svc.cluster.local"];
        assert_eq!(b.ports[0].port, 8004, "the push holds the last snapshot");
        // Nothing else is pushed.
        let again = tokio::time::timeout(Duration::from_secs(10), pushes.changed()).await;
        assert!(again.is_err(), "no second push");
    }

    #[tokio::test(start_paused = true)]
    async fn continuous_changes_are_pushed_at_most_a_second_apart() {
        let (snaps, mut pushes, _stop) = pusher();
        pushes.borrow_and_update();
        let start = Instant::now();
        let writer = tokio::spawn(async move {
            for i in 0..60u16 {
                snaps.send_replace(Arc::new(Snapshot::from_objects([
                    service("a", 80),
                    service("b", 8000 + i),
                ])));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            snaps
        });
        pushes.changed().await.unwrap();
        let first = Instant::now() - start;
        assert!(
            first >= DEBOUNCE_MAX && first < DEBOUNCE_MAX + Duration::from_millis(60),
            "{first:?}"
        );
        assert_eq!(pushes.borrow_and_update().epoch, 2);
        pushes.changed().await.unwrap();
        assert_eq!(pushes.borrow_and_update().epoch, 3);
        assert!(Instant::now() - start < 2 * DEBOUNCE_MAX + Duration::from_millis(120));
        let _snaps = writer.await.unwrap();
    }

    #[test]
    fn endpoints_only_change_keeps_per_proxy_output() {
        let base = Snapshot::from_objects([service("a", 80), endpoints("a", "10.0.0.1")]);
        let moved = Snapshot::from_objects([service("a", 80), endpoints("a", "10.0.0.2")]);
        let renamed = Snapshot::from_objects([service("a", 81), endpoints("a", "10.0.0.2")]);
        assert_eq!(classify(&base, &moved), PushKind::Endpoints);
        assert_eq!(classify(&moved, &renamed), PushKind::Full);
        let mut versioned = base.clone();
        let c: &mut Collection = versioned.collections.get_mut(&Kind::Service).unwrap();
        c.version = "7".into();
        assert_eq!(classify(&base, &versioned), PushKind::Full);

        let now = Instant::now();
        let p1 = PushContext::build(
            1,
            PushKind::Full,
            now,
            Arc::new(base),
            "cluster.local",
            &options(),
            None,
        );
        let (r1, _) = p1.resources(&proxy("default", "x"));
        let (r1b, _) = p1.resources(&proxy("default", "x"));
        assert!(
            Arc::ptr_eq(&r1.routes, &r1b.routes),
            "same key, same output"
        );
        let (r1c, _) = p1.resources(&proxy("other", "x"));
        assert!(!Arc::ptr_eq(&r1.routes, &r1c.routes));
        assert_eq!(p1.proxy_keys(), 2);

        let p2 = PushContext::build(
            2,
            PushKind::Endpoints,
            now,
            Arc::new(moved),
            "cluster.local",
            &options(),
            Some(&p1),
        );
        let (r2, _) = p2.resources(&proxy("default", "x"));
        assert!(Arc::ptr_eq(&r1.routes, &r2.routes), "LDS/RDS kept");
        assert!(Arc::ptr_eq(&r1.listeners, &r2.listeners));
        assert_ne!(r1.endpoints.version, r2.endpoints.version, "EDS rebuilt");
        assert_eq!(r1.clusters.version, r2.clusters.version);

        let p3 = PushContext::build(
            3,
            PushKind::Full,
            now,
            Arc::new(renamed),
            "cluster.local",
            &options(),
            Some(&p2),
        );
        assert_eq!(
            p3.proxy_keys(),
            0,
            "a full push recomputes per-proxy output"
        );
        let (r3, _) = p3.resources(&proxy("default", "x"));
        assert_ne!(r2.routes.version, r3.routes.version);
    }
}
