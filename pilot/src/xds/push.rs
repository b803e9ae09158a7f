//! Pushes: Galley's snapshots, debounced, become a [`PushContext`] that every stream reads.
//!
//! - Debounce: a push starts once no change came for [`DEBOUNCE_QUIET`], or [`DEBOUNCE_MAX`]
//!   after the first change it holds, whichever is first; a burst becomes one push.
//! - The proxy-independent part (registry, CDS, EDS) is built once per push and shared.
//! - RDS and every listener but the inbound one depend only on the proxy's [`ProxyKey`] (type,
//!   namespace, and the labels some selector can match): they are computed and encoded once per
//!   key and push. A sidecar's inbound listener (its own pod, IP and labels) is built once per
//!   proxy and push. Both are kept across a push that only changed service instances
//!   ([`PushKind::Endpoints`]: Endpoints or Pods).
//! - An endpoints-only push is incremental: only the services whose instances changed are
//!   translated again; their clusters and load assignments replace the old ones in the shared
//!   (already encoded) CDS/EDS, everything else is reused as is. Each such push records which
//!   load assignments changed, so a stream sends just those ([`PushContext::endpoint_changes_since`]).
//!   It is debounced for [`EDS_DEBOUNCE_QUIET`] / [`EDS_DEBOUNCE_MAX`] only.

use std::collections::{BTreeSet, HashMap};
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
    EncodedResource, Options, ProxyInfo, Skipped, TypeResources, VIRTUAL_INBOUND, XdsType,
    access_logs, add_access_logs, inbound_listener, translate_proxy, translate_shared,
    translate_shared_of,
};
use mesh_proto::envoy::envoy::config::cluster::v3::Cluster;
use mesh_proto::envoy::envoy::config::endpoint::v3::ClusterLoadAssignment;

/// A push waits for this long without a change before it starts.
pub const DEBOUNCE_QUIET: Duration = Duration::from_millis(100);
/// A push starts at most this long after the first change it holds.
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(1);
/// The quiet time of a push holding only endpoint changes.
pub const EDS_DEBOUNCE_QUIET: Duration = Duration::from_millis(10);
/// The longest an endpoints-only push waits after its first change.
pub const EDS_DEBOUNCE_MAX: Duration = Duration::from_millis(100);

/// Endpoint pushes kept for streams that are a few pushes behind; older ones get full EDS.
const MAX_HISTORY: usize = 64;

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

/// What the per-proxy part of the translation other than the inbound listener depends on:
/// the proxy's type, namespace and those of its labels some selector of the push can match
/// (see [`LabelSelectors`]). Proxies with equal keys get the same outbound listeners and RDS.
/// The inbound listener also reads the proxy's own pod, IP and every label (its services,
/// policy selectors): it is built per proxy ([`InboundKey`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProxyKey(String);

impl ProxyKey {
    /// The key of `proxy` in a push whose selectors are `selectors`.
    pub fn of(proxy: &ProxyInfo, selectors: &LabelSelectors) -> ProxyKey {
        let labels: Vec<(&String, &String)> = match proxy.proxy_type {
            // Gateways: every label (gateway selectors, credentials).
            crate::translate::ProxyType::Router => proxy.labels.iter().collect(),
            crate::translate::ProxyType::Sidecar => proxy
                .labels
                .iter()
                .filter(|(k, v)| selectors.0.contains(&(k.to_string(), v.to_string())))
                .collect(),
        };
        ProxyKey(format!(
            "{:?}|{}|{:?}",
            proxy.proxy_type, proxy.namespace, labels
        ))
    }
}

/// The `(key, value)` label pairs that a sidecar's outbound translation can compare a proxy's
/// labels with: every VirtualService match's `sourceLabels` (http, tcp, tls) and every
/// Sidecar's `workloadSelector`. Each of these selectors matches when all of its pairs are
/// among the proxy's labels, so it matches the proxy exactly when it matches the proxy's labels
/// narrowed to these pairs: proxies differing only in other labels get the same output.
#[derive(Debug, Default, Clone)]
pub struct LabelSelectors(std::collections::HashSet<(String, String)>);

impl LabelSelectors {
    /// The selectors of `reg`.
    pub fn of(reg: &Registry) -> LabelSelectors {
        let mut pairs = std::collections::HashSet::new();
        let add = |pairs: &mut std::collections::HashSet<(String, String)>,
                   m: &std::collections::BTreeMap<String, String>| {
            pairs.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
        };
        for vs in &reg.virtual_services {
            for m in vs.spec.http.iter().flat_map(|h| &h.matches) {
                add(&mut pairs, &m.source_labels);
            }
            // tcp and tls rules are kept as JSON: `match[].sourceLabels`.
            for rule in vs.spec.tcp.iter().chain(&vs.spec.tls) {
                let matches = rule.get("match").and_then(|m| m.as_array());
                for m in matches.into_iter().flatten() {
                    if let Some(labels) = m.get("sourceLabels").and_then(|l| l.as_object()) {
                        for (k, v) in labels {
                            // A non-string value matches no label: keep it out, harmlessly.
                            if let Some(v) = v.as_str() {
                                pairs.insert((k.clone(), v.to_string()));
                            }
                        }
                    }
                }
            }
        }
        for sc in &reg.sidecars {
            if let Some(sel) = &sc.spec.workload_selector {
                add(&mut pairs, &sel.labels);
            }
        }
        LabelSelectors(pairs)
    }
}

/// What a sidecar's inbound listener depends on: its namespace, pod, IP and labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct InboundKey(String);

impl InboundKey {
    fn of(proxy: &ProxyInfo) -> InboundKey {
        InboundKey(format!(
            "{:?}|{}|{}|{}|{:?}",
            proxy.proxy_type, proxy.namespace, proxy.pod, proxy.ip, proxy.labels
        ))
    }
}

/// LDS and RDS of one [`ProxyKey`].
#[derive(Debug)]
struct ProxyOutput {
    /// Every listener but the inbound one.
    listeners: Arc<TypeResources>,
    /// Whether the proxy gets an inbound listener (built per proxy: [`InboundKey`]).
    inbound: bool,
    routes: Arc<TypeResources>,
    skipped: Vec<Skipped>,
    /// Sidecar scoping of the shared CDS/EDS (`None`: the proxy gets them whole).
    scope: Option<crate::translate::ScopedClusters>,
}

type Memo = HashMap<ProxyKey, Arc<OnceLock<Arc<ProxyOutput>>>>;

/// Each sidecar's whole LDS (its key's listeners and its own inbound listener).
type InboundMemo = HashMap<InboundKey, Arc<TypeResources>>;

/// A scoped proxy's CDS and EDS in one push.
type ScopedShared = (Arc<TypeResources>, Arc<TypeResources>);

/// The endpoints-only pushes since the last other push, with the load assignments each changed.
#[derive(Debug, Default)]
struct EdsHistory {
    /// The epoch of the last push that was not incremental.
    base: u64,
    changes: Vec<(u64, Arc<BTreeSet<String>>)>,
}

/// One proxy's encoded config: shared parts behind `Arc`s.
#[derive(Debug, Clone, Default)]
pub(super) struct ProxyResources {
    clusters: Arc<TypeResources>,
    endpoints: Arc<TypeResources>,
    listeners: Arc<TypeResources>,
    routes: Arc<TypeResources>,
    /// SDS: set per stream by `stream::Session` from the credential source (gateways only).
    secrets: Arc<TypeResources>,
}

impl ProxyResources {
    /// The same config with `secrets` as its SDS resources.
    pub(super) fn set_secrets(&mut self, secrets: Arc<TypeResources>) {
        self.secrets = secrets;
    }

    /// The resources of `t`.
    pub(super) fn get(&self, t: XdsType) -> &TypeResources {
        self.shared(t)
    }

    /// The bytes of every resource (what a full push of it sends, about).
    pub(super) fn encoded_len(&self) -> usize {
        [
            &self.clusters,
            &self.endpoints,
            &self.listeners,
            &self.routes,
        ]
        .iter()
        .flat_map(|t| &t.resources)
        .map(|r| r.resource.value.len())
        .sum()
    }

    /// The shared set of resources of `t` (for responses written from it).
    pub(super) fn shared(&self, t: XdsType) -> &Arc<TypeResources> {
        match t {
            XdsType::Cluster => &self.clusters,
            XdsType::Endpoint => &self.endpoints,
            XdsType::Listener => &self.listeners,
            XdsType::Route => &self.routes,
            XdsType::Secret => &self.secrets,
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
    /// The label pairs [`ProxyKey`]s keep.
    selectors: LabelSelectors,
    per_proxy: Mutex<Memo>,
    /// Per-proxy LDS (with the inbound listener), by [`InboundKey`].
    inbound: Mutex<InboundMemo>,
    /// Scoped CDS/EDS per key, narrowed once per push.
    scoped: Mutex<HashMap<ProxyKey, ScopedShared>>,
    history: Arc<EdsHistory>,
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
        // An endpoints-only push reads again only the Endpoints objects that changed.
        let registry = match (kind, previous) {
            (PushKind::Endpoints, Some(p)) => p.registry.with_endpoints_of(&p.snapshot, &snapshot),
            _ => None,
        };
        let registry =
            Arc::new(registry.unwrap_or_else(|| Registry::from_snapshot(&snapshot, domain_suffix)));
        let incremental = match (kind, previous) {
            (PushKind::Endpoints, Some(p)) => incremental_shared(p, &registry, options),
            _ => None,
        };
        let (clusters, endpoints, history) = match (incremental, previous) {
            (Some((clusters, endpoints, changed)), Some(p)) => {
                let mut changes = p.history.changes.clone();
                changes.push((epoch, Arc::new(changed)));
                let history = if changes.len() > MAX_HISTORY {
                    EdsHistory {
                        base: epoch,
                        changes: Vec::new(),
                    }
                } else {
                    EdsHistory {
                        base: p.history.base,
                        changes,
                    }
                };
                (clusters, endpoints, history)
            }
            _ => {
                let (clusters, endpoints) = translate_shared(&registry, options);
                (
                    Arc::new(encode_clusters(clusters)),
                    Arc::new(encode_endpoints(endpoints)),
                    EdsHistory {
                        base: epoch,
                        changes: Vec::new(),
                    },
                )
            }
        };
        // Endpoints-only pushes change no VirtualService or Sidecar: the keys stay valid.
        let (per_proxy, inbound) = match (kind, previous) {
            (PushKind::Endpoints, Some(p)) => {
                (p.per_proxy.lock().clone(), p.inbound.lock().clone())
            }
            _ => (Memo::new(), InboundMemo::new()),
        };
        let selectors = match (kind, previous) {
            (PushKind::Endpoints, Some(p)) => p.selectors.clone(),
            _ => LabelSelectors::of(&registry),
        };
        PushContext {
            epoch,
            kind,
            changed_at,
            snapshot,
            registry,
            options: options.clone(),
            clusters,
            endpoints,
            selectors,
            per_proxy: Mutex::new(per_proxy),
            inbound: Mutex::new(inbound),
            scoped: Mutex::new(HashMap::new()),
            history: Arc::new(history),
        }
    }

    /// The load assignments changed by the pushes after `epoch` up to this one, when all of
    /// them were endpoints-only pushes (`None`: anything may have changed).
    pub fn endpoint_changes_since(&self, epoch: u64) -> Option<Arc<BTreeSet<String>>> {
        if epoch < self.history.base || epoch > self.epoch {
            return None;
        }
        let mut newer = self.history.changes.iter().filter(|(e, _)| *e > epoch);
        match (newer.next(), newer.next()) {
            (None, _) => Some(Arc::default()),
            (Some((_, one)), None) => Some(one.clone()),
            (Some((_, a)), Some((_, b))) => {
                let mut all: BTreeSet<String> = a.iter().chain(b.iter()).cloned().collect();
                for (_, more) in newer {
                    all.extend(more.iter().cloned());
                }
                Some(Arc::new(all))
            }
        }
    }

    /// `proxy`'s resources, and the VirtualServices left out of them (computed once per key).
    pub(super) fn resources(&self, proxy: &ProxyInfo) -> (ProxyResources, Vec<Skipped>) {
        let key = ProxyKey::of(proxy, &self.selectors);
        let cell = self
            .per_proxy
            .lock()
            .entry(key.clone())
            .or_default()
            .clone();
        let out = cell.get_or_init(|| {
            let (listeners, routes, skipped) = translate_proxy(&self.registry, proxy, &self.options);
            for s in &skipped {
                tracing::warn!(epoch = self.epoch, namespace = %proxy.namespace, virtual_service = %s.virtual_service, reason = %s.reason, "VirtualService skipped");
            }
            let inbound = listeners.iter().any(|l| l.name == VIRTUAL_INBOUND);
            Arc::new(ProxyOutput {
                listeners: Arc::new(TypeResources::encode(
                    type_url::LISTENER,
                    listeners
                        .into_iter()
                        .filter(|l| l.name != VIRTUAL_INBOUND)
                        .map(|l| (l.name.clone(), l)),
                )),
                inbound,
                routes: Arc::new(TypeResources::encode(
                    type_url::ROUTE,
                    routes.into_iter().map(|r| (r.name.clone(), r)),
                )),
                skipped,
                scope: crate::translate::ScopedClusters::for_proxy(
                    &self.registry,
                    proxy,
                    &self.options,
                ),
            })
        });
        let (clusters, endpoints) = match &out.scope {
            Some(scope) => {
                let hit = self.scoped.lock().get(&key).cloned();
                match hit {
                    Some(shared) => shared,
                    None => {
                        let (c, e) = scope.apply(&self.clusters, &self.endpoints);
                        let shared = (Arc::new(c), Arc::new(e));
                        self.scoped.lock().entry(key).or_insert(shared).clone()
                    }
                }
            }
            None => (self.clusters.clone(), self.endpoints.clone()),
        };
        let listeners = if out.inbound {
            self.with_inbound(&out.listeners, proxy)
        } else {
            out.listeners.clone()
        };
        (
            ProxyResources {
                clusters,
                endpoints,
                listeners,
                routes: out.routes.clone(),
                secrets: Arc::default(),
            },
            out.skipped.clone(),
        )
    }

    /// `shared` (a key's listeners) with `proxy`'s own inbound listener, computed once per
    /// [`InboundKey`] and push (kept, like the rest of LDS, by endpoints-only pushes).
    fn with_inbound(&self, shared: &TypeResources, proxy: &ProxyInfo) -> Arc<TypeResources> {
        let key = InboundKey::of(proxy);
        if let Some(hit) = self.inbound.lock().get(&key) {
            return hit.clone();
        }
        let mut inbound = vec![inbound_listener(&self.registry, proxy)];
        add_access_logs(&mut inbound, &access_logs(&self.registry.mesh_config));
        let inbound = TypeResources::encode(
            type_url::LISTENER,
            inbound.into_iter().map(|l| (l.name.clone(), l)),
        );
        let mut all: Vec<EncodedResource> = shared.resources.clone();
        all.extend(inbound.resources);
        all.sort_by(|a, b| a.name.cmp(&b.name));
        let lds = Arc::new(TypeResources::from_encoded(all));
        self.inbound.lock().entry(key).or_insert(lds).clone()
    }

    /// Number of distinct per-proxy outputs computed (for tests and logs).
    pub fn proxy_keys(&self) -> usize {
        self.per_proxy.lock().len()
    }
}

fn encode_clusters(clusters: Vec<Cluster>) -> TypeResources {
    TypeResources::encode(
        type_url::CLUSTER,
        clusters.into_iter().map(|c| (c.name.clone(), c)),
    )
}

fn encode_endpoints(endpoints: Vec<ClusterLoadAssignment>) -> TypeResources {
    TypeResources::encode(
        type_url::ENDPOINT,
        endpoints.into_iter().map(|c| (c.cluster_name.clone(), c)),
    )
}

/// The shared CDS/EDS of `reg` out of `previous`'s, translating again only the services whose
/// instances changed; with the names of the load assignments that changed. `None` when most
/// services changed (a full translation is as cheap) or a cluster changed too.
fn incremental_shared(
    previous: &PushContext,
    reg: &Registry,
    options: &Options,
) -> Option<(Arc<TypeResources>, Arc<TypeResources>, BTreeSet<String>)> {
    let old = &previous.registry;
    let mut changed: BTreeSet<&str> = reg
        .services
        .iter()
        .filter(|(k, s)| {
            old.services
                .get(*k)
                .is_none_or(|o| o.instances != s.instances)
        })
        .map(|(k, _)| k.as_str())
        .collect();
    changed.extend(
        old.services
            .keys()
            .filter(|k| !reg.services.contains_key(*k))
            .map(String::as_str),
    );
    if changed.len() * 2 > reg.services.len().max(1) {
        return None;
    }
    let (clusters, endpoints) =
        translate_shared_of(reg, options, |s| changed.contains(s.fqdn.as_str()));
    // Cluster (and load assignment) names end with the service's FQDN.
    let of_changed = |name: &str| {
        name.rsplit('|')
            .next()
            .is_some_and(|fqdn| name.contains('|') && changed.contains(fqdn))
    };
    // The changed services' clusters as they were and as they are now, both sorted by name:
    // compared by name and version (without building the patched CDS).
    let fresh = encode_clusters(clusters).resources;
    let mut before = previous
        .clusters
        .resources
        .iter()
        .filter(|r| of_changed(&r.name));
    let cds_same = before
        .by_ref()
        .zip(&fresh)
        .all(|(o, f)| o.name == f.name && o.version == f.version)
        && before.next().is_none()
        && previous
            .clusters
            .resources
            .iter()
            .filter(|r| of_changed(&r.name))
            .count()
            == fresh.len();
    if !cds_same {
        // A service's SANs changed with its instances: CDS goes out whole to every proxy, so
        // the push is not incremental for the streams (it waits for the push permits).
        tracing::debug!("endpoints push changed clusters; translating CDS/EDS whole");
        return None;
    }
    let cds = previous.clusters.clone();
    let (eds, eds_changed) = previous
        .endpoints
        .patch(of_changed, encode_endpoints(endpoints).resources);
    let eds = if eds_changed.is_empty() {
        previous.endpoints.clone()
    } else {
        Arc::new(eds)
    };
    tracing::debug!(
        services = changed.len(),
        load_assignments = eds_changed.len(),
        "incremental endpoints push"
    );
    Some((cds, eds, eds_changed))
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
    /// Handed each push's registry (the debug endpoints read it from there).
    pub(super) cache: Option<crate::model::RegistryCache>,
}

impl Pusher {
    pub(super) async fn run(mut self) {
        loop {
            tokio::select! {
                r = self.snapshots.changed() => if r.is_err() { return },
                _ = self.shutdown.changed() => return,
            }
            let first = Instant::now();
            // Endpoints-only changes wait less; a config change among them makes it a full push.
            let (mut kind, mut classified) = self.pending_kind();
            let mut full = kind == PushKind::Full;
            let limits = |full: bool| {
                if full {
                    (DEBOUNCE_QUIET, first + DEBOUNCE_MAX)
                } else {
                    (EDS_DEBOUNCE_QUIET, first + EDS_DEBOUNCE_MAX)
                }
            };
            let (mut quiet_for, mut latest) = limits(full);
            let mut merged = 1u32;
            let mut open = true;
            while open {
                let quiet = (Instant::now() + quiet_for).min(latest);
                tokio::select! {
                    r = self.snapshots.changed() => {
                        open = r.is_ok();
                        merged += u32::from(open);
                        if !full {
                            (kind, classified) = self.pending_kind();
                            if kind == PushKind::Full {
                                full = true;
                                (quiet_for, latest) = limits(true);
                            }
                        }
                        if Instant::now() >= latest {
                            break;
                        }
                    }
                    _ = tokio::time::sleep_until(quiet) => break,
                    _ = self.shutdown.changed() => return,
                }
            }
            let snapshot = self.snapshots.borrow_and_update().clone();
            // Classified already when nothing came since (and a full push stays full).
            let kind = (full || Arc::ptr_eq(&snapshot, &classified)).then_some(kind);
            self.push(snapshot, first, merged, kind);
            if !open {
                return;
            }
        }
    }

    /// The kind of push the latest snapshot would make, and that snapshot.
    fn pending_kind(&self) -> (PushKind, Arc<Snapshot>) {
        let published = self.pushes.borrow().snapshot.clone();
        let latest = self.snapshots.borrow().clone();
        (classify(&published, &latest), latest)
    }

    /// Publishes the push of `snapshot`; `kind` when already known.
    fn push(
        &self,
        snapshot: Arc<Snapshot>,
        changed_at: Instant,
        merged: u32,
        kind: Option<PushKind>,
    ) {
        let previous = self.pushes.borrow().clone();
        if Arc::ptr_eq(&previous.snapshot, &snapshot) {
            return;
        }
        let kind = kind.unwrap_or_else(|| classify(&previous.snapshot, &snapshot));
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
        let problems = next.registry.problems.len();
        self.metrics
            .registry_problems
            .set(i64::try_from(problems).unwrap_or(i64::MAX));
        tracing::info!(
            epoch = next.epoch,
            kind = kind.as_str(),
            changes = merged,
            build_seconds = secs,
            "push"
        );
        if let Some(cache) = &self.cache {
            cache.offer(&next.snapshot, &next.registry);
        }
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
        pusher_with(PilotMetrics::default())
    }

    /// [`pusher`] counting into `metrics`.
    fn pusher_with(
        metrics: PilotMetrics,
    ) -> (
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
            metrics,
            convergence: Arc::new(Convergence::new(Histogram::new(exponential_buckets(
                0.001, 2.0, 4,
            )))),
            shutdown: stop_rx,
            cache: None,
        };
        tokio::spawn(p.run());
        (snap_tx, push_rx, stop_tx)
    }

    #[tokio::test(start_paused = true)]
    async fn invalid_objects_left_out_are_counted_in_a_gauge() {
        let metrics = PilotMetrics::default();
        let (snaps, mut pushes, _stop) = pusher_with(metrics.clone());
        pushes.borrow_and_update();
        let sidecar = |port: u16| -> ConfigObject {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
                "metadata": {"name": "default", "namespace": "default"},
                "spec": {"ingress": [{"port": {"number": port, "protocol": "HTTP", "name": "http"},
                                      "defaultEndpoint": "127.0.0.1:8080"}]}
            }))
            .unwrap()
        };
        snaps.send_replace(Arc::new(Snapshot::from_objects([
            service("a", 80),
            sidecar(0),
        ])));
        pushes.changed().await.unwrap();
        let push = pushes.borrow_and_update().clone();
        assert_eq!(
            push.registry.problems.len(),
            1,
            "{:?}",
            push.registry.problems
        );
        assert_eq!(metrics.registry_problems.get(), 1);
        snaps.send_replace(Arc::new(Snapshot::from_objects([
            service("a", 80),
            sidecar(9080),
        ])));
        pushes.changed().await.unwrap();
        assert!(pushes.borrow_and_update().registry.problems.is_empty());
        assert_eq!(metrics.registry_problems.get(), 0);
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

    #[tokio::test(start_paused = true)]
    async fn endpoints_only_change_is_pushed_after_the_short_debounce() {
        let (snaps, mut pushes, _stop) = pusher();
        pushes.borrow_and_update();
        let start = Instant::now();
        snaps.send_replace(Arc::new(Snapshot::from_objects([
            service("a", 80),
            endpoints("a", "10.0.0.9"),
        ])));
        pushes.changed().await.unwrap();
        let push = pushes.borrow_and_update().clone();
        assert_eq!(push.kind, PushKind::Endpoints);
        let waited = Instant::now() - start;
        assert!(
            waited >= EDS_DEBOUNCE_QUIET && waited < DEBOUNCE_QUIET,
            "{waited:?}"
        );
        // An endpoints change followed by a config change is one full push, debounced fully.
        let start = Instant::now();
        snaps.send_replace(Arc::new(Snapshot::from_objects([
            service("a", 80),
            endpoints("a", "10.0.0.8"),
        ])));
        tokio::time::sleep(Duration::from_millis(5)).await;
        snaps.send_replace(Arc::new(Snapshot::from_objects([
            service("a", 81),
            endpoints("a", "10.0.0.8"),
        ])));
        pushes.changed().await.unwrap();
        let push = pushes.borrow_and_update().clone();
        assert_eq!(push.kind, PushKind::Full);
        assert!(Instant::now() - start >= DEBOUNCE_QUIET);
    }

    #[test]
    fn endpoints_push_translates_only_changed_services() {
        let base = Snapshot::from_objects([
            service("a", 80),
            endpoints("a", "10.0.0.1"),
            service("b", 80),
            endpoints("b", "10.0.1.1"),
        ]);
        let moved = Snapshot::from_objects([
            service("a", 80),
            endpoints("a", "10.0.0.2"),
            service("b", 80),
            endpoints("b", "10.0.1.1"),
        ]);
        let now = Instant::now();
        let build = |epoch, kind, snap: &Snapshot, prev: Option<&PushContext>| {
            PushContext::build(
                epoch,
                kind,
                now,
                Arc::new(snap.clone()),
                "cluster.local",
                &options(),
                prev,
            )
        };
        let p1 = build(1, PushKind::Full, &base, None);
        let p2 = build(2, PushKind::Endpoints, &moved, Some(&p1));
        assert!(Arc::ptr_eq(&p1.clusters, &p2.clusters), "CDS kept");
        let a = "outbound|80||a.default.svc.cluster.local";
        let b = "outbound|80||b.default.svc.cluster.local";
        let changed = p2.endpoint_changes_since(1).unwrap();
        assert_eq!(changed.iter().collect::<Vec<_>>(), vec![a]);
        assert!(p2.endpoint_changes_since(2).unwrap().is_empty());
        assert_eq!(p1.endpoints.get(b), p2.endpoints.get(b));
        assert_ne!(p1.endpoints.get(a), p2.endpoints.get(a));
        // The same as translating everything again.
        let whole = build(2, PushKind::Full, &moved, None);
        assert_eq!(*whole.endpoints, *p2.endpoints);
        assert_eq!(*whole.clusters, *p2.clusters);
        // Two endpoint pushes: a stream two behind gets the union; a full push resets.
        let back = build(3, PushKind::Endpoints, &base, Some(&p2));
        assert_eq!(back.endpoint_changes_since(1).unwrap().len(), 1);
        assert_eq!(back.endpoint_changes_since(2).unwrap().len(), 1);
        let full = build(4, PushKind::Full, &moved, Some(&back));
        assert!(full.endpoint_changes_since(3).is_none());
        assert!(full.endpoint_changes_since(4).unwrap().is_empty());
    }

    #[test]
    fn endpoints_push_changing_clusters_is_not_incremental() {
        let with_sa = |sa: &str| {
            let objs: Vec<ConfigObject> = [
                serde_json::json!({"apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": "a", "namespace": "default"},
                    "subsets": [{"addresses": [{"ip": "10.0.0.1", "targetRef": {"kind": "Pod", "name": "a-1"}}],
                        "ports": [{"name": "http", "port": 9080}]}]}),
                serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "a-1", "namespace": "default"},
                    "spec": {"serviceAccountName": sa}}),
            ]
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .chain([service("a", 80)])
            .collect();
            Arc::new(Snapshot::from_objects(objs))
        };
        let (one, two) = (with_sa("one"), with_sa("two"));
        assert_eq!(classify(&one, &two), PushKind::Endpoints);
        let now = Instant::now();
        let o = options();
        let p1 = PushContext::build(1, PushKind::Full, now, one, "cluster.local", &o, None);
        let p2 = PushContext::build(
            2,
            PushKind::Endpoints,
            now,
            two.clone(),
            "cluster.local",
            &o,
            Some(&p1),
        );
        assert!(
            p2.endpoint_changes_since(1).is_none(),
            "SANs changed: not incremental"
        );
        assert_ne!(p1.clusters.version, p2.clusters.version);
        let whole = PushContext::build(2, PushKind::Full, now, two, "cluster.local", &o, None);
        assert_eq!(*whole.clusters, *p2.clusters);
    }

    #[test]
    fn proxies_differing_in_unselected_labels_share_routes_but_not_inbound() {
        let vs = |labels: serde_json::Value| -> ConfigObject {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
                "metadata": {"name": "a", "namespace": "default"},
                "spec": {"hosts": ["a"], "http": [
                    {"match": [{"sourceLabels": labels}], "route": [{"destination": {"host": "b"}}]},
                    {"route": [{"destination": {"host": "a"}}]}
                ]}
            }))
            .unwrap()
        };
        let snap = Snapshot::from_objects([
            service("a", 80),
            service("b", 80),
            vs(serde_json::json!({"app": "x"})),
        ]);
        let push = PushContext::build(
            1,
            PushKind::Full,
            Instant::now(),
            Arc::new(snap),
            "cluster.local",
            &options(),
            None,
        );
        let mut x1 = proxy("default", "x");
        x1.pod = "x-1".into();
        let mut x2 = proxy("default", "x");
        x2.pod = "x-2".into();
        x2.ip = "10.0.0.2".into();
        x2.labels.insert("pod-template-hash".into(), "abc".into());
        let (a, _) = push.resources(&x1);
        let (b, _) = push.resources(&x2);
        assert!(Arc::ptr_eq(&a.routes, &b.routes), "one RDS for both");
        assert_eq!(push.proxy_keys(), 1);
        // Each its own inbound listener (its pod is the Mixer destination.uid).
        let inbound = |r: &ProxyResources| {
            r.listeners
                .get(VIRTUAL_INBOUND)
                .map(|l| l.resource.value.clone())
                .unwrap()
        };
        let (ia, ib) = (inbound(&a), inbound(&b));
        assert_ne!(ia, ib);
        assert!(ia.windows(b"x-1".len()).any(|w| w == b"x-1"));
        assert!(ib.windows(b"x-2".len()).any(|w| w == b"x-2"));
        // The same as translating each proxy alone.
        for (p, r) in [(&x1, &a), (&x2, &b)] {
            let (lds, rds, _) = translate_proxy(&push.registry, p, &options());
            let lds = TypeResources::encode(
                type_url::LISTENER,
                lds.into_iter().map(|l| (l.name.clone(), l)),
            );
            let rds = TypeResources::encode(
                type_url::ROUTE,
                rds.into_iter().map(|r| (r.name.clone(), r)),
            );
            assert_eq!(*r.listeners, lds);
            assert_eq!(*r.routes, rds);
        }
        // A label a sourceLabels match reads tells proxies apart.
        let (c, _) = push.resources(&proxy("default", "y"));
        assert!(!Arc::ptr_eq(&a.routes, &c.routes));
        assert_ne!(a.routes.version, c.routes.version);
        assert_eq!(push.proxy_keys(), 2);
    }

    #[test]
    fn label_selectors_cover_source_labels_and_sidecar_selectors() {
        let objs: Vec<ConfigObject> = [
            serde_json::json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
                "metadata": {"name": "t", "namespace": "default"},
                "spec": {"hosts": ["a"],
                    "http": [{"match": [{"sourceLabels": {"h": "1"}}], "route": [{"destination": {"host": "a"}}]}],
                    "tcp": [{"match": [{"sourceLabels": {"t": "2"}}], "route": [{"destination": {"host": "a"}}]}],
                    "tls": [{"match": [{"sniHosts": ["a"], "sourceLabels": {"s": "3"}}], "route": [{"destination": {"host": "a"}}]}]}}),
            serde_json::json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "Sidecar",
                "metadata": {"name": "sc", "namespace": "default"},
                "spec": {"workloadSelector": {"labels": {"w": "4"}}, "egress": [{"hosts": ["./*"]}]}}),
        ]
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .chain([service("a", 80)])
        .collect();
        let reg = Registry::from_snapshot(&Snapshot::from_objects(objs), "cluster.local");
        let sel = LabelSelectors::of(&reg);
        for (k, v) in [("h", "1"), ("t", "2"), ("s", "3"), ("w", "4")] {
            assert!(sel.0.contains(&(k.to_string(), v.to_string())), "{k}={v}");
        }
        assert_eq!(sel.0.len(), 4);
        let mut p = proxy("default", "x");
        let plain = ProxyKey::of(&p, &sel);
        p.labels.insert("w".into(), "4".into());
        assert_ne!(ProxyKey::of(&p, &sel), plain);
        p.labels.insert("w".into(), "5".into());
        assert_eq!(ProxyKey::of(&p, &sel), plain);
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
