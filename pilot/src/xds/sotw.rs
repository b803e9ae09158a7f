//! State-of-the-world ADS: per type URL one version (hash of every resource) and one nonce; a
//! type is re-sent whole when its version changes.

use std::collections::BTreeMap;

use mesh_proto::discovery::{Request, TypeState};
use mesh_proto::envoy::envoy::config::core::v3::Node;
use mesh_proto::envoy::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use super::server::Shared;
use super::stream::{Protocol, Session};
use crate::translate::XdsType;

#[derive(Debug, Default)]
struct Subscription {
    state: TypeState,
    names: Vec<String>,
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
                self.respond(shared, s, t, true, &mut out);
            }
            return out;
        }
        match sub.state.on_request(&req.response_nonce, error.as_deref()) {
            Request::Initial => {
                sub.names = req.resource_names;
                sub.state.reset();
                self.respond(shared, s, t, false, &mut out);
            }
            Request::Ack { version } => {
                tracing::debug!(proxy = %s.proxy.id, r#type = t.short(), version = %version, "ACK");
                if names_changed {
                    sub.names = req.resource_names;
                    self.respond(shared, s, t, true, &mut out);
                }
            }
            Request::Nack { version, error } => {
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

    fn on_change(&mut self, shared: &Shared, s: &Session) -> Vec<DiscoveryResponse> {
        let mut out = Vec::new();
        for t in XdsType::ALL {
            self.respond(shared, s, t, false, &mut out);
        }
        out
    }
}

impl Sotw {
    /// Adds a response for `t` when its version is new to the client (or always, with `force`,
    /// when the client changed the resource names it wants).
    fn respond(
        &mut self,
        shared: &Shared,
        s: &Session,
        t: XdsType,
        force: bool,
        out: &mut Vec<DiscoveryResponse>,
    ) {
        let resources = s.config.get(t);
        let Some(sub) = self.subs.get_mut(&t) else {
            return;
        };
        if !force && !sub.state.should_send(&resources.version) {
            return;
        }
        let nonce = sub.state.on_send(&resources.version);
        let resp = DiscoveryResponse {
            version_info: resources.version.clone(),
            resources: resources.select(&sub.names),
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
