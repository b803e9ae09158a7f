//! The xDS apply path: arbitrary bytes decoded as a sequence of `DiscoveryResponse`s (SotW)
//! or `DeltaDiscoveryResponse`s (Delta) and fed to the proxy's ADS session, the object the
//! ADS client runs (decode every resource, apply the type whole, answer ACK or NACK).
//!
//! Input: see `mesh_fuzz::frames`. Checked, for every response:
//! - nothing panics (libFuzzer's `-timeout` catches a hang);
//! - accepted: the last request is an ACK (no `error_detail`) carrying the response's nonce
//!   and type, and the snapshot returned is the session's state;
//! - rejected: the answer is one NACK (with `error_detail` and the response's nonce) and the
//!   accepted state did not change.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_fuzz::frames::{self, Aim};
use mesh_proto::envoy::envoy::config::core::v3::Node;
use mesh_proto::envoy::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};
use mesh_proto::envoy::google::protobuf::Any;
use mesh_proxy::xds::{AdsSession, DeltaSession, ResourceType, XdsState};
use prost::Message;

/// Responses applied per input at most (longer inputs add nothing new).
const MAX_RESPONSES: usize = 16;

fn aim<'a>(sel: u8, url: &mut String, bodies: impl Iterator<Item = &'a mut Any>) {
    match Aim::of(sel) {
        Aim::All(i) => {
            *url = ResourceType::ALL[i].type_url().to_string();
            for b in bodies {
                b.type_url = url.clone();
            }
        }
        Aim::Response(i) => *url = ResourceType::ALL[i].type_url().to_string(),
        Aim::AsIs => {}
    }
}

fn state_json(state: &XdsState) -> String {
    serde_json::to_string(&state.snapshot()).unwrap_or_else(|e| panic!("snapshot: {e}"))
}

fn sotw(frames: &[(u8, &[u8])]) {
    let mut s = AdsSession::new(Node::default());
    drop(s.initial_requests());
    for (sel, msg) in frames.iter().take(MAX_RESPONSES) {
        let Ok(mut resp) = DiscoveryResponse::decode(*msg) else {
            continue;
        };
        aim(*sel, &mut resp.type_url, resp.resources.iter_mut());
        let before = state_json(&s.state);
        let (reqs, result) = s.on_response(&resp);
        let last = reqs.last().expect("every response is answered");
        assert_eq!(last.response_nonce, resp.nonce);
        match result {
            Ok((ty, config)) => {
                assert!(last.error_detail.is_none(), "ACK with an error");
                assert_eq!(last.type_url, ty.type_url());
                assert_eq!(
                    serde_json::to_string(&config).ok(),
                    Some(state_json(&s.state))
                );
            }
            Err(e) => {
                assert_eq!(reqs.len(), 1, "a NACK changes no subscription");
                let detail = last
                    .error_detail
                    .as_ref()
                    .expect("NACK without error_detail");
                assert_eq!(detail.message, e);
                assert_eq!(
                    state_json(&s.state),
                    before,
                    "a NACKed response changed the state"
                );
            }
        }
    }
}

fn delta(frames: &[(u8, &[u8])]) {
    let mut s = DeltaSession::new(Node::default());
    drop(s.initial_requests());
    for (sel, msg) in frames.iter().take(MAX_RESPONSES) {
        let Ok(mut resp) = DeltaDiscoveryResponse::decode(*msg) else {
            continue;
        };
        aim(
            *sel,
            &mut resp.type_url,
            resp.resources
                .iter_mut()
                .filter_map(|r| r.resource.as_mut()),
        );
        let before = state_json(&s.state);
        let out = s.on_response(&resp);
        let last = out.requests.last().expect("every response is answered");
        assert_eq!(last.response_nonce, resp.nonce);
        match out.result {
            Ok((ty, config)) => {
                assert!(last.error_detail.is_none(), "ACK with an error");
                assert_eq!(last.type_url, ty.type_url());
                assert_eq!(
                    serde_json::to_string(&config).ok(),
                    Some(state_json(&s.state))
                );
            }
            Err(e) => {
                assert_eq!(out.requests.len(), 1, "a NACK changes no subscription");
                let detail = last
                    .error_detail
                    .as_ref()
                    .expect("NACK without error_detail");
                assert_eq!(detail.message, e);
                assert_eq!(
                    state_json(&s.state),
                    before,
                    "a NACKed response changed the state"
                );
            }
        }
        // Whatever came, the session can start a new stream.
        if resp.nonce.len() == 1 {
            drop(s.initial_requests());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (flags, frames) = frames::split(data);
    if flags & frames::DELTA != 0 {
        delta(&frames);
    } else {
        sotw(&frames);
    }
});
