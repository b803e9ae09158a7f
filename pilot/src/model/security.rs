//! The security.istio.io policies of a snapshot (PeerAuthentication, AuthorizationPolicy,
//! RequestAuthentication), typed, and which of them apply to a workload.

use std::collections::BTreeMap;

use mesh_proto::config::{
    AuthorizationPolicy, ConfigObject, Kind, PeerAuthentication, RequestAuthentication,
    WorkloadSelector,
};
use serde::Serialize;

use crate::galley_client::Snapshot;

/// The mesh's root namespace: policies there without a selector apply mesh-wide.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// One policy object with its place.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PolicyEntry<T> {
    pub namespace: String,
    pub name: String,
    pub spec: T,
}

/// How a policy reaches a workload, from the widest to the narrowest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum PolicyScope {
    Mesh,
    Namespace,
    Workload,
}

/// Every security policy of the snapshot, each list in `namespace/name` order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SecurityPolicies {
    pub peer_authentications: Vec<PolicyEntry<PeerAuthentication>>,
    pub authorization_policies: Vec<PolicyEntry<AuthorizationPolicy>>,
    pub request_authentications: Vec<PolicyEntry<RequestAuthentication>>,
}

impl SecurityPolicies {
    /// Reads the three collections; objects that do not parse go to `problems`.
    pub fn from_snapshot(snapshot: &Snapshot, problems: &mut Vec<String>) -> SecurityPolicies {
        SecurityPolicies {
            peer_authentications: read(snapshot, Kind::PeerAuthentication, problems),
            authorization_policies: read(snapshot, Kind::AuthorizationPolicy, problems),
            request_authentications: read(snapshot, Kind::RequestAuthentication, problems),
        }
    }
}

fn read<T: serde::de::DeserializeOwned>(
    snapshot: &Snapshot,
    kind: Kind,
    problems: &mut Vec<String>,
) -> Vec<PolicyEntry<T>> {
    let mut out = Vec::new();
    for obj in snapshot.objects(kind) {
        match obj.spec::<T>() {
            Ok(spec) => out.push(entry(obj, spec)),
            Err(e) => {
                tracing::warn!(object = %obj.key(), kind = %obj.kind, reason = %e, "security policy left out");
                problems.push(format!("{} {}: {e}", obj.kind, obj.key()));
            }
        }
    }
    out
}

fn entry<T>(obj: &ConfigObject, spec: T) -> PolicyEntry<T> {
    PolicyEntry {
        namespace: obj.metadata.namespace.clone(),
        name: obj.metadata.name.clone(),
        spec,
    }
}

/// The scope at which a policy in `policy_ns` with `selector` applies to a workload in
/// `namespace` with `labels`, or `None` when it does not.
pub fn scope_for(
    policy_ns: &str,
    selector: Option<&WorkloadSelector>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<PolicyScope> {
    let selected = selector.filter(|s| !s.match_labels.is_empty());
    match selected {
        Some(sel) => {
            let in_scope = policy_ns == namespace || policy_ns == ROOT_NAMESPACE;
            (in_scope && sel.matches(labels)).then_some(PolicyScope::Workload)
        }
        None if policy_ns == namespace && namespace != ROOT_NAMESPACE => {
            Some(PolicyScope::Namespace)
        }
        None if policy_ns == ROOT_NAMESPACE => Some(PolicyScope::Mesh),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let labels = BTreeMap::from([("app".to_string(), "ratings".to_string())]);
        let sel = WorkloadSelector {
            match_labels: labels.clone(),
        };
        let other = WorkloadSelector {
            match_labels: BTreeMap::from([("app".to_string(), "x".to_string())]),
        };
        assert_eq!(
            scope_for("istio-system", None, "default", &labels),
            Some(PolicyScope::Mesh)
        );
        assert_eq!(
            scope_for("default", None, "default", &labels),
            Some(PolicyScope::Namespace)
        );
        assert_eq!(scope_for("prod", None, "default", &labels), None);
        assert_eq!(
            scope_for("default", Some(&sel), "default", &labels),
            Some(PolicyScope::Workload)
        );
        assert_eq!(scope_for("default", Some(&other), "default", &labels), None);
        assert_eq!(scope_for("prod", Some(&sel), "default", &labels), None);
    }
}
