//! Delta (incremental) ADS: per type URL the client subscribes and unsubscribes names; each
//! response carries only the resources whose own version changed and the names that went away.

use std::collections::{BTreeMap, BTreeSet};

use mesh_proto::envoy::envoy::config::core::v3::Node;
use mesh_proto::envoy::envoy::service::discovery::v3::DeltaDiscoveryRequest;

use super::delta_state::{DeltaState, Reply};
use super::server::Shared;
use super::status::Nack;
use super::stream::{Protocol, Session};
use super::wire::{DeltaResponse, Picked};
use crate::translate::XdsType;

/// The Delta state of one stream.
#[derive(Debug, Default)]
pub(super) struct Delta {
    types: BTreeMap<XdsType, DeltaState>,
}

impl Protocol for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaResponse;
    const NAME: &'static str = "delta";

    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn on_request(
        &mut self,
        shared: &Shared,
        s: &Session,
        req: DeltaDiscoveryRequest,
    ) -> Vec<DeltaResponse> {
        let Some(t) = XdsType::from_type_url(&req.type_url) else {
            tracing::info!(proxy = %s.proxy.id, type_url = %req.type_url, "ignoring delta request for an unsupported type");
            return Vec::new();
        };
        let st = self.types.entry(t).or_default();
        let error = req.error_detail.as_ref().map(|e| {
            if e.message.is_empty() {
                "(no detail)".to_string()
            } else {
                e.message.clone()
            }
        });
        match st.on_reply(&req.response_nonce, error.as_deref()) {
            Reply::None => {}
            Reply::Ack { system_version } => {
                tracing::debug!(proxy = %s.proxy.id, r#type = t.short(), version = %system_version, "delta ACK");
                shared.status.record(s.stream, t, |ts| {
                    ts.acked_version = Some(system_version);
                });
            }
            Reply::Nack {
                system_version,
                error,
                resources,
            } => {
                tracing::warn!(proxy = %s.proxy.id, r#type = t.short(), version = %system_version, error = %error, resources = ?resources, "proxy rejected delta config");
                shared.metrics.nack(t.short());
                shared.status.record(s.stream, t, |ts| {
                    ts.nacks += 1;
                    ts.last_nack = Some(Nack {
                        version: system_version,
                        error,
                        resources,
                    });
                });
            }
            Reply::Stale => {
                tracing::debug!(proxy = %s.proxy.id, r#type = t.short(), nonce = %req.response_nonce, "stale delta nonce");
            }
        }
        let first = st.subscribe(
            t,
            &req.resource_names_subscribe,
            &req.resource_names_unsubscribe,
            &req.initial_resource_versions,
        );
        let resubscribed =
            !req.resource_names_subscribe.is_empty() || !req.resource_names_unsubscribe.is_empty();
        if !first && !resubscribed {
            return Vec::new();
        }
        // The first request of a type is always answered, even with nothing to send, so that a
        // client waiting for its initial fetch can go on.
        respond(shared, s, t, st, first, None).into_iter().collect()
    }

    fn awaiting_answer(&self) -> bool {
        self.types.values().any(DeltaState::awaiting_answer)
    }

    fn on_change(
        &mut self,
        shared: &Shared,
        s: &Session,
        eds_changed: Option<&BTreeSet<String>>,
    ) -> Vec<DeltaResponse> {
        XdsType::ALL
            .into_iter()
            .filter_map(|t| {
                let st = self.types.get_mut(&t)?;
                let only = eds_changed.filter(|_| t == XdsType::Endpoint);
                respond(shared, s, t, st, false, only)
            })
            .collect()
    }
}

/// A response with what the client lacks of `t`, if anything (or always, with `always`).
/// With `only`, nothing but those names may have changed since the last push.
fn respond(
    shared: &Shared,
    s: &Session,
    t: XdsType,
    st: &mut DeltaState,
    always: bool,
    only: Option<&BTreeSet<String>>,
) -> Option<DeltaResponse> {
    let current = s.config.get(t);
    let changes = match only {
        Some(names) => st.changes_among(current, names),
        None => st.changes(current),
    };
    if changes.is_empty() && !always {
        return None;
    }
    let nonce = st.on_send(&current.version, &changes);
    tracing::debug!(proxy = %s.proxy.id, r#type = t.short(), version = %current.version,
        resources = changes.resources.len(), removed = changes.removed.len(), "delta push");
    shared.metrics.push(t.short());
    shared.status.record(s.stream, t, |ts| {
        ts.sent_version = Some(current.version.clone());
        ts.pushes += 1;
    });
    Some(DeltaResponse {
        system_version_info: current.version.clone(),
        resources: Picked::new(
            s.config.shared(t).clone(),
            changes.resources.iter().map(|c| c.index).collect(),
        ),
        type_url: t.type_url(),
        removed_resources: changes.removed,
        nonce,
    })
}
