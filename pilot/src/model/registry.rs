//! The registry: services, their instances and the traffic config, indexed for translation.
//!
//! Built from a [`Snapshot`] by a pure function. Objects that cannot be read as their typed model
//! are left out and listed in [`Registry::problems`].

use std::collections::{BTreeMap, HashMap};

use mesh_proto::config::{
    ConfigObject, DestinationRule, EndpointPort, EndpointSubset, Endpoints, Gateway, Kind, Pod,
    ServiceSpec, VirtualService,
};
use serde::Serialize;

use super::hosts::{resolve_host, service_fqdn};
use super::service::{
    DestinationRuleEntry, GatewayEntry, Instance, Port, Service, VirtualServiceEntry,
};
use super::service_entry::ServiceEntrySpec;
use super::sidecar_scope::{SidecarEntry, SidecarScope, read_sidecars, sidecar_for};
use super::workload_entry::{WorkloadEntryItem, read_workload_entries};
use crate::galley_client::Snapshot;

/// Everything translation needs, indexed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Registry {
    pub domain_suffix: String,
    /// Services by FQDN.
    pub services: BTreeMap<String, Service>,
    /// VirtualServices in `namespace/name` order.
    pub virtual_services: Vec<VirtualServiceEntry>,
    /// Indexes into `virtual_services` by resolved host.
    pub vs_by_host: BTreeMap<String, Vec<usize>>,
    /// The DestinationRule for each resolved host (the first by `namespace/name` wins).
    pub destination_rules: BTreeMap<String, DestinationRuleEntry>,
    /// Gateways in `namespace/name` order.
    pub gateways: Vec<GatewayEntry>,
    /// Objects left out, with the reason.
    pub problems: Vec<String>,
    /// PeerAuthentication, AuthorizationPolicy and RequestAuthentication objects.
    pub security: super::security::SecurityPolicies,
    /// QuotaSpecs and QuotaSpecBindings (the `mixer` filter's quota rules).
    pub quotas: crate::translate::QuotaConfig,
    /// WorkloadEntries in `namespace/name` order.
    pub workload_entries: Vec<WorkloadEntryItem>,
    /// Sidecars in `namespace/name` order.
    pub sidecars: Vec<SidecarEntry>,
    /// The mesh config (`Snapshot::mesh_config`).
    pub mesh_config: mesh_proto::config::MeshConfig,
}

struct PodInfo {
    labels: BTreeMap<String, String>,
    service_account: String,
}

/// Pods by `namespace/name`, and pod keys by IP.
type Pods = (HashMap<String, PodInfo>, HashMap<String, String>);

/// What the registry keeps of a pod, and its IP.
fn pod_info(
    obj: &ConfigObject,
) -> Result<(PodInfo, Option<String>), mesh_proto::config::ModelError> {
    let pod: Pod = obj.body_as()?;
    let info = PodInfo {
        labels: obj.metadata.labels.clone(),
        service_account: pod
            .spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".to_string()),
    };
    Ok((info, pod.status.pod_ip))
}

impl Registry {
    /// Builds the registry from `snapshot`, naming services under `domain_suffix`.
    pub fn from_snapshot(snapshot: &Snapshot, domain_suffix: &str) -> Registry {
        let mut reg = Registry {
            domain_suffix: domain_suffix.to_string(),
            mesh_config: snapshot.mesh_config().clone(),
            ..Registry::default()
        };
        let pods = reg.pods(snapshot);
        reg.workload_entries = read_workload_entries(snapshot, &mut reg.problems);
        reg.add_services(snapshot, &pods);
        reg.add_service_entries(snapshot);
        reg.sidecars = read_sidecars(snapshot, &mut reg.problems);
        reg.add_virtual_services(snapshot);
        reg.add_destination_rules(snapshot);
        reg.add_gateways(snapshot);
        reg.security =
            super::security::SecurityPolicies::from_snapshot(snapshot, &mut reg.problems);
        reg.quotas = crate::translate::QuotaConfig::from_snapshot(
            snapshot,
            domain_suffix,
            &mut reg.problems,
        );
        reg
    }

    /// The registry of `new` built from this one (the registry of `old`) by reading again only
    /// the Endpoints objects that changed: what [`Registry::from_snapshot`] of `new` gives, at the
    /// cost of those few objects instead of the whole mesh. `None` (build it whole) unless `new`
    /// differs from `old` in Endpoints objects only (every other collection must be equal, as in
    /// an endpoints-only push; Pods are compared here), few of them changed, and every address
    /// of a changed one names its pod (`targetRef`; else the pod index by IP is needed).
    pub fn with_endpoints_of(&self, old: &Snapshot, new: &Snapshot) -> Option<Registry> {
        debug_assert!(
            old.collections
                .keys()
                .chain(new.collections.keys())
                .filter(|k| !matches!(k, Kind::Endpoints | Kind::Pod))
                .all(|k| old.collections.get(k) == new.collections.get(k)),
            "only Endpoints and Pods may differ"
        );
        if old.collections.get(&Kind::Pod) != new.collections.get(&Kind::Pod) {
            return None;
        }
        let empty = BTreeMap::new();
        let before = old
            .collections
            .get(&Kind::Endpoints)
            .map_or(&empty, |c| &c.objects);
        let after = new
            .collections
            .get(&Kind::Endpoints)
            .map_or(&empty, |c| &c.objects);
        let mut changed: Vec<&ConfigObject> = after
            .iter()
            .filter(|(k, o)| before.get(*k) != Some(*o))
            .map(|(_, o)| o)
            .collect();
        changed.extend(
            before
                .iter()
                .filter(|(k, _)| !after.contains_key(*k))
                .map(|(_, o)| o),
        );
        if changed.len() * 2 > self.services.len().max(1) {
            return None;
        }
        let mut reg = self.clone();
        for ep in changed {
            let (ns, name) = (&ep.metadata.namespace, &ep.metadata.name);
            let fqdn = service_fqdn(name, ns, &reg.domain_suffix);
            let is_its_service = reg
                .services
                .get(&fqdn)
                .is_some_and(|s| s.is_kubernetes() && s.namespace == *ns && s.name == *name);
            if !is_its_service {
                continue;
            }
            let svc_obj = new.get(Kind::Service, ns, name)?;
            let spec: ServiceSpec = svc_obj.spec().ok()?;
            // The pods its addresses name (the only ones read).
            let mut pods: Pods = Default::default();
            if let Some(now) = new.get(Kind::Endpoints, ns, name)
                && let Ok(eps) = now.body_as::<Endpoints>()
            {
                for addr in eps.subsets.iter().flat_map(|s| &s.addresses) {
                    let r = addr.target_ref.as_ref()?;
                    if r.kind.as_deref().is_some_and(|k| k != "Pod") {
                        continue;
                    }
                    let pod_ns = r.namespace.as_deref().unwrap_or(ns);
                    let key = format!("{pod_ns}/{}", r.name);
                    if pods.0.contains_key(&key) {
                        continue;
                    }
                    if let Some(obj) = new.get(Kind::Pod, pod_ns, &r.name) {
                        // A pod the full build leaves out (a problem) is left to it.
                        let (info, _) = pod_info(obj).ok()?;
                        pods.0.insert(key, info);
                    }
                }
            }
            let prefix = format!("{} {}: ", ep.kind, ep.key());
            reg.problems.retain(|p| !p.starts_with(&prefix));
            let instances = reg.service_instances(new, svc_obj, &spec, &pods);
            if let Some(svc) = reg.services.get_mut(&fqdn) {
                svc.instances = instances;
            }
        }
        Some(reg)
    }

    /// The VirtualServices for `host` (resolved) that apply to sidecars.
    pub fn mesh_virtual_services(&self, host: &str) -> impl Iterator<Item = &VirtualServiceEntry> {
        self.vs_by_host
            .get(host)
            .into_iter()
            .flatten()
            .filter_map(|i| self.virtual_services.get(*i))
            .filter(|vs| vs.applies_to_mesh())
    }

    /// The DestinationRule for `host` (resolved).
    pub fn destination_rule(&self, host: &str) -> Option<&DestinationRuleEntry> {
        self.destination_rules.get(host)
    }

    /// Resolves `host` as written in `namespace`: a ServiceEntry host as written stays as it
    /// is (`example.com` is not `example.com.svc.<suffix>`); else Kubernetes short names.
    pub fn resolve(&self, host: &str, namespace: &str) -> String {
        if self.services.get(host).is_some_and(|s| !s.is_kubernetes()) {
            return host.to_string();
        }
        resolve_host(host, namespace, &self.domain_suffix)
    }

    /// What a sidecar in `namespace` with `labels` sees (its Sidecar resource, exportTo).
    pub fn sidecar_scope(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> SidecarScope<'_> {
        SidecarScope {
            namespace: namespace.to_string(),
            sidecar: sidecar_for(&self.sidecars, namespace, labels),
            domain_suffix: self.domain_suffix.clone(),
        }
    }

    /// Whether `scope` hides anything: a Sidecar applies, or some service, VirtualService or
    /// DestinationRule is not exported to the proxy's namespace.
    pub fn scope_restricts(&self, scope: &SidecarScope<'_>) -> bool {
        scope.sidecar.is_some()
            || self.services.values().any(|s| !scope.sees(s))
            || self
                .virtual_services
                .iter()
                .any(|v| !scope.sees_config(&v.spec.export_to, &v.namespace))
            || self
                .destination_rules
                .values()
                .any(|d| !scope.sees_config(&d.spec.export_to, &d.namespace))
    }

    /// This registry as a sidecar under `scope` sees it: only the services it sees, and the
    /// VirtualServices and DestinationRules exported to its namespace.
    pub fn scoped(&self, scope: &SidecarScope<'_>) -> Registry {
        let virtual_services: Vec<VirtualServiceEntry> = self
            .virtual_services
            .iter()
            .filter(|v| scope.sees_config(&v.spec.export_to, &v.namespace))
            .cloned()
            .collect();
        let mut vs_by_host: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, vs) in virtual_services.iter().enumerate() {
            for h in &vs.hosts {
                vs_by_host.entry(h.clone()).or_default().push(i);
            }
        }
        // Cloned whole so that fields added later follow; then narrowed.
        let mut out = self.clone();
        out.services = self
            .services
            .iter()
            .filter(|(_, s)| scope.sees(s))
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        out.virtual_services = virtual_services;
        out.vs_by_host = vs_by_host;
        out.destination_rules = self
            .destination_rules
            .iter()
            .filter(|(_, d)| scope.sees_config(&d.spec.export_to, &d.namespace))
            .map(|(k, d)| (k.clone(), d.clone()))
            .collect();
        out.problems = Vec::new();
        out.workload_entries = Vec::new();
        out
    }

    fn problem(&mut self, obj: &ConfigObject, reason: impl std::fmt::Display) {
        let msg = format!("{} {}: {reason}", obj.kind, obj.key());
        tracing::warn!(object = %obj.key(), kind = %obj.kind, reason = %reason, "config object left out of the registry");
        self.problems.push(msg);
    }

    fn pods(&mut self, snapshot: &Snapshot) -> Pods {
        let mut by_key = HashMap::new();
        let mut by_ip = HashMap::new();
        for obj in snapshot.objects(Kind::Pod) {
            let (info, ip) = match pod_info(obj) {
                Ok(p) => p,
                Err(e) => {
                    self.problem(obj, e);
                    continue;
                }
            };
            if let Some(ip) = ip {
                by_ip.insert(ip, obj.key());
            }
            by_key.insert(obj.key(), info);
        }
        (by_key, by_ip)
    }

    fn add_services(&mut self, snapshot: &Snapshot, pods: &Pods) {
        for obj in snapshot.objects(Kind::Service) {
            let spec: ServiceSpec = match obj.spec() {
                Ok(s) => s,
                Err(e) => {
                    self.problem(obj, e);
                    continue;
                }
            };
            let ns = &obj.metadata.namespace;
            let fqdn = service_fqdn(&obj.metadata.name, ns, &self.domain_suffix);
            let mut ports: Vec<Port> = spec
                .ports
                .iter()
                .map(|p| Port {
                    name: p.name.clone(),
                    port: p.port,
                    protocol: p.protocol.clone(),
                    app_protocol: p.app_protocol.clone(),
                })
                .collect();
            ports.sort_by_key(|p| p.port);
            ports.dedup_by_key(|p| p.port);
            let instances = self.service_instances(snapshot, obj, &spec, pods);
            self.services.insert(
                fqdn.clone(),
                Service {
                    name: obj.metadata.name.clone(),
                    namespace: ns.clone(),
                    fqdn,
                    ports,
                    instances,
                    // Istio's `networking.istio.io/exportTo` annotation (comma separated).
                    export_to: obj
                        .metadata
                        .annotations
                        .get("networking.istio.io/exportTo")
                        .map(|v| {
                            v.split(',')
                                .map(|s| s.trim().to_string())
                                .filter(|s| !s.is_empty())
                                .collect()
                        })
                        .unwrap_or_default(),
                    // The clusterIP (not `None` of a headless Service) is the service's VIP.
                    addresses: spec
                        .cluster_ip
                        .iter()
                        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
                        .cloned()
                        .collect(),
                    ..Service::default()
                },
            );
        }
    }

    /// The instances of Kubernetes Service `obj` (with `spec`): its Endpoints' addresses and the
    /// WorkloadEntries its selector matches, by service port.
    fn service_instances(
        &mut self,
        snapshot: &Snapshot,
        obj: &ConfigObject,
        spec: &ServiceSpec,
        pods: &Pods,
    ) -> BTreeMap<u16, Vec<Instance>> {
        let ns = &obj.metadata.namespace;
        let mut instances: BTreeMap<u16, Vec<Instance>> = BTreeMap::new();
        if let Some(ep_obj) = snapshot.get(Kind::Endpoints, ns, &obj.metadata.name) {
            match ep_obj.body_as::<Endpoints>() {
                Ok(eps) => {
                    for sp in &spec.ports {
                        let mut list = instances_for_port(&eps, sp, ns, pods);
                        list.sort();
                        list.dedup();
                        instances.insert(sp.port, list);
                    }
                }
                Err(e) => self.problem(ep_obj, e),
            }
        }
        // WorkloadEntries of the namespace the Service's selector matches, as Istio does.
        for we in self
            .workload_entries
            .iter()
            .filter(|w| w.namespace == *ns && w.spec.selected_by(&spec.selector))
        {
            for sp in &spec.ports {
                let port = we
                    .spec
                    .port_for(sp.name.as_deref(), sp.target_port.as_ref(), sp.port);
                let list = instances.entry(sp.port).or_default();
                list.push(
                    we.spec
                        .instance(port, Some(format!("{}/{}", we.namespace, we.name))),
                );
                list.sort();
                list.dedup();
            }
        }
        instances
    }

    /// One service per ServiceEntry host. A host already defined (by a Kubernetes Service or
    /// an earlier ServiceEntry) keeps its first definition; the later one is a problem.
    fn add_service_entries(&mut self, snapshot: &Snapshot) {
        for obj in snapshot.objects(Kind::ServiceEntry) {
            let spec: ServiceEntrySpec = match obj.spec() {
                Ok(s) => s,
                Err(e) => {
                    self.problem(obj, e);
                    continue;
                }
            };
            let ns = &obj.metadata.namespace;
            let services = match spec.services(ns, &obj.metadata.name, &self.workload_entries) {
                Ok(s) => s,
                Err(e) => {
                    self.problem(obj, e);
                    continue;
                }
            };
            for svc in services {
                if let Some(first) = self.services.get(&svc.fqdn) {
                    let reason = format!(
                        "host {} is already defined in namespace {}",
                        svc.fqdn, first.namespace
                    );
                    self.problem(obj, reason);
                    continue;
                }
                self.services.insert(svc.fqdn.clone(), svc);
            }
        }
    }

    fn add_virtual_services(&mut self, snapshot: &Snapshot) {
        for obj in snapshot.objects(Kind::VirtualService) {
            let spec: VirtualService = match obj.spec() {
                Ok(s) => s,
                Err(e) => {
                    self.problem(obj, e);
                    continue;
                }
            };
            let ns = obj.metadata.namespace.clone();
            let hosts: Vec<String> = spec.hosts.iter().map(|h| self.resolve(h, &ns)).collect();
            let index = self.virtual_services.len();
            for h in &hosts {
                self.vs_by_host.entry(h.clone()).or_default().push(index);
            }
            self.virtual_services.push(VirtualServiceEntry {
                namespace: ns,
                name: obj.metadata.name.clone(),
                hosts,
                spec,
            });
        }
    }

    fn add_destination_rules(&mut self, snapshot: &Snapshot) {
        for obj in snapshot.objects(Kind::DestinationRule) {
            let spec: DestinationRule = match obj.spec() {
                Ok(s) => s,
                Err(e) => {
                    self.problem(obj, e);
                    continue;
                }
            };
            let ns = obj.metadata.namespace.clone();
            let host = self.resolve(&spec.host, &ns);
            if let Some(first) = self.destination_rules.get(&host) {
                let reason = format!(
                    "host {host} already has DestinationRule {}/{}",
                    first.namespace, first.name
                );
                self.problem(obj, reason);
                continue;
            }
            self.destination_rules.insert(
                host.clone(),
                DestinationRuleEntry {
                    namespace: ns,
                    name: obj.metadata.name.clone(),
                    host,
                    spec,
                },
            );
        }
    }

    fn add_gateways(&mut self, snapshot: &Snapshot) {
        for obj in snapshot.objects(Kind::Gateway) {
            match obj.spec::<Gateway>() {
                Ok(spec) => self.gateways.push(GatewayEntry {
                    namespace: obj.metadata.namespace.clone(),
                    name: obj.metadata.name.clone(),
                    spec,
                }),
                Err(e) => self.problem(obj, e),
            }
        }
    }
}

/// The instances behind service port `sp`: in each Endpoints subset, the port named like the
/// service port (or the only port, or the numeric target port), for every ready address.
fn instances_for_port(
    eps: &Endpoints,
    sp: &mesh_proto::config::ServicePort,
    namespace: &str,
    (pods, pods_by_ip): &Pods,
) -> Vec<Instance> {
    let mut out = Vec::new();
    for subset in &eps.subsets {
        let Some(port) = subset_port(subset, sp) else {
            continue;
        };
        for addr in &subset.addresses {
            let pod_key = match &addr.target_ref {
                Some(r) if r.kind.as_deref().is_none_or(|k| k == "Pod") => Some(format!(
                    "{}/{}",
                    r.namespace.as_deref().unwrap_or(namespace),
                    r.name
                )),
                Some(_) => None,
                None => pods_by_ip.get(&addr.ip).cloned(),
            };
            let pod = pod_key.as_ref().and_then(|k| pods.get(k));
            out.push(Instance {
                ip: addr.ip.clone(),
                port: port.port,
                pod: pod_key.clone(),
                labels: pod.map(|p| p.labels.clone()).unwrap_or_default(),
                service_account: pod.map(|p| p.service_account.clone()),
                ..Instance::default()
            });
        }
    }
    out
}

fn subset_port<'a>(
    subset: &'a EndpointSubset,
    sp: &mesh_proto::config::ServicePort,
) -> Option<&'a EndpointPort> {
    if let Some(name) = &sp.name
        && let Some(p) = subset.ports.iter().find(|p| p.name.as_ref() == Some(name))
    {
        return Some(p);
    }
    if let [only] = subset.ports.as_slice() {
        return Some(only);
    }
    let target = sp
        .target_port
        .as_ref()
        .and_then(|v| v.as_u64())
        .unwrap_or(u64::from(sp.port));
    subset.ports.iter().find(|p| u64::from(p.port) == target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objs(v: serde_json::Value) -> Vec<ConfigObject> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn services_instances_and_config_indexes() {
        let snap = Snapshot::from_objects(objs(serde_json::json!([
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews", "namespace": "default"},
             "spec": {"ports": [{"name": "http", "port": 9080}, {"name": "grpc", "port": 7070}]}},
            {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "reviews", "namespace": "default"},
             "subsets": [{"addresses": [
                 {"ip": "10.0.0.1", "targetRef": {"kind": "Pod", "name": "reviews-v1"}},
                 {"ip": "10.0.0.2"}],
               "ports": [{"name": "http", "port": 19080}, {"name": "grpc", "port": 17070}]}]},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reviews-v1", "namespace": "default", "labels": {"version": "v1"}},
             "spec": {"serviceAccountName": "bookinfo-reviews"}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reviews-v2", "namespace": "default", "labels": {"version": "v2"}},
             "spec": {}, "status": {"podIP": "10.0.0.2"}},
            {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService", "metadata": {"name": "r", "namespace": "default"},
             "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}},
            {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService", "metadata": {"name": "bad", "namespace": "default"},
             "spec": {"hosts": "not-a-list"}},
            {"apiVersion": "networking.istio.io/v1alpha3", "kind": "DestinationRule", "metadata": {"name": "r", "namespace": "default"},
             "spec": {"host": "reviews.default"}}
        ])));
        let reg = Registry::from_snapshot(&snap, "cluster.local");
        let svc = &reg.services["reviews.default.svc.cluster.local"];
        assert_eq!(
            svc.ports.iter().map(|p| p.port).collect::<Vec<_>>(),
            vec![7070, 9080]
        );
        let http = &svc.instances[&9080];
        assert_eq!(http.len(), 2);
        assert_eq!(http[0].port, 19080);
        assert_eq!(http[0].service_account.as_deref(), Some("bookinfo-reviews"));
        assert_eq!(
            http[1].labels.get("version").map(String::as_str),
            Some("v2")
        );
        assert_eq!(
            http[1].service_account.as_deref(),
            Some("default"),
            "pod found by IP"
        );
        assert_eq!(svc.instances[&7070][0].port, 17070);
        assert_eq!(
            svc.service_accounts().into_iter().collect::<Vec<_>>(),
            vec!["bookinfo-reviews", "default"]
        );
        assert_eq!(
            reg.mesh_virtual_services("reviews.default.svc.cluster.local")
                .count(),
            1
        );
        assert!(
            reg.destination_rule("reviews.default.svc.cluster.local")
                .is_some()
        );
        assert_eq!(reg.problems.len(), 1, "{:?}", reg.problems);
        assert!(reg.problems[0].contains("default/bad"));
    }

    fn endpoints_mesh(ips: &[&str], target_refs: bool, pod_sa: &str) -> Snapshot {
        let addresses: Vec<serde_json::Value> = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| {
                if target_refs {
                    serde_json::json!({"ip": ip, "targetRef": {"kind": "Pod", "name": format!("a-{i}")}})
                } else {
                    serde_json::json!({"ip": ip})
                }
            })
            .collect();
        let mut v = serde_json::json!([
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "default"},
             "spec": {"ports": [{"name": "http", "port": 80}]}},
            {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "a", "namespace": "default"},
             "subsets": [{"addresses": addresses, "ports": [{"name": "http", "port": 8080}]}]},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "b", "namespace": "default"},
             "spec": {"ports": [{"name": "http", "port": 80}]}},
            {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "b", "namespace": "default"},
             "subsets": [{"addresses": [{"ip": "10.0.9.1", "targetRef": {"kind": "Pod", "name": "b-0"}}],
               "ports": [{"name": "http", "port": 8080}]}]},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "c", "namespace": "default"},
             "spec": {"ports": [{"name": "http", "port": 80}]}},
            {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "c", "namespace": "default"},
             "subsets": "not-a-list"},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b-0", "namespace": "default", "labels": {"app": "b"}},
             "spec": {"serviceAccountName": "b"}}
        ]);
        for i in 0..3 {
            v.as_array_mut().unwrap().push(serde_json::json!(
                {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("a-{i}"), "namespace": "default",
                 "labels": {"app": "a", "version": format!("v{i}")}},
                 "spec": {"serviceAccountName": pod_sa}, "status": {"podIP": format!("10.0.0.{}", i + 1)}}));
        }
        Snapshot::from_objects(objs(v))
    }

    fn same_registry(a: &Registry, b: &Registry) {
        assert_eq!(a.services, b.services);
        let (mut pa, mut pb) = (a.problems.clone(), b.problems.clone());
        pa.sort();
        pb.sort();
        assert_eq!(pa, pb);
        let mut a = a.clone();
        let mut b = b.clone();
        a.problems.clear();
        b.problems.clear();
        assert_eq!(a, b);
    }

    #[test]
    fn endpoints_change_is_read_incrementally() {
        let old = endpoints_mesh(&["10.0.0.1", "10.0.0.2"], true, "sa");
        let reg = Registry::from_snapshot(&old, "cluster.local");
        // One Endpoints object changed (an address added): the same as building it whole.
        let new = endpoints_mesh(&["10.0.0.1", "10.0.0.2", "10.0.0.3"], true, "sa");
        let inc = reg.with_endpoints_of(&old, &new).expect("incremental");
        let whole = Registry::from_snapshot(&new, "cluster.local");
        same_registry(&inc, &whole);
        let a = &inc.services["a.default.svc.cluster.local"].instances[&80];
        assert_eq!(a.len(), 3);
        assert_eq!(a[2].labels.get("version").map(String::as_str), Some("v2"));
        assert_eq!(a[2].service_account.as_deref(), Some("sa"));
        assert_eq!(
            inc.services["b.default.svc.cluster.local"],
            reg.services["b.default.svc.cluster.local"]
        );
        // The unreadable Endpoints keeps its one problem.
        assert_eq!(inc.problems.len(), 1, "{:?}", inc.problems);
        // Nothing changed: the same registry.
        same_registry(&reg.with_endpoints_of(&old, &old).unwrap(), &reg);
        // An Endpoints object removed: its service has no instances left.
        let mut gone = new.clone();
        gone.collections
            .get_mut(&Kind::Endpoints)
            .unwrap()
            .objects
            .remove("default/a");
        let inc = reg.with_endpoints_of(&old, &gone).expect("incremental");
        same_registry(&inc, &Registry::from_snapshot(&gone, "cluster.local"));
        assert!(
            inc.services["a.default.svc.cluster.local"]
                .instances
                .is_empty()
        );
    }

    #[test]
    fn endpoints_change_needing_more_is_built_whole() {
        let old = endpoints_mesh(&["10.0.0.1"], true, "sa");
        let reg = Registry::from_snapshot(&old, "cluster.local");
        // A pod changed: every instance naming it may change.
        let pods = endpoints_mesh(&["10.0.0.1"], true, "other");
        assert!(reg.with_endpoints_of(&old, &pods).is_none());
        // An address without targetRef: its pod is found by IP.
        let by_ip = endpoints_mesh(&["10.0.0.1", "10.0.0.2"], false, "sa");
        assert!(reg.with_endpoints_of(&old, &by_ip).is_none());
    }
}
