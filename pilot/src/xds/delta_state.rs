//! Delta xDS bookkeeping for one type URL on one stream: what the client subscribed to, which
//! version of each resource it holds, which versions it rejected, and the responses awaiting an
//! answer. No I/O, so the protocol's rules are tested here.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use mesh_proto::discovery::new_nonce;

use crate::translate::{EncodedResource, TypeResources, XdsType};

/// The name subscribing (or unsubscribing) to every resource of a type.
pub(super) const WILDCARD: &str = "*";

/// Responses kept for matching ACK/NACKs; older ones are forgotten (Envoy answers in order).
const MAX_PENDING: usize = 64;

/// A resource to send: its index in the type's resources, name and version.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Changed {
    pub(super) index: u32,
    pub(super) name: String,
    pub(super) version: String,
}

impl Changed {
    fn of(index: usize, r: &EncodedResource) -> Changed {
        Changed {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            name: r.name.clone(),
            version: r.version.clone(),
        }
    }
}

/// What the client is missing: resources to send and names to remove.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Changes {
    pub(super) resources: Vec<Changed>,
    pub(super) removed: Vec<String>,
}

impl Changes {
    pub(super) fn is_empty(&self) -> bool {
        self.resources.is_empty() && self.removed.is_empty()
    }
}

/// What a request's `response_nonce` / `error_detail` mean.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reply {
    /// No nonce: the request only changes the subscription.
    None,
    /// The response with `system_version` was applied.
    Ack { system_version: String },
    /// The response with `system_version` was rejected; `resources` are its `name@version`s.
    Nack {
        system_version: String,
        error: String,
        resources: Vec<String>,
    },
    /// Answers a nonce the server does not (or no longer) know.
    Stale,
}

/// A response awaiting the client's answer.
#[derive(Debug)]
struct Pending {
    nonce: String,
    system_version: String,
    /// `(name, version sent, version the client held before)`.
    sent: Vec<(String, String, Option<String>)>,
}

/// One type's Delta state on one stream.
#[derive(Debug, Default)]
pub(super) struct DeltaState {
    opened: bool,
    wildcard: bool,
    names: BTreeSet<String>,
    /// The version of each resource the client holds, as far as the server knows.
    known: BTreeMap<String, String>,
    /// Explicitly subscribed names the client was told do not exist.
    told_absent: BTreeSet<String>,
    /// The last rejected version per resource: not sent again until the resource changes.
    nacked: BTreeMap<String, String>,
    pending: VecDeque<Pending>,
}

impl DeltaState {
    /// Applies the subscription part of a request; returns `true` for the first request of the
    /// type on the stream (which is always answered). On CDS and LDS an empty first subscribe
    /// means wildcard; `*` subscribes to (or unsubscribes from) every resource on any type.
    /// `initial` (the versions the client holds after a reconnect) counts on the first request.
    pub(super) fn subscribe(
        &mut self,
        t: XdsType,
        subscribe: &[String],
        unsubscribe: &[String],
        initial: &HashMap<String, String>,
    ) -> bool {
        let first = !self.opened;
        if first {
            self.opened = true;
            self.wildcard = !t.named() && subscribe.is_empty();
        }
        for n in subscribe {
            if n == WILDCARD {
                self.wildcard = true;
            } else {
                self.told_absent.remove(n);
                self.names.insert(n.clone());
            }
        }
        for n in unsubscribe {
            if n == WILDCARD {
                self.wildcard = false;
            } else {
                self.told_absent.remove(n);
                self.names.remove(n);
            }
        }
        if first {
            self.known = initial
                .iter()
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
        }
        // The client forgets what it no longer subscribes to: nothing to update or remove.
        let (wildcard, names) = (self.wildcard, &self.names);
        self.known.retain(|n, _| wildcard || names.contains(n));
        first
    }

    /// Whether a response sent is still waiting for the client's answer.
    pub(super) fn awaiting_answer(&self) -> bool {
        !self.pending.is_empty()
    }

    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// What the client lacks of `current`: each wanted resource whose version it does not hold
    /// (unless it rejected exactly that version), each name it holds that no longer exists, and
    /// each explicitly subscribed name that does not exist and it was not told about.
    pub(super) fn changes(&self, current: &TypeResources) -> Changes {
        let resources = current
            .resources
            .iter()
            .enumerate()
            .filter(|(_, r)| self.wants(&r.name))
            .filter(|(_, r)| self.known.get(&r.name) != Some(&r.version))
            .filter(|(_, r)| self.nacked.get(&r.name) != Some(&r.version))
            .map(|(i, r)| Changed::of(i, r))
            .collect();
        let present = |n: &str| current.position(n).is_some();
        let mut removed: BTreeSet<&String> =
            self.known.keys().filter(|n| !present(n.as_str())).collect();
        removed.extend(self.names.iter().filter(|n| {
            !present(n.as_str()) && !self.known.contains_key(*n) && !self.told_absent.contains(*n)
        }));
        Changes {
            resources,
            removed: removed.into_iter().cloned().collect(),
        }
    }

    /// [`DeltaState::changes`] when only `names` can differ from what the client was sent.
    pub(super) fn changes_among(
        &self,
        current: &TypeResources,
        names: &BTreeSet<String>,
    ) -> Changes {
        let mut out = Changes::default();
        for n in names.iter().filter(|n| self.wants(n)) {
            match current
                .position(n)
                .and_then(|i| Some((i, current.resources.get(i)?)))
            {
                Some((i, r)) => {
                    if self.known.get(n) != Some(&r.version)
                        && self.nacked.get(n) != Some(&r.version)
                    {
                        out.resources.push(Changed::of(i, r));
                    }
                }
                None => {
                    if self.known.contains_key(n)
                        || (self.names.contains(n) && !self.told_absent.contains(n))
                    {
                        out.removed.push(n.clone());
                    }
                }
            }
        }
        out
    }

    /// Records `changes` as sent in a response of `system_version`; returns its nonce.
    pub(super) fn on_send(&mut self, system_version: &str, changes: &Changes) -> String {
        let nonce = new_nonce();
        let mut sent = Vec::with_capacity(changes.resources.len());
        for r in &changes.resources {
            let previous = self.known.insert(r.name.clone(), r.version.clone());
            self.told_absent.remove(&r.name);
            sent.push((r.name.clone(), r.version.clone(), previous));
        }
        for n in &changes.removed {
            self.known.remove(n);
            if self.names.contains(n) {
                self.told_absent.insert(n.clone());
            }
        }
        self.pending.push_back(Pending {
            nonce: nonce.clone(),
            system_version: system_version.to_string(),
            sent,
        });
        while self.pending.len() > MAX_PENDING {
            self.pending.pop_front();
        }
        nonce
    }

    /// Matches a request's `response_nonce` and `error_detail` with the response it answers.
    /// A NACK restores the versions the client kept and remembers the rejected ones.
    pub(super) fn on_reply(&mut self, nonce: &str, error: Option<&str>) -> Reply {
        if nonce.is_empty() {
            return Reply::None;
        }
        let Some(i) = self.pending.iter().position(|p| p.nonce == nonce) else {
            return Reply::Stale;
        };
        // Envoy answers in order: older responses were answered already.
        let p = self.pending.drain(..=i).next_back();
        let Some(p) = p else {
            return Reply::Stale;
        };
        match error {
            None => {
                for (name, _, _) in &p.sent {
                    self.nacked.remove(name);
                }
                Reply::Ack {
                    system_version: p.system_version,
                }
            }
            Some(error) => {
                let mut resources = Vec::with_capacity(p.sent.len());
                for (name, version, previous) in p.sent {
                    if self.known.get(&name) == Some(&version) {
                        match previous {
                            Some(v) if self.wants(&name) => {
                                self.known.insert(name.clone(), v);
                            }
                            _ => {
                                self.known.remove(&name);
                            }
                        }
                    }
                    resources.push(format!("{name}@{version}"));
                    self.nacked.insert(name, version);
                }
                Reply::Nack {
                    system_version: p.system_version,
                    error: error.to_string(),
                    resources,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::envoy::envoy::config::cluster::v3::Cluster;
    use mesh_proto::type_url;

    fn clusters(items: &[(&str, u32)]) -> TypeResources {
        TypeResources::encode(
            type_url::CLUSTER,
            items.iter().map(|(n, generation)| {
                (
                    n.to_string(),
                    Cluster {
                        name: n.to_string(),
                        alt_stat_name: format!("{n}-{generation}"),
                        ..Cluster::default()
                    },
                )
            }),
        )
    }

    fn names(c: &Changes) -> (Vec<&str>, Vec<&str>) {
        (
            c.resources.iter().map(|r| r.name.as_str()).collect(),
            c.removed.iter().map(String::as_str).collect(),
        )
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn wildcard_diff_ack_and_removal() {
        let mut st = DeltaState::default();
        assert!(st.subscribe(XdsType::Cluster, &[], &[], &HashMap::new()));
        let v1 = clusters(&[("a", 1), ("b", 1)]);
        let c = st.changes(&v1);
        assert_eq!(names(&c), (vec!["a", "b"], vec![]));
        let n = st.on_send(&v1.version, &c);
        assert!(st.changes(&v1).is_empty(), "sent versions are not re-sent");
        assert_eq!(
            st.on_reply(&n, None),
            Reply::Ack {
                system_version: v1.version.clone()
            }
        );
        assert_eq!(st.on_reply(&n, None), Reply::Stale);
        let v2 = clusters(&[("a", 2)]);
        assert_eq!(names(&st.changes(&v2)), (vec!["a"], vec!["b"]));
        assert!(!st.subscribe(XdsType::Cluster, &[], &[], &HashMap::new()));
    }

    #[test]
    fn named_subscription_initial_versions_and_absent_names() {
        let v1 = clusters(&[("a", 1), ("b", 1), ("c", 1)]);
        let mut st = DeltaState::default();
        let initial = HashMap::from([
            ("a".to_string(), v1.get("a").unwrap().version.clone()),
            ("gone".to_string(), "old".to_string()),
        ]);
        st.subscribe(
            XdsType::Endpoint,
            &s(&["a", "b", "gone", "x"]),
            &[],
            &initial,
        );
        let c = st.changes(&v1);
        assert_eq!(names(&c), (vec!["b"], vec!["gone", "x"]));
        st.on_send(&v1.version, &c);
        assert!(st.changes(&v1).is_empty(), "absent names are reported once");
        st.subscribe(XdsType::Endpoint, &[], &s(&["b"]), &HashMap::new());
        let v2 = clusters(&[("a", 1), ("b", 2), ("x", 1)]);
        assert_eq!(names(&st.changes(&v2)), (vec!["x"], vec![]));
        // An EDS first request with no names is not a wildcard.
        let mut eds = DeltaState::default();
        eds.subscribe(XdsType::Endpoint, &[], &[], &HashMap::new());
        assert!(eds.changes(&v1).is_empty());
        eds.subscribe(XdsType::Endpoint, &s(&[WILDCARD]), &[], &HashMap::new());
        assert_eq!(eds.changes(&v1).resources.len(), 3);
    }

    #[test]
    fn changes_among_agrees_with_changes_on_the_named_resources() {
        let mut st = DeltaState::default();
        st.subscribe(
            XdsType::Endpoint,
            &s(&["a", "b", "c"]),
            &[],
            &HashMap::new(),
        );
        let v1 = clusters(&[("a", 1), ("b", 1), ("c", 1)]);
        st.on_send(&v1.version, &st.changes(&v1));
        let v2 = clusters(&[("a", 2), ("b", 1), ("d", 1)]);
        let hint: BTreeSet<String> = ["a", "c", "d"].iter().map(|n| n.to_string()).collect();
        // d is not subscribed; c went away; b did not change (and is not in the hint).
        assert_eq!(names(&st.changes_among(&v2, &hint)), (vec!["a"], vec!["c"]));
        assert_eq!(st.changes_among(&v2, &hint), st.changes(&v2));
    }

    #[test]
    fn nack_keeps_previous_version_and_blocks_resend() {
        let mut st = DeltaState::default();
        st.subscribe(XdsType::Cluster, &[], &[], &HashMap::new());
        let v1 = clusters(&[("a", 1), ("b", 1)]);
        let n1 = st.on_send(&v1.version, &st.changes(&v1));
        st.on_reply(&n1, None);
        let v2 = clusters(&[("a", 2), ("b", 1)]);
        let n2 = st.on_send(&v2.version, &st.changes(&v2));
        let Reply::Nack { resources, .. } = st.on_reply(&n2, Some("bad")) else {
            panic!("not a NACK")
        };
        assert_eq!(
            resources,
            vec![format!("a@{}", v2.get("a").unwrap().version)]
        );
        assert!(st.changes(&v2).is_empty(), "rejected version not re-sent");
        let v3 = clusters(&[("a", 3), ("b", 1)]);
        assert_eq!(names(&st.changes(&v3)), (vec!["a"], vec![]));
        // Back to what the client kept: nothing to send.
        assert!(st.changes(&v1).is_empty());
    }
}
