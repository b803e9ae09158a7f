//! The applied configuration: an immutable snapshot swapped whole on every accepted update.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

use crate::cluster::{Cluster, Discovery, DnsSpec, Endpoints};
use crate::routing::RouteTable;

/// A listener from LDS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listener {
    pub name: String,
    pub address: Option<SocketAddr>,
    /// The RDS route configuration its HTTP connection manager uses.
    pub route_config_name: Option<String>,
    /// `virtualInbound` only: the compiled peer authentication, JWT and RBAC config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound: Option<Arc<crate::authz::InboundPolicy>>,
    /// Listeners of a TCP port: the `tcp_proxy` filter's clusters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<Arc<crate::tcp::TcpProxy>>,
    /// The `mixer` HTTP filter's config (quota rules, fail policy), when Pilot sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mixer: Option<Arc<crate::mixer::MixerFilter>>,
}

/// The version last applied per resource type (empty before the first).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Versions {
    pub listeners: String,
    pub routes: String,
    pub clusters: String,
    pub endpoints: String,
}

/// Everything the request path reads. Never mutated once published.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Config {
    pub listeners: BTreeMap<String, Listener>,
    pub routes: BTreeMap<String, Arc<RouteTable>>,
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    /// Keyed by EDS name (`Cluster::eds_name`; the cluster name for non-EDS clusters, whose
    /// endpoints come from `load_assignment` or DNS).
    pub endpoints: BTreeMap<String, Arc<Endpoints>>,
    /// The discovery type of each cluster that is not EDS.
    pub discovery: BTreeMap<String, Discovery>,
    pub versions: Versions,
    /// The access loggers of each listener that has any (see [`super::access_log`]).
    pub access_logs: BTreeMap<String, Arc<super::access_log::ListenerLogs>>,
    /// Gateway listeners that terminate TLS (HTTPS servers), by listener name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub gateway_tls: BTreeMap<String, Arc<crate::gateway::GatewayTls>>,
}

impl Config {
    /// The route table the named listener uses.
    pub fn route_table_for(&self, listener: &str) -> Option<&RouteTable> {
        let name = self.listeners.get(listener)?.route_config_name.as_ref()?;
        self.routes.get(name).map(|r| r.as_ref())
    }

    /// The inbound security config, when Pilot sent `virtualInbound`.
    pub fn inbound_policy(&self) -> Option<&Arc<crate::authz::InboundPolicy>> {
        self.listeners
            .get(crate::authz::INBOUND_LISTENER)?
            .inbound
            .as_ref()
    }

    /// The TLS termination of the named gateway listener, when it has one.
    pub fn gateway_tls(&self, listener: &str) -> Option<&Arc<crate::gateway::GatewayTls>> {
        self.gateway_tls.get(listener)
    }

    /// The `mixer` filter config of the named listener.
    pub fn mixer_filter(&self, listener: &str) -> Option<&crate::mixer::MixerFilter> {
        self.listeners.get(listener)?.mixer.as_deref()
    }

    /// The endpoints of a cluster.
    pub fn endpoints_of(&self, cluster: &Cluster) -> Option<&Endpoints> {
        self.endpoints.get(&cluster.eds_name).map(|e| e.as_ref())
    }

    /// The endpoints of a cluster, shared.
    pub fn endpoints_arc(&self, cluster: &Cluster) -> Option<&Arc<Endpoints>> {
        self.endpoints.get(&cluster.eds_name)
    }

    /// How the named cluster finds its endpoints.
    pub fn discovery_of(&self, cluster: &str) -> &Discovery {
        self.discovery.get(cluster).unwrap_or(&Discovery::Eds)
    }

    /// Puts resolved DNS endpoints in place: only for a cluster that is (still) a DNS cluster
    /// with exactly `spec`.
    fn overlay_dns(&mut self, name: &str, spec: &DnsSpec, endpoints: &Arc<Endpoints>) {
        if !matches!(self.discovery.get(name), Some(Discovery::Dns(s)) if **s == *spec) {
            return;
        }
        let key = self
            .clusters
            .get(name)
            .map_or_else(|| name.to_string(), |c| c.eds_name.clone());
        self.endpoints.insert(key, endpoints.clone());
    }
}

/// Resolved endpoints of DNS clusters, by cluster name, with the settings they came from.
type DnsResults = BTreeMap<String, (Arc<DnsSpec>, Arc<Endpoints>)>;

/// The published snapshot: cheap to read from any task, replaced atomically.
///
/// DNS clusters' endpoints are kept beside it (`set_dns_endpoints`) and laid over every
/// snapshot stored, so an xDS update does not lose what was resolved.
#[derive(Debug, Clone)]
pub struct SharedConfig {
    tx: Arc<watch::Sender<Arc<Config>>>,
    dns: Arc<parking_lot::Mutex<DnsResults>>,
}

impl Default for SharedConfig {
    fn default() -> Self {
        SharedConfig::new(Config::default())
    }
}

impl SharedConfig {
    pub fn new(config: Config) -> Self {
        let (tx, _) = watch::channel(Arc::new(config));
        SharedConfig {
            tx: Arc::new(tx),
            dns: Arc::default(),
        }
    }

    /// The current snapshot (an `Arc` clone; no lock is held afterwards).
    pub fn load(&self) -> Arc<Config> {
        self.tx.borrow().clone()
    }

    /// Publishes a new snapshot (with the DNS clusters' resolved endpoints).
    pub fn store(&self, mut config: Config) {
        let dns = self.dns.lock();
        for (name, (spec, endpoints)) in dns.iter() {
            config.overlay_dns(name, spec, endpoints);
        }
        self.tx.send_replace(Arc::new(config));
    }

    /// Publishes the endpoints `spec` of DNS cluster `name` resolved to (unless they are the
    /// ones in place, so load balancing positions survive an unchanged refresh).
    pub fn set_dns_endpoints(&self, name: &str, spec: &Arc<DnsSpec>, endpoints: Endpoints) {
        let mut dns = self.dns.lock();
        if let Some((s, old)) = dns.get(name)
            && s == spec
            && **old == endpoints
        {
            return;
        }
        let endpoints = Arc::new(endpoints);
        dns.insert(name.to_string(), (spec.clone(), endpoints.clone()));
        let mut next = Config::clone(&self.load());
        next.overlay_dns(name, spec, &endpoints);
        self.tx.send_replace(Arc::new(next));
    }

    /// Forgets the resolved endpoints of DNS clusters `keep` says no to.
    pub fn retain_dns(&self, keep: impl Fn(&str) -> bool) {
        self.dns.lock().retain(|name, _| keep(name));
    }

    /// A receiver that sees every published snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.tx.subscribe()
    }
}
