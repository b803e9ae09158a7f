//! Request mirroring (Envoy `request_mirror_policies`): a copy of a request whose body was
//! buffered goes to the mirror cluster, fire and forget, with `-shadow` appended to the host
//! (before any port), as Envoy does. The mirror's answer is read and dropped.

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use rand::Rng;

use crate::routing::Mirror;

use super::context::ProxyContext;
use super::retry::RequestHead;
use super::upstream::UpstreamBody;

/// `reviews:9080` → `reviews-shadow:9080`; `reviews` → `reviews-shadow`.
pub fn shadow_host(host: &str) -> String {
    match host.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{h}-shadow:{p}")
        }
        _ => format!("{host}-shadow"),
    }
}

/// Sends the mirrors that their share selects; returns at once.
pub fn send(ctx: &ProxyContext, mirrors: &[Mirror], head: &RequestHead, body: &Bytes) {
    let config = ctx.config.load();
    for m in mirrors {
        if !m.share.hits(rand::rng().random()) {
            continue;
        }
        let Some(cluster) = config.clusters.get(&m.cluster) else {
            ctx.metrics.upstream_error("mirror_unknown_cluster");
            continue;
        };
        let found = config.endpoints_of(cluster);
        let addrs = found.map_or(&[][..], |e| e.addrs.as_slice());
        let state = ctx.upstream.clusters.get(cluster);
        if let Some(e) = found {
            // Endpoint weights for the load balancer.
            state.observe(e);
        }
        let Some(endpoint) = state.pick(addrs, cluster.lb, &[], rand::rng().random()) else {
            ctx.metrics.upstream_error("mirror_no_endpoint");
            continue;
        };
        let tls = match &cluster.tls {
            None => None,
            Some(t) => match crate::tls::upstream_client_config(t, &ctx.identity) {
                Some(cfg) => Some(cfg),
                None => continue,
            },
        };
        let mut req = http::Request::new(UpstreamBody::buffered(body.clone()));
        *req.method_mut() = head.method.clone();
        *req.uri_mut() = head.uri.clone();
        *req.headers_mut() = head.headers.clone();
        let host = head
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(shadow_host);
        if let Some(v) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
            req.headers_mut().insert(HOST, v);
        }
        ctx.upstream
            .send_detached(endpoint, tls, req, m.cluster.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_suffix_goes_before_the_port() {
        assert_eq!(shadow_host("reviews:9080"), "reviews-shadow:9080");
        assert_eq!(shadow_host("reviews"), "reviews-shadow");
        assert_eq!(
            shadow_host("reviews.default.svc.cluster.local"),
            "reviews.default.svc.cluster.local-shadow"
        );
    }
}
