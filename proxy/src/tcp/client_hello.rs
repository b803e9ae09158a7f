//! The proxy's one TLS ClientHello parser: the server name (SNI: passthrough routing, see
//! [`super::sni`]) and the ALPN offer (mesh mTLS or the application's own TLS on a PERMISSIVE
//! port, see `crate::capture`) read from the first bytes of a connection, peeked or buffered,
//! without terminating TLS.
//!
//! The parse borrows from the bytes: a ClientHello inside one TLS record (the usual case) is
//! read in place, and only one split over several handshake records is joined first (the one
//! allocation). Results are handed to a closure so they can borrow from either.

use std::borrow::Cow;

/// Largest ClientHello looked at (one full record; a hello rarely exceeds 2 KiB).
pub const MAX_HELLO: usize = 16 * 1024 + 5;

/// Largest TLS record payload (`TLSPlaintext.length`, RFC 8446 §5.1).
const MAX_RECORD: usize = 16 * 1024;

/// What the first bytes of a connection say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peeked<T> {
    /// A TLS handshake that has not sent its whole ClientHello yet.
    Incomplete,
    /// Not TLS, or not a well-formed ClientHello.
    NotHello,
    /// A complete ClientHello, and what the caller read from it.
    Hello(T),
}

/// The parts of a ClientHello the proxy routes by.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientHello<'a> {
    server_name: Option<&'a [u8]>,
    /// The ALPN `protocol_name_list` (already checked to be well-formed).
    alpn: &'a [u8],
}

impl<'a> ClientHello<'a> {
    /// The first `host_name` of the `server_name` extension, as sent (case kept); `None` when
    /// absent, malformed or not UTF-8.
    pub fn server_name(&self) -> Option<&'a str> {
        self.server_name.and_then(|n| std::str::from_utf8(n).ok())
    }

    /// The offered ALPN protocols, in the client's order (none without the extension).
    pub fn alpn(&self) -> Alpn<'a> {
        Alpn(self.alpn)
    }
}

/// Iterator over a ClientHello's ALPN protocol names.
#[derive(Debug, Clone)]
pub struct Alpn<'a>(&'a [u8]);

impl<'a> Iterator for Alpn<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (&n, rest) = self.0.split_first()?;
        let n = usize::from(n);
        if rest.len() < n {
            self.0 = &[];
            return None;
        }
        let (name, rest) = rest.split_at(n);
        self.0 = rest;
        Some(name)
    }
}

/// Parses the ClientHello at the start of `buf` (one or more TLS handshake records) and, when it
/// is complete and well-formed, returns what `read` takes from it.
pub fn with_client_hello<R>(buf: &[u8], read: impl FnOnce(&ClientHello<'_>) -> R) -> Peeked<R> {
    let hs = match handshake(buf) {
        Ok(hs) => hs,
        Err(Short::Incomplete) => return Peeked::Incomplete,
        Err(Short::NotHello) => return Peeked::NotHello,
    };
    match hello_body(&hs) {
        Some(h) => Peeked::Hello(read(&h)),
        None => Peeked::NotHello,
    }
}

enum Short {
    Incomplete,
    NotHello,
}

/// The ClientHello handshake message's body (after its 4-byte header), gathered from the
/// leading handshake records of `buf`.
fn handshake(buf: &[u8]) -> Result<Cow<'_, [u8]>, Short> {
    match buf {
        [] => return Err(Short::Incomplete),
        [t, ..] if *t != 0x16 => return Err(Short::NotHello),
        [_, major, ..] if *major != 0x03 => return Err(Short::NotHello),
        _ => {}
    }
    let mut hs: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    let mut rest = buf;
    while rest.len() >= 5 {
        if rest[0] != 0x16 || rest[1] != 0x03 {
            // Another record before the hello is whole: it never will be.
            return Err(Short::NotHello);
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len > MAX_RECORD {
            return Err(Short::NotHello);
        }
        let body = &rest[5..rest.len().min(5 + len)];
        if hs.is_empty() {
            hs = Cow::Borrowed(body);
        } else {
            hs.to_mut().extend_from_slice(body);
        }
        if rest.len() < 5 + len {
            break;
        }
        rest = &rest[5 + len..];
        if hello_len(&hs).is_some_and(|n| hs.len() >= n) {
            break;
        }
    }
    if hs.first().is_some_and(|t| *t != 0x01) {
        return Err(Short::NotHello); // a handshake message that is not a ClientHello
    }
    let Some(total) = hello_len(&hs) else {
        return Err(Short::Incomplete);
    };
    if total > MAX_HELLO {
        return Err(Short::NotHello);
    }
    if hs.len() < total {
        return Err(if buf.len() >= MAX_HELLO {
            Short::NotHello
        } else {
            Short::Incomplete
        });
    }
    Ok(match hs {
        Cow::Borrowed(b) => Cow::Borrowed(&b[4..total]),
        Cow::Owned(mut v) => {
            v.truncate(total);
            v.drain(..4);
            Cow::Owned(v)
        }
    })
}

/// The whole length (4-byte header included) of the handshake message starting `hs`.
fn hello_len(hs: &[u8]) -> Option<usize> {
    match hs {
        [_, a, b, c, ..] => {
            Some(4 + ((usize::from(*a) << 16) | (usize::from(*b) << 8) | usize::from(*c)))
        }
        _ => None,
    }
}

/// A byte reader over the ClientHello body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// The SNI and ALPN of a ClientHello body; `None` when its fixed part or its extension block
/// is malformed. A malformed `server_name` or ALPN extension counts as absent.
fn hello_body(body: &[u8]) -> Option<ClientHello<'_>> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    let mut out = ClientHello::default();
    if r.0.is_empty() {
        return Some(out); // no extensions
    }
    let mut exts = Reader(r.vec16()?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec16()?;
        match kind {
            0 if out.server_name.is_none() => out.server_name = host_name(data),
            16 if out.alpn.is_empty() => out.alpn = alpn_list(data).unwrap_or_default(),
            _ => {}
        }
    }
    Some(out)
}

/// The first `host_name` entry of a `server_name` extension.
fn host_name(data: &[u8]) -> Option<&[u8]> {
    let mut list = Reader(Reader(data).vec16()?);
    while !list.0.is_empty() {
        let kind = list.u8()?;
        let name = list.vec16()?;
        if kind == 0 {
            return Some(name);
        }
    }
    None
}

/// The `protocol_name_list` of an ALPN extension, checked entry by entry.
fn alpn_list(data: &[u8]) -> Option<&[u8]> {
    let list = Reader(data).vec16()?;
    let mut r = Reader(list);
    while !r.0.is_empty() {
        r.vec8()?;
    }
    Some(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The first flight of a real rustls client for `name` offering `alpn`.
    fn hello(name: &str, alpn: &[&[u8]]) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let mut conn = rustls::ClientConnection::new(
            Arc::new(cfg),
            rustls::pki_types::ServerName::try_from(name.to_string()).unwrap(),
        )
        .unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    fn both(buf: &[u8]) -> Peeked<(Option<String>, Vec<Vec<u8>>)> {
        with_client_hello(buf, |h| {
            (
                h.server_name().map(str::to_string),
                h.alpn().map(<[u8]>::to_vec).collect(),
            )
        })
    }

    #[test]
    fn one_parse_gives_sni_and_alpn() {
        let buf = hello("Api.Example.com", &[b"h2", b"istio"]);
        assert_eq!(
            both(&buf),
            Peeked::Hello((
                Some("Api.Example.com".to_string()),
                vec![b"h2".to_vec(), b"istio".to_vec()]
            ))
        );
        let none = hello("10.0.0.1", &[]);
        assert_eq!(both(&none), Peeked::Hello((None, vec![])), "IP: no SNI");
    }

    #[test]
    fn a_hello_split_over_records_is_joined() {
        let buf = hello("db.example.com", &[b"istio-tcp"]);
        let body = &buf[5..];
        let mut split = Vec::new();
        for part in body.chunks(100) {
            split.extend_from_slice(&[0x16, 0x03, 0x01]);
            split.extend_from_slice(&u16::try_from(part.len()).unwrap().to_be_bytes());
            split.extend_from_slice(part);
        }
        assert_eq!(both(&split), both(&buf));
        // Cut inside the second record: more is needed.
        assert_eq!(both(&split[..150]), Peeked::Incomplete);
        // A non-handshake record before the hello is whole.
        let mut alert = split[..105].to_vec();
        alert.extend_from_slice(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]);
        assert_eq!(both(&alert), Peeked::NotHello);
    }

    #[test]
    fn not_tls_and_malformed_hellos() {
        assert_eq!(both(b""), Peeked::Incomplete);
        assert_eq!(both(b"G"), Peeked::NotHello);
        assert_eq!(both(&[0x16, 0x02]), Peeked::NotHello);
        // A record longer than TLS allows.
        assert_eq!(both(&[0x16, 3, 1, 0x40, 0x01]), Peeked::NotHello);
        // A ClientHello header claiming more than the proxy reads.
        assert_eq!(both(&[0x16, 3, 1, 0, 4, 1, 0x01, 0, 0]), Peeked::NotHello);
        // A complete, well-framed ClientHello of 30 bytes: too short for its fixed fields.
        let mut short = vec![0x16, 3, 1, 0, 34, 1, 0, 0, 30];
        short.extend_from_slice(&[0u8; 30]);
        assert_eq!(both(&short), Peeked::NotHello);
    }

    #[test]
    fn malformed_alpn_entries_are_not_offered() {
        // An ALPN list whose entry claims more bytes than the list holds.
        assert_eq!(alpn_list(&[0, 3, 5, b'h', b'2']), None);
        assert_eq!(
            alpn_list(&[0, 3, 2, b'h', b'2']),
            Some(&[2, b'h', b'2'][..])
        );
        let names: Vec<&[u8]> = Alpn(&[2, b'h', b'2', 9, b'x']).collect();
        assert_eq!(names, vec![&b"h2"[..]]);
    }
}
