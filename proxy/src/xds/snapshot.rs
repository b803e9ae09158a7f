//! The applied configuration: an immutable snapshot swapped whole on every accepted update.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

use crate::cluster::{Cluster, Endpoints};
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
#[derive(Debug, Default, Serialize)]
pub struct Config {
    pub listeners: BTreeMap<String, Listener>,
    pub routes: BTreeMap<String, Arc<RouteTable>>,
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    /// Keyed by EDS name (`Cluster::eds_name`).
    pub endpoints: BTreeMap<String, Arc<Endpoints>>,
    pub versions: Versions,
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

    /// The endpoints of a cluster.
    pub fn endpoints_of(&self, cluster: &Cluster) -> Option<&Endpoints> {
        self.endpoints.get(&cluster.eds_name).map(|e| e.as_ref())
    }
}

/// The published snapshot: cheap to read from any task, replaced atomically.
#[derive(Debug, Clone)]
pub struct SharedConfig {
    tx: Arc<watch::Sender<Arc<Config>>>,
}

impl Default for SharedConfig {
    fn default() -> Self {
        SharedConfig::new(Config::default())
    }
}

impl SharedConfig {
    pub fn new(config: Config) -> Self {
        let (tx, _) = watch::channel(Arc::new(config));
        SharedConfig { tx: Arc::new(tx) }
    }

    /// The current snapshot (an `Arc` clone; no lock is held afterwards).
    pub fn load(&self) -> Arc<Config> {
        self.tx.borrow().clone()
    }

    /// Publishes a new snapshot.
    pub fn store(&self, config: Config) {
        self.tx.send_replace(Arc::new(config));
    }

    /// A receiver that sees every published snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.tx.subscribe()
    }
}
