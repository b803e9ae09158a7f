//! Header handling on the forwarding path: hop-by-hop removal, request ids, the authority.

use http::header::{CONNECTION, HOST, HeaderName, HeaderValue};
use http::{HeaderMap, Request};
use rand::Rng;

/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-forwarded-client-cert`.
pub static XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
/// (`transfer-encoding` is left to hyper, which re-frames the body on each hop.)
/// Kept for the next hop: an upgrade's `Connection: upgrade` + `Upgrade` (requests and the
/// 101), and `te: trailers` (gRPC).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let upgrade = super::server::wants_upgrade(headers)
        .then(|| headers.get(http::header::UPGRADE).cloned())
        .flatten();
    let te_trailers = headers
        .get(http::header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    strip_all_hop_by_hop(headers);
    if let Some(u) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(http::header::UPGRADE, u);
    }
    if te_trailers {
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    }
}

fn strip_all_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
}

/// Adds a random `x-request-id` when the request has none.
pub fn ensure_request_id(headers: &mut HeaderMap) {
    if headers.contains_key(&X_REQUEST_ID) {
        return;
    }
    let n: u128 = rand::rng().random();
    let s = format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        (n >> 96) as u32,
        (n >> 80) as u16,
        (n >> 68) as u16 & 0xfff,
        ((n >> 52) as u16 & 0x3fff) | 0x8000,
        n as u64 & 0xffff_ffff_ffff
    );
    if let Ok(v) = HeaderValue::from_str(&s) {
        headers.insert(X_REQUEST_ID.clone(), v);
    }
}

/// The request's authority: from an absolute-form URI (proxy form), else the `Host` header.
pub fn authority<B>(req: &Request<B>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_string());
    }
    req.headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("end-user", "jason".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("end-user"));
    }

    #[test]
    fn upgrade_and_te_trailers_survive_the_hop() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, Upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 3, "{h:?}");
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["te"], "trailers");
        // Without `Connection: upgrade`, `Upgrade` is an ordinary hop-by-hop header.
        let mut h = HeaderMap::new();
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("te", "gzip".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn request_id_added_once() {
        let mut h = HeaderMap::new();
        ensure_request_id(&mut h);
        let id = h[&X_REQUEST_ID].clone();
        assert_eq!(id.len(), 36);
        ensure_request_id(&mut h);
        assert_eq!(h[&X_REQUEST_ID], id);
    }

    #[test]
    fn authority_from_proxy_form_or_host() {
        let r = Request::get("http://reviews:9080/x").body(()).unwrap();
        assert_eq!(authority(&r).as_deref(), Some("reviews:9080"));
        let r = Request::get("/x")
            .header("host", "details")
            .body(())
            .unwrap();
        assert_eq!(authority(&r).as_deref(), Some("details"));
        let r = Request::get("/x").body(()).unwrap();
        assert_eq!(authority(&r), None);
    }
}
