//! What the xDS client has accepted so far, and applying a response to it.
//!
//! A response is decoded completely before anything changes: one bad resource rejects the whole
//! response (NACK) and the previous state keeps serving.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mesh_proto::envoy::google::protobuf::Any;
use mesh_proto::type_url;

use crate::cluster::{Cluster, Discovery, Endpoints};
use crate::routing::RouteTable;

use super::decode::{self, DecodeError};
use super::snapshot::{Config, Listener, Versions};

/// The resource types the proxy subscribes to (SDS secrets: the names its gateway listeners
/// reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Cluster,
    Endpoint,
    Listener,
    Route,
    Secret,
}

impl ResourceType {
    pub const ALL: [ResourceType; 5] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::Secret,
    ];

    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => type_url::CLUSTER,
            ResourceType::Endpoint => type_url::ENDPOINT,
            ResourceType::Listener => type_url::LISTENER,
            ResourceType::Route => type_url::ROUTE,
            ResourceType::Secret => type_url::SECRET,
        }
    }

    pub fn from_type_url(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// Short name for logs and metrics (`cds`, `eds`, `lds`, `rds`, `sds`).
    pub fn short(self) -> &'static str {
        match self {
            ResourceType::Cluster => "cds",
            ResourceType::Endpoint => "eds",
            ResourceType::Listener => "lds",
            ResourceType::Route => "rds",
            ResourceType::Secret => "sds",
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
    /// Non-EDS clusters' discovery type, and STATIC clusters' inline endpoints.
    discovery: BTreeMap<String, Discovery>,
    static_endpoints: BTreeMap<String, Arc<Endpoints>>,
    versions: Versions,
    access_logs: BTreeMap<String, Arc<super::access_log::ListenerLogs>>,
    gateway_tls: BTreeMap<String, Arc<crate::gateway::GatewayTls>>,
    /// SDS secrets from Pilot that the gateway listeners reference.
    secrets: crate::gateway::Secrets,
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
                let mut logs = BTreeMap::new();
                let mut tls = BTreeMap::new();
                for r in resources {
                    let l = decode::listener(r)?;
                    let access = super::access_log::listener_logs(r)?;
                    if !access.is_empty() {
                        logs.insert(l.name.clone(), Arc::new(access));
                    }
                    if let Some(t) = self.decode_gateway_tls(r)? {
                        tls.insert(l.name.clone(), t);
                    }
                    insert_unique(&mut next, l.name.clone(), l)?;
                }
                self.listeners = next;
                self.access_logs = logs;
                self.gateway_tls = tls;
                let wanted = self.secret_names();
                self.secrets.retain(|k, _| wanted.contains(k));
                let referenced = self.route_names();
                self.routes.retain(|k, _| referenced.contains(k));
                self.versions.listeners = version.to_string();
                self.lds_applied = true;
            }
            ResourceType::Cluster => {
                let mut next = BTreeMap::new();
                let mut discovery = BTreeMap::new();
                let mut statics = BTreeMap::new();
                for r in resources {
                    let decode::DecodedCluster {
                        cluster: c,
                        discovery: d,
                        static_endpoints,
                    } = decode::cluster(r)?;
                    if let Some(eps) = static_endpoints {
                        let eps = Endpoints::from_endpoints(eps);
                        let eps = match self.static_endpoints.get(&c.name) {
                            Some(old) if **old == eps => old.clone(),
                            _ => Arc::new(eps),
                        };
                        statics.insert(c.name.clone(), eps);
                    }
                    if d != Discovery::Eds {
                        discovery.insert(c.name.clone(), d);
                    }
                    // Keep the same Arc when unchanged so nothing downstream sees a difference.
                    let c = match self.clusters.get(&c.name) {
                        Some(old) if **old == c => old.clone(),
                        _ => Arc::new(c),
                    };
                    insert_unique(&mut next, c.name.clone(), c)?;
                }
                self.clusters = next;
                self.discovery = discovery;
                self.static_endpoints = statics;
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
            ResourceType::Secret => {
                // The whole set the listeners reference (SotW responses carry every name
                // asked for that exists; Delta applies everything held).
                let wanted = self.secret_names();
                let mut next = BTreeMap::new();
                for r in resources {
                    let s = crate::gateway::decode_secret(r).map_err(|(field, reason)| {
                        DecodeError::Invalid {
                            resource: format!("secret {}", secret_name(r)),
                            field,
                            reason,
                        }
                    })?;
                    if !wanted.contains(&s.name) {
                        continue;
                    }
                    let s = match self.secrets.get(&s.name) {
                        Some(old) if **old == s => old.clone(),
                        _ => Arc::new(s),
                    };
                    insert_unique(&mut next, s.name.clone(), s)?;
                }
                let tls = self.rebuild_gateway_tls(&next)?;
                self.secrets = next;
                self.gateway_tls = tls;
            }
            ResourceType::Endpoint => {
                let mut next = BTreeMap::new();
                for r in resources {
                    let (name, endpoints) = decode::load_assignment(r)?;
                    // Keep the round-robin position when the endpoints did not change.
                    let e = match self.endpoints.get(&name) {
                        Some(old) if old.endpoints == endpoints => old.clone(),
                        _ => Arc::new(Endpoints::from_endpoints(endpoints)),
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
            endpoints: {
                let mut e = self.endpoints.clone();
                e.extend(
                    self.static_endpoints
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
                e
            },
            discovery: self.discovery.clone(),
            versions: self.versions.clone(),
            access_logs: self.access_logs.clone(),
            gateway_tls: self.gateway_tls.clone(),
        }
    }

    /// A gateway listener's TLS termination (files read now: unreadable or bad certificates
    /// reject the update). Unchanged from the accepted one: the same (it reloads its files
    /// itself).
    fn decode_gateway_tls(
        &self,
        r: &Any,
    ) -> Result<Option<Arc<crate::gateway::GatewayTls>>, ApplyError> {
        use mesh_proto::envoy::envoy::config::listener::v3::Listener as EnvoyListener;
        use prost::Message;
        let l = EnvoyListener::decode(r.value.as_slice()).map_err(|e| DecodeError::Protobuf {
            resource: "listener".to_string(),
            reason: e.to_string(),
        })?;
        let res = format!("listener {}", l.name);
        let spec =
            crate::gateway::listener_tls(&l).map_err(|(field, reason)| DecodeError::Invalid {
                resource: res.clone(),
                field,
                reason,
            })?;
        let Some(spec) = spec else {
            return Ok(None);
        };
        if let Some(old) = self.gateway_tls.get(&l.name)
            && *old.spec() == spec
            && *old.secrets() == crate::gateway::GatewayTls::secrets_of(&spec, &self.secrets)
        {
            return Ok(Some(old.clone()));
        }
        let built = crate::gateway::GatewayTls::build_with(spec, &self.secrets).map_err(|e| {
            DecodeError::Invalid {
                resource: res,
                field: "filter_chains.transport_socket".to_string(),
                reason: e.to_string(),
            }
        })?;
        Ok(Some(Arc::new(built)))
    }

    /// The gateway TLS of every listener with `secrets` as the SDS secrets held: unchanged
    /// where the secrets it reads did not change, rebuilt (rotation) where they did.
    fn rebuild_gateway_tls(
        &self,
        secrets: &crate::gateway::Secrets,
    ) -> Result<BTreeMap<String, Arc<crate::gateway::GatewayTls>>, ApplyError> {
        let mut out = BTreeMap::new();
        for (name, old) in &self.gateway_tls {
            let now = crate::gateway::GatewayTls::secrets_of(old.spec(), secrets);
            let t = if *old.secrets() == now {
                old.clone()
            } else {
                let built = crate::gateway::GatewayTls::build_with(old.spec().clone(), secrets)
                    .map_err(|e| DecodeError::Invalid {
                        resource: format!("listener {name}"),
                        field: "filter_chains.transport_socket".to_string(),
                        reason: e.to_string(),
                    })?;
                Arc::new(built)
            };
            out.insert(name.clone(), t);
        }
        Ok(out)
    }

    /// SDS secret names the accepted gateway listeners reference, sorted.
    pub fn secret_names(&self) -> BTreeSet<String> {
        self.gateway_tls
            .values()
            .flat_map(|t| t.spec().secret_names())
            .collect()
    }

    /// EDS names the accepted EDS clusters need, sorted (STATIC, DNS and ORIGINAL_DST
    /// clusters do not wait for EDS).
    pub fn cluster_names(&self) -> BTreeSet<String> {
        self.clusters
            .values()
            .filter(|c| !self.discovery.contains_key(&c.name))
            .map(|c| c.eds_name.clone())
            .collect()
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

/// The name of a `Secret` resource, for error messages (`?` when it does not decode).
fn secret_name(r: &Any) -> String {
    use prost::Message;
    mesh_proto::envoy::envoy::extensions::transport_sockets::tls::v3::Secret::decode(
        r.value.as_slice(),
    )
    .map(|s| s.name)
    .unwrap_or_else(|_| "?".to_string())
}
