//! What the xDS client has accepted so far, and applying a response to it.
//!
//! A response is decoded completely before anything changes: one bad resource rejects the whole
//! response (NACK) and the previous state keeps serving.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mesh_proto::envoy::google::protobuf::Any;
use mesh_proto::type_url;

use crate::cluster::{Cluster, Endpoints};
use crate::routing::RouteTable;

use super::decode::{self, DecodeError};
use super::snapshot::{Config, Listener, Versions};

/// The four resource types the proxy subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Cluster,
    Endpoint,
    Listener,
    Route,
}

impl ResourceType {
    pub const ALL: [ResourceType; 4] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
    ];

    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => type_url::CLUSTER,
            ResourceType::Endpoint => type_url::ENDPOINT,
            ResourceType::Listener => type_url::LISTENER,
            ResourceType::Route => type_url::ROUTE,
        }
    }

    pub fn from_type_url(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// Short name for logs and metrics (`cds`, `eds`, `lds`, `rds`).
    pub fn short(self) -> &'static str {
        match self {
            ResourceType::Cluster => "cds",
            ResourceType::Endpoint => "eds",
            ResourceType::Listener => "lds",
            ResourceType::Route => "rds",
        }
    }
}

/// Why a response was rejected; the text goes into the NACK's `error_detail`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    #[error("unsupported type_url {0}")]
    UnknownType(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("duplicate resource {0}")]
    Duplicate(String),
}

/// The accepted resources, per type.
#[derive(Debug, Default)]
pub struct XdsState {
    listeners: BTreeMap<String, Listener>,
    routes: BTreeMap<String, Arc<RouteTable>>,
    clusters: BTreeMap<String, Arc<Cluster>>,
    endpoints: BTreeMap<String, Arc<Endpoints>>,
    versions: Versions,
    lds_applied: bool,
    cds_applied: bool,
}

fn insert_unique<V>(map: &mut BTreeMap<String, V>, name: String, v: V) -> Result<(), ApplyError> {
    if map.contains_key(&name) {
        return Err(ApplyError::Duplicate(name));
    }
    map.insert(name, v);
    Ok(())
}

impl XdsState {
    /// Applies one SotW response. On success returns the type applied and the new snapshot to
    /// publish; on error nothing changed.
    pub fn apply(
        &mut self,
        url: &str,
        version: &str,
        resources: &[Any],
    ) -> Result<(ResourceType, Config), ApplyError> {
        let ty =
            ResourceType::from_type_url(url).ok_or_else(|| ApplyError::UnknownType(url.into()))?;
        match ty {
            ResourceType::Listener => {
                let mut next = BTreeMap::new();
                for r in resources {
                    let l = decode::listener(r)?;
                    insert_unique(&mut next, l.name.clone(), l)?;
                }
                self.listeners = next;
                let referenced = self.route_names();
                self.routes.retain(|k, _| referenced.contains(k));
                self.versions.listeners = version.to_string();
                self.lds_applied = true;
            }
            ResourceType::Cluster => {
                let mut next = BTreeMap::new();
                for r in resources {
                    let c = decode::cluster(r)?;
                    // Keep the same Arc when unchanged so nothing downstream sees a difference.
                    let c = match self.clusters.get(&c.name) {
                        Some(old) if **old == c => old.clone(),
                        _ => Arc::new(c),
                    };
                    insert_unique(&mut next, c.name.clone(), c)?;
                }
                self.clusters = next;
                let referenced = self.cluster_names();
                self.endpoints.retain(|k, _| referenced.contains(k));
                self.versions.clusters = version.to_string();
                self.cds_applied = true;
            }
            ResourceType::Route => {
                let mut next = BTreeMap::new();
                for r in resources {
                    let t = decode::route_table(r)?;
                    insert_unique(&mut next, t.name.clone(), Arc::new(t))?;
                }
                self.routes.extend(next);
                let referenced = self.route_names();
                self.routes.retain(|k, _| referenced.contains(k));
                self.versions.routes = version.to_string();
            }
            ResourceType::Endpoint => {
                let mut next = BTreeMap::new();
                for r in resources {
                    let (name, addrs) = decode::load_assignment(r)?;
                    // Keep the round-robin position when the addresses did not change.
                    let e = match self.endpoints.get(&name) {
                        Some(old) if old.addrs == addrs => old.clone(),
                        _ => Arc::new(Endpoints::new(addrs)),
                    };
                    insert_unique(&mut next, name, e)?;
                }
                self.endpoints.extend(next);
                let referenced = self.cluster_names();
                self.endpoints.retain(|k, _| referenced.contains(k));
                self.versions.endpoints = version.to_string();
            }
        }
        Ok((ty, self.snapshot()))
    }

    /// A snapshot of the accepted state.
    pub fn snapshot(&self) -> Config {
        Config {
            listeners: self.listeners.clone(),
            routes: self.routes.clone(),
            clusters: self.clusters.clone(),
            endpoints: self.endpoints.clone(),
            versions: self.versions.clone(),
        }
    }

    /// EDS names the accepted clusters need, sorted.
    pub fn cluster_names(&self) -> BTreeSet<String> {
        self.clusters.values().map(|c| c.eds_name.clone()).collect()
    }

    /// Route configuration names the accepted listeners reference, sorted.
    pub fn route_names(&self) -> BTreeSet<String> {
        self.listeners
            .values()
            .filter_map(|l| l.route_config_name.clone())
            .collect()
    }

    /// Whether both LDS and CDS have been applied at least once.
    pub fn initial_config_applied(&self) -> bool {
        self.lds_applied && self.cds_applied
    }
}
