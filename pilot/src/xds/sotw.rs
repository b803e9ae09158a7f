//! State-of-the-world ADS: per type URL one version and one nonce; a type is re-sent whole when
//! its version changes, except that an endpoints-only push sends EDS clients just the load
//! assignments that changed. That is allowed by the xDS protocol: in SotW only Listener and
//! Cluster responses must hold every resource; for EDS and RDS a response may carry a subset
//! and a resource left out is kept by the client, not removed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mesh_proto::discovery::{Request, TypeState};
use mesh_proto::envoy::envoy::config::core::v3::Node;

use super::names::{Names, contains};
use super::request::SotwRequest;
use super::server::Shared;
use super::stream::{Protocol, Session};
use super::wire::{Picked, SotwResponse};
use crate::translate::{EncodedResource, XdsType};

#[derive(Debug, Default)]
struct Subscription {
    state: TypeState,
    /// Sorted; empty = every resource.
    names: Names,
    /// The last response sent is not answered yet.
    unanswered: bool,
    /// The version of what the client holds after the responses sent (also after a push that
    /// sent it nothing, because nothing it names changed).
    content: Option<String>,
    /// Everything sent so far was accepted (or not answered yet): incremental EDS may build on
    /// it. A NACK clears it until the next whole response.
    clean: bool,
    /// The names select every resource of the type (so its version is the type's).
    covers_all: bool,
}

/// The SotW state of one stream.
#[derive(Debug, Default)]
pub(super) struct Sotw {
    subs: BTreeMap<XdsType, Subscription>,
}

impl Protocol for Sotw {
    type Request = SotwRequest;
    type Response = SotwResponse;
    const NAME: &'static str = "sotw";

    fn node(req: &SotwRequest) -> Option<&Node> {
        req.rest.node.as_ref()
    }

    fn on_request(&mut self, shared: &Shared, s: &Session, req: SotwRequest) -> Vec<SotwResponse> {
        let SotwRequest {
            rest: req,
            names: raw_names,
        } = req;
        let mut out = Vec::new();
        let Some(t) = XdsType::from_type_url(&req.type_url) else {
            tracing::info!(proxy = %s.proxy.id, type_url = %req.type_url, "ignoring request for an unsupported type");
            return out;
        };
        let error = req.error_detail.as_ref().map(|st| {
            if st.message.is_empty() {
                "(no detail)".to_string()
            } else {
                st.message.clone()
            }
        });
        let held = self.subs.get(&t).map(|sub| &sub.names);
        let names = if !t.named() {
            Names::default()
        } else if let Some(held) = held.filter(|n| !n.is_empty() && raw_names.same_as(n)) {
            // An ACK naming what the stream named already (an EDS ACK names every cluster):
            // compared in the received bytes, no name decoded, sorted, hashed or looked up.
            held.clone()
        } else {
            match raw_names.into_strings() {
                Ok(names) => shared.names.intern(names),
                Err(e) => {
                    tracing::warn!(proxy = %s.proxy.id, r#type = t.short(), error = %e, "ignoring request");
                    return out;
                }
            }
        };
        let sub = self.subs.entry(t).or_default();
        let names_changed = sub.names != names;
        // Answering the latest nonce without error but with another version than the one sent
        // is not an ACK: the client keeps an older version (after a NACK) and only changes its
        // names.
        let keeps_older = error.is_none()
            && sub
                .state
                .sent
                .as_ref()
                .is_some_and(|(v, n)| *n == req.response_nonce && *v != req.version_info);
        if keeps_older {
            if names_changed {
                sub.names = names;
                self.respond(shared, s, t, None, &mut out);
            }
            return out;
        }
        match sub.state.on_request(&req.response_nonce, error.as_deref()) {
            Request::Initial => {
                sub.names = names;
                sub.state.reset();
                sub.content = None;
                sub.clean = false;
                self.respond(shared, s, t, None, &mut out);
            }
            Request::Ack { version } => {
                sub.unanswered = false;
                tracing::debug!(proxy = %s.proxy.id, r#type = t.short(), version = %version, "ACK");
                if names_changed {
                    sub.names = names;
                    self.respond(shared, s, t, None, &mut out);
                }
            }
            Request::Nack { version, error } => {
                sub.unanswered = false;
                sub.clean = false;
                tracing::warn!(proxy = %s.proxy.id, r#type = t.short(), version = %version, error = %error, "proxy rejected config");
                shared.metrics.nack(t.short());
                sub.names = names;
            }
            Request::Stale => {
                tracing::debug!(proxy = %s.proxy.id, r#type = t.short(), nonce = %req.response_nonce, "stale request ignored");
            }
        }
        if let Some(sub) = self.subs.get(&t) {
            shared.status.update(s.stream, t, &sub.state, false);
        }
        out
    }

    fn awaiting_answer(&self) -> bool {
        self.subs.values().any(|s| s.unanswered)
    }

    fn on_change(
        &mut self,
        shared: &Shared,
        s: &Session,
        eds_changed: Option<&BTreeSet<String>>,
    ) -> Vec<SotwResponse> {
        let mut out = Vec::new();
        for t in XdsType::ALL {
            let hint = eds_changed.filter(|_| t == XdsType::Endpoint);
            self.respond(shared, s, t, hint, &mut out);
        }
        out
    }
}

impl Sotw {
    /// Adds a response for `t` when the version of what the client asks for is new to it: a
    /// names change that selects the same resources sends nothing, and a rejected version is not
    /// sent again. With `changed` (the only resources of `t` that changed since the client's
    /// last push), only those it names are sent, when it holds the rest already.
    fn respond(
        &mut self,
        shared: &Shared,
        s: &Session,
        t: XdsType,
        changed: Option<&BTreeSet<String>>,
        out: &mut Vec<SotwResponse>,
    ) {
        let resources = s.config.get(t);
        let Some(sub) = self.subs.get_mut(&t) else {
            return;
        };
        // A proxy naming what it wants gets a version of just those: a change elsewhere in the
        // type is not pushed to it.
        let names = sub.names.clone();
        let wanted = |name: &str| names.is_empty() || contains(&names, name);
        let selected = || resources.resources.iter().filter(|r| wanted(&r.name));
        let incremental = changed.filter(|_| t.named() && sub.clean && sub.content.is_some());
        let (version, send): (String, Arc<[u32]>) = match incremental {
            Some(changed) => {
                // Load assignments do not come and go in an endpoints-only push: whether the
                // names cover every resource is still what it was at the last whole response.
                let version = if sub.covers_all {
                    resources.version.clone()
                } else {
                    selection_version(selected())
                };
                let send: Arc<[u32]> = changed
                    .iter()
                    .filter(|n| wanted(n))
                    .filter_map(|n| resources.position(n))
                    .filter_map(|i| u32::try_from(i).ok())
                    .collect();
                if send.is_empty() {
                    // Nothing it names changed: it holds this version already.
                    sub.content = Some(version);
                    return;
                }
                (version, send)
            }
            None => {
                // The same names over the same resources select the same: computed once for
                // every stream naming them.
                let shared_set = s.config.shared(t);
                let selection = if t.named() {
                    shared.selections.select(&names, shared_set)
                } else {
                    shared.selections.all(shared_set)
                };
                if sub.clean && sub.content.as_deref() == Some(selection.version.as_str()) {
                    return;
                }
                sub.covers_all = selection.covers_all;
                (selection.version.clone(), selection.picks.clone())
            }
        };
        if !sub.state.should_send(&version) {
            return;
        }
        let nonce = sub.state.on_send(&version);
        sub.unanswered = true;
        sub.clean = true;
        sub.content = Some(version.clone());
        let resp = SotwResponse {
            version_info: version,
            resources: Picked::new(s.config.shared(t).clone(), send),
            type_url: t.type_url(),
            nonce,
        };
        tracing::debug!(proxy = %s.proxy.id, r#type = t.short(), version = %resp.version_info, resources = resp.resources.len(), incremental = incremental.is_some(), "push");
        shared.metrics.push(t.short());
        shared.status.update(s.stream, t, &sub.state, true);
        out.push(resp);
    }
}

/// The version of a selection of resources: a hash of their names and own versions.
fn selection_version<'a>(selected: impl Iterator<Item = &'a EncodedResource>) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    for r in selected {
        r.name.hash(&mut h);
        r.version.hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

/// What a list of names selects of a set of resources.
#[derive(Debug)]
pub(super) struct Selection {
    pub(super) picks: Arc<[u32]>,
    /// The type's version when the names cover every resource, else the selection's.
    pub(super) version: String,
    pub(super) covers_all: bool,
}

/// Selections kept before the cache is emptied (each holds its names and resource set).
const MAX_SELECTIONS: usize = 256;
/// Sets of at most this many resources are not cached.
const SMALL_SET: usize = 8;

type SelectionKey = (Names, Arc<crate::translate::TypeResources>);

/// Selections by (names, resources), compared by pointer: thousands of streams naming the same
/// (interned) list in the same push share one.
#[derive(Debug, Default)]
pub(super) struct Selections {
    cache: parking_lot::Mutex<Vec<(SelectionKey, Arc<Selection>)>>,
}

impl Selections {
    /// Every resource of `set`.
    pub(super) fn all(&self, set: &Arc<crate::translate::TypeResources>) -> Arc<Selection> {
        self.select(&Names::default(), set)
    }

    /// What `names` (sorted; empty = all) select of `set`.
    pub(super) fn select(
        &self,
        names: &Names,
        set: &Arc<crate::translate::TypeResources>,
    ) -> Arc<Selection> {
        // A small set (a proxy's own LDS, with its inbound listener) is selected on the spot:
        // caching thousands of one-stream sets would only push the shared ones out.
        if set.resources.len() <= SMALL_SET {
            return Arc::new(Self::compute(names, set));
        }
        let found = self
            .cache
            .lock()
            .iter()
            .find(|((n, s), _)| Arc::ptr_eq(n, names) && Arc::ptr_eq(s, set))
            .map(|(_, sel)| sel.clone());
        if let Some(sel) = found {
            return sel;
        }
        let sel = Arc::new(Self::compute(names, set));
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_SELECTIONS {
            cache.clear();
        }
        cache.push(((names.clone(), set.clone()), sel.clone()));
        sel
    }

    fn compute(names: &Names, set: &crate::translate::TypeResources) -> Selection {
        let picks: Arc<[u32]> = set
            .resources
            .iter()
            .enumerate()
            .filter(|(_, r)| names.is_empty() || contains(names, &r.name))
            .filter_map(|(i, _)| u32::try_from(i).ok())
            .collect();
        let covers_all = picks.len() == set.resources.len();
        // Versioned by what is selected, so that naming every resource and naming none (= all)
        // give the same version.
        let version = if covers_all {
            set.version.clone()
        } else {
            selection_version(picks.iter().filter_map(|i| set.resources.get(*i as usize)))
        };
        Selection {
            picks,
            version,
            covers_all,
        }
    }
}
