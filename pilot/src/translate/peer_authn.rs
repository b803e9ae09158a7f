//! PeerAuthentication → the workload's mutual TLS mode: mesh (root namespace), namespace, then
//! workload policy, the most specific one that sets a mode wins (`UNSET` inherits); PERMISSIVE
//! when nothing says otherwise. Port-level modes come from the workload policy only, as in Istio.

use std::collections::BTreeMap;

use mesh_proto::config::PeerMtls;
use serde::Serialize;

use super::proxy_info::ProxyInfo;
use crate::model::{PolicyScope, Registry, scope_for};

/// A peer authentication mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MtlsMode {
    /// Mutual TLS only.
    Strict,
    /// Mutual TLS and plaintext.
    Permissive,
    /// Plaintext only.
    Disable,
}

impl MtlsMode {
    fn parse(m: &PeerMtls) -> Option<MtlsMode> {
        match m.mode.as_deref()? {
            "STRICT" => Some(MtlsMode::Strict),
            "PERMISSIVE" => Some(MtlsMode::Permissive),
            "DISABLE" => Some(MtlsMode::Disable),
            _ => None,
        }
    }
}

/// The workload's modes: the default and per-port overrides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MtlsSettings {
    pub mode: MtlsMode,
    pub ports: BTreeMap<u32, MtlsMode>,
}

/// The effective mutual TLS settings of `proxy`.
pub fn mtls_settings(reg: &Registry, proxy: &ProxyInfo) -> MtlsSettings {
    // The first policy (namespace/name order) of each scope counts.
    let mut by_scope = BTreeMap::new();
    for p in &reg.security.peer_authentications {
        if let Some(scope) = scope_for(
            &p.namespace,
            p.spec.selector.as_ref(),
            &proxy.namespace,
            &proxy.labels,
        ) {
            by_scope.entry(scope).or_insert(&p.spec);
        }
    }
    let mut mode = MtlsMode::Permissive;
    for scope in [
        PolicyScope::Mesh,
        PolicyScope::Namespace,
        PolicyScope::Workload,
    ] {
        if let Some(m) = by_scope
            .get(&scope)
            .and_then(|p| p.mtls.as_ref())
            .and_then(MtlsMode::parse)
        {
            mode = m;
        }
    }
    let ports = by_scope
        .get(&PolicyScope::Workload)
        .map(|p| {
            p.port_level_mtls
                .iter()
                .filter_map(|(port, m)| Some((port.parse().ok()?, MtlsMode::parse(m)?)))
                .collect()
        })
        .unwrap_or_default();
    MtlsSettings { mode, ports }
}
