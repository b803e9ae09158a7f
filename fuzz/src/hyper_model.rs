//! How hyper's HTTP/1 server frames a byte stream into requests (hyper 1.x `role.rs`, with
//! httparse, its parser), far enough to say whether a request carrying both `Content-Length`
//! and `Transfer-Encoding` would be served before the proxy's request-head guard steps aside.

/// hyper's default limit on request header lines.
const MAX_HEADERS: usize = 100;

/// The outcome of [`walk_http1`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// hyper would serve the request starting at byte `at`, which has both framing headers.
    Smuggled { at: usize },
    /// The walk ended: end of the bytes, or a point where the guard documents stepping aside
    /// (chunked body, upgrade or CONNECT, repeated `Content-Length`), or where hyper answers
    /// an error or closes the connection.
    Ended,
}

/// hyper's `Content-Length` parser: ASCII digits only, no overflow.
fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// Whether a `Transfer-Encoding` value ends in `chunked` (hyper's `is_chunked_`).
fn is_chunked(v: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(v) else {
        return false;
    };
    s.rsplit(',')
        .next()
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
}

fn has_token(v: &[u8], token: &str) -> bool {
    std::str::from_utf8(v).is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Walks `bytes` as hyper's server would read them, request after request.
pub fn walk_http1(bytes: &[u8]) -> Walk {
    let mut pos = 0;
    while pos < bytes.len() {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let len = match req.parse(&bytes[pos..]) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => return Walk::Ended,
        };
        let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
            return Walk::Ended;
        };
        if http::Uri::try_from(path).is_err()
            || http::Method::from_bytes(method.as_bytes()).is_err()
        {
            return Walk::Ended;
        }
        let http11 = version == 1;
        let mut keep_alive = http11;
        let (mut is_te, mut is_te_chunked, mut is_cl) = (false, false, false);
        let (mut con_len, mut cl_lines) = (None::<u64>, 0);
        let mut upgrade = method == "CONNECT";
        let mut saw_close = false;
        for h in req.headers.iter() {
            if http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
                return Walk::Ended;
            }
            let name = h.name.to_ascii_lowercase();
            match name.as_str() {
                "transfer-encoding" => {
                    if !http11 {
                        return Walk::Ended;
                    }
                    is_te = true;
                    if is_cl {
                        con_len = None;
                    }
                    is_te_chunked = is_chunked(h.value);
                }
                "content-length" => {
                    is_cl = true;
                    cl_lines += 1;
                    if is_te {
                        continue;
                    }
                    let Some(n) = digits(h.value) else {
                        return Walk::Ended;
                    };
                    if con_len.is_some_and(|p| p != n) {
                        return Walk::Ended;
                    }
                    con_len = Some(n);
                }
                "connection" => {
                    if saw_close || has_token(h.value, "close") {
                        saw_close = true;
                        keep_alive = false;
                    } else if !keep_alive {
                        keep_alive = has_token(h.value, "keep-alive");
                    }
                }
                "upgrade" => upgrade = http11,
                _ => {}
            }
        }
        if is_te && !is_te_chunked {
            return Walk::Ended;
        }
        if is_te && is_cl {
            return Walk::Smuggled { at: pos };
        }
        // Where the guard steps aside (documented): from here hyper alone frames the stream.
        if is_te || upgrade || cl_lines > 1 {
            return Walk::Ended;
        }
        if !keep_alive {
            return Walk::Ended;
        }
        let body = con_len.unwrap_or(0);
        match usize::try_from(body)
            .ok()
            .and_then(|b| (pos + len).checked_add(b))
        {
            Some(next) => pos = next,
            None => return Walk::Ended,
        }
    }
    Walk::Ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_conflict_after_length_framed_requests() {
        let ok = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n";
        assert_eq!(walk_http1(ok), Walk::Ended);
        let mut bad = ok.to_vec();
        bad.extend_from_slice(
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(walk_http1(&bad), Walk::Smuggled { at: ok.len() });
        // After a chunked request the guard steps aside: not the model's business.
        let mut chunked =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec();
        chunked.extend_from_slice(&bad);
        assert_eq!(walk_http1(&chunked), Walk::Ended);
    }
}
