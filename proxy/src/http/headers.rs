//! Header handling on the forwarding path: hop-by-hop removal, request ids, the authority.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, HOST, HeaderName, HeaderValue};
use http::{HeaderMap, Request};
use rand::Rng;

/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-forwarded-client-cert`.
pub static XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// `keep-alive` (no constant in `http`).
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// `proxy-connection`.
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The hop-by-hop headers (RFC 9110 and the usual non-standard ones), by index in a bit set.
fn hop_by_hop() -> [&'static HeaderName; 8] {
    [
        &CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &http::header::PROXY_AUTHENTICATE,
        &http::header::PROXY_AUTHORIZATION,
        &http::header::TE,
        &http::header::TRAILER,
        &http::header::UPGRADE,
    ]
}

/// The bit of `name` in the hop-by-hop set, if it is one.
fn hop_by_hop_bit(name: &HeaderName) -> Option<u8> {
    let bit = match name.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "upgrade" => 7,
        _ => return None,
    };
    Some(1 << bit)
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
/// (`transfer-encoding` is left to hyper, which re-frames the body on each hop.)
/// Kept for the next hop: an upgrade's `Connection: upgrade` + `Upgrade` (requests and the
/// 101), and `te: trailers` (gRPC).
///
/// One pass over the names finds which are present; only those are removed (most messages
/// carry none, or only `Connection: keep-alive`).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let present = headers
        .keys()
        .filter_map(hop_by_hop_bit)
        .fold(0u8, |set, bit| set | bit);
    if present == 0 {
        return;
    }
    let upgrade = super::server::wants_upgrade(headers)
        .then(|| headers.get(http::header::UPGRADE).cloned())
        .flatten();
    let te_trailers = headers
        .get(http::header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    strip_all_hop_by_hop(headers, present);
    if let Some(u) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(http::header::UPGRADE, u);
    }
    if te_trailers {
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Removes the hop-by-hop headers in the bit set `present`, and those `Connection` names.
fn strip_all_hop_by_hop(headers: &mut HeaderMap, present: u8) {
    if present & 1 != 0 {
        // Names other than the fixed hop-by-hop ones (which go below anyway).
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|n| {
                !n.eq_ignore_ascii_case("close")
                    && !n.eq_ignore_ascii_case("keep-alive")
                    && !n.eq_ignore_ascii_case("upgrade")
            })
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for (i, h) in hop_by_hop().into_iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(h);
        }
    }
}

/// Adds a random `x-request-id` (a UUID v4) when the request has none.
pub fn ensure_request_id(headers: &mut HeaderMap) {
    if headers.contains_key(&X_REQUEST_ID) {
        return;
    }
    let n: u128 = rand::rng().random();
    // Version 4, variant 10xx.
    let n = (n & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    if let Ok(v) = HeaderValue::from_maybe_shared(id_bytes(&uuid_text(n))) {
        headers.insert(X_REQUEST_ID.clone(), v);
    }
}

/// Request ids per shared block: one allocation serves this many ids.
const IDS_PER_BLOCK: usize = 64;

thread_local! {
    /// The unused rest of the current block of request ids.
    static ID_BLOCK: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// `text` in shared bytes carved from a per-thread block: no allocation per id, and a clone
/// of the header (a retry's copy of the request head) only counts a reference. A block is freed
/// once every id cut from it is dropped.
fn id_bytes(text: &[u8; 36]) -> Bytes {
    ID_BLOCK.with(|block| {
        let mut block = block.borrow_mut();
        if block.capacity() < text.len() {
            *block = BytesMut::with_capacity(text.len() * IDS_PER_BLOCK);
        }
        block.extend_from_slice(text);
        block.split().freeze()
    })
}

/// `n` as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (lower-case hex), without allocating.
fn uuid_text(n: u128) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let mut nibble = 32;
    for (i, slot) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            continue;
        }
        nibble -= 1;
        *slot = HEX[((n >> (nibble * 4)) & 0xf) as usize];
    }
    out
}

/// A request's authority, shared with the request (no copy): the absolute-form URI's, else
/// the `Host` header's (non-empty, visible ASCII). Reads as a `&str`.
#[derive(Debug, Clone)]
pub enum Authority {
    Uri(http::uri::Authority),
    Host(HeaderValue),
}

impl Authority {
    /// The authority of `req`, as [`authority`] finds it.
    pub fn of<B>(req: &Request<B>) -> Option<Self> {
        if let Some(a) = req.uri().authority() {
            return Some(Authority::Uri(a.clone()));
        }
        req.headers()
            .get(HOST)
            .filter(|h| !h.is_empty() && h.to_str().is_ok())
            .map(|h| Authority::Host(h.clone()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Authority::Uri(a) => a.as_str(),
            // Checked to be text when taken.
            Authority::Host(h) => h.to_str().unwrap_or_default(),
        }
    }
}

impl std::ops::Deref for Authority {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The request's authority: from an absolute-form URI (proxy form), else the `Host` header.
pub fn authority<B>(req: &Request<B>) -> Option<String> {
    Authority::of(req).map(|a| a.as_str().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hop_by_hop_header_goes() {
        for h in hop_by_hop() {
            assert!(hop_by_hop_bit(h).is_some(), "{h}");
            let mut m = HeaderMap::new();
            m.insert(h.clone(), "x".parse().unwrap());
            m.insert("end-user", "jason".parse().unwrap());
            strip_hop_by_hop(&mut m);
            assert_eq!(m.len(), 1, "{h}: {m:?}");
        }
        let mut m = HeaderMap::new();
        m.insert("Connection", "Keep-Alive, X-Gone, close".parse().unwrap());
        m.insert("x-gone", "1".parse().unwrap());
        m.insert("Keep-Alive", "timeout=5".parse().unwrap());
        strip_hop_by_hop(&mut m);
        assert!(m.is_empty(), "{m:?}");
    }

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
        let s = id.to_str().unwrap();
        let parts: Vec<&str> = s.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'), "version 4: {s}");
        assert!(
            matches!(&parts[3][..1], "8" | "9" | "a" | "b"),
            "variant: {s}"
        );
        assert!(s.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
        assert_eq!(
            &uuid_text(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
            b"01234567-89ab-cdef-0011-223344556677"
        );
        ensure_request_id(&mut h);
        assert_eq!(h[&X_REQUEST_ID], id);
    }

    #[test]
    fn request_ids_share_blocks_and_stay_distinct() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 * IDS_PER_BLOCK {
            let mut h = HeaderMap::new();
            ensure_request_id(&mut h);
            let id = h[&X_REQUEST_ID].to_str().unwrap().to_string();
            assert_eq!(id.len(), 36);
            assert!(seen.insert(id), "ids repeat");
        }
        // Cut from one block: consecutive ids sit next to each other.
        let a = id_bytes(&[b'a'; 36]);
        let b = id_bytes(&[b'b'; 36]);
        assert_eq!(&a[..], &[b'a'; 36][..]);
        assert_eq!(&b[..], &[b'b'; 36][..]);
        let (pa, pb) = (a.as_ptr() as usize, b.as_ptr() as usize);
        assert!(
            pb == pa + 36 || pb < pa || pb > pa + 36 * IDS_PER_BLOCK,
            "same or new block"
        );
    }

    #[test]
    fn authority_shared_from_proxy_form_or_host() {
        let r = Request::get("http://reviews:9080/x").body(()).unwrap();
        assert_eq!(Authority::of(&r).as_deref(), Some("reviews:9080"));
        let r = Request::get("/x")
            .header("host", "details")
            .body(())
            .unwrap();
        let a = Authority::of(&r).unwrap();
        assert_eq!(&*a, "details");
        assert_eq!(a.to_string(), "details");
        let r = Request::get("/x").header("host", "").body(()).unwrap();
        assert!(Authority::of(&r).is_none());
        let r = Request::get("/x")
            .header("host", HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap())
            .body(())
            .unwrap();
        assert!(Authority::of(&r).is_none(), "not text");
        assert!(Authority::of(&Request::get("/x").body(()).unwrap()).is_none());
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
