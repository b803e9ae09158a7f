//! State-of-the-world ADS: per type URL one version (hash of every resource) and one nonce; a
//! type is re-sent whole when its version changes.

use std::collections::{BTreeMap, HashSet};

use mesh_proto::discovery::{Request, TypeState};
use mesh_proto::envoy::envoy::config::core::v3::Node;
use mesh_proto::envoy::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use super::server::Shared;
use super::stream::{Protocol, Session};
use crate::translate::{EncodedResource, XdsType};

#[derive(Debug, Default)]
struct Subscription {
    state: TypeState,
    names: Vec<String>,
    /// The last response sent is not answered yet.
    unanswered: bool,
}

/// The SotW state of one stream.
#[derive(Debug, Default)]
pub(super) struct Sotw {
    subs: BTreeMap<XdsType, Subscription>,
}

impl Protocol for Sotw {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    const NAME: &'static str = "sotw";

    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn on_request(
        &mut self,
        shared: &Shared,
        s: &Session,
        req: DiscoveryRequest,
    ) -> Vec<DiscoveryResponse> {
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
        let sub = self.subs.entry(t).or_default();
        let names_changed = t.named() && sub.names != req.resource_names;
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
                sub.names = req.resource_names;
                self.respond(shared, s, t, &mut out);
            }
            return out;
        }
        match sub.state.on_request(&req.response_nonce, error.as_deref()) {
            Request::Initial => {
                sub.names = req.resource_names;
                sub.state.reset();
                self.respond(shared, s, t, &mut out);
            }
            Request::Ack { version } => {
                sub.unanswered = false;
                tracing::debug!(proxy = %s.proxy.id, r#type = t.short(), version = %version, "ACK");
                if names_changed {
                    sub.names = req.resource_names;
                    self.respond(shared, s, t, &mut out);
                }
            }
            Request::Nack { version, error } => {
                sub.unanswered = false;
                tracing::warn!(proxy = %s.proxy.id, r#type = t.short(), version = %version, error = %error, "proxy rejected config");
                shared.metrics.nack(t.short());
                sub.names = req.resource_names;
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

    fn on_change(&mut self, shared: &Shared, s: &Session) -> Vec<DiscoveryResponse> {
        let mut out = Vec::new();
        for t in XdsType::ALL {
            self.respond(shared, s, t, &mut out);
        }
        out
    }
}

impl Sotw {
    /// Adds a response for `t` when the version of what the client asks for is new to it: a
    /// names change that selects the same resources sends nothing, and a rejected version is not
    /// sent again.
    fn respond(
        &mut self,
        shared: &Shared,
        s: &Session,
        t: XdsType,
        out: &mut Vec<DiscoveryResponse>,
    ) {
        let resources = s.config.get(t);
        let Some(sub) = self.subs.get_mut(&t) else {
            return;
        };
        // A proxy naming what it wants gets a version of just those: a change elsewhere in the
        // type is not pushed to it.
        let wanted: Option<HashSet<&str>> =
            (!sub.names.is_empty()).then(|| sub.names.iter().map(String::as_str).collect());
        let selected = || {
            resources
                .resources
                .iter()
                .filter(|r| wanted.as_ref().is_none_or(|w| w.contains(r.name.as_str())))
        };
        // Named types are versioned by what is selected, so that naming every resource and
        // naming none (= all) give the same version.
        let version = if t.named() {
            selection_version(selected())
        } else {
            resources.version.clone()
        };
        if !sub.state.should_send(&version) {
            return;
        }
        let nonce = sub.state.on_send(&version);
        sub.unanswered = true;
        let resp = DiscoveryResponse {
            version_info: version,
            resources: selected().map(|r| r.resource.clone()).collect(),
            type_url: t.type_url().to_string(),
            nonce,
            ..DiscoveryResponse::default()
        };
        tracing::debug!(proxy = %s.proxy.id, r#type = t.short(), version = %resp.version_info, resources = resp.resources.len(), "push");
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
