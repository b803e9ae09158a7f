//! The server name (SNI) of a TLS ClientHello, read from the first bytes of a connection
//! without terminating TLS (passthrough by SNI).

/// What the bytes so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sni {
    /// A ClientHello naming this server.
    Name(String),
    /// A ClientHello without a server name, or not TLS at all.
    None,
    /// The ClientHello is not complete yet.
    NeedMore,
}

/// Largest ClientHello record read while looking for the name.
pub const MAX_HELLO: usize = 16 * 1024 + 5;

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
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

/// Parses the SNI from `buf`, the first bytes of a connection (only the first TLS record is
/// read; ClientHellos spanning several records are treated as having no name).
pub fn parse(buf: &[u8]) -> Sni {
    if buf.is_empty() {
        return Sni::NeedMore;
    }
    if buf[0] != 0x16 {
        return Sni::None;
    }
    if buf.len() < 5 {
        return Sni::NeedMore;
    }
    let record_len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if buf.len() < 5 + record_len {
        return if 5 + record_len > MAX_HELLO {
            Sni::None
        } else {
            Sni::NeedMore
        };
    }
    hello_name(&buf[5..5 + record_len]).map_or(Sni::None, Sni::Name)
}

fn hello_name(record: &[u8]) -> Option<String> {
    let mut r = Reader { b: record };
    if r.u8()? != 1 {
        return None; // not a ClientHello
    }
    let len = r.take(3)?;
    let len = (usize::from(len[0]) << 16) | (usize::from(len[1]) << 8) | usize::from(len[2]);
    let mut h = Reader { b: r.take(len)? };
    h.take(2 + 32)?; // version, random
    h.vec8()?; // session id
    h.vec16()?; // cipher suites
    h.vec8()?; // compression methods
    let mut exts = Reader { b: h.vec16()? };
    while !exts.b.is_empty() {
        let ty = exts.u16()?;
        let data = exts.vec16()?;
        if ty != 0 {
            continue;
        }
        let mut list = Reader {
            b: Reader { b: data }.vec16()?,
        };
        while !list.b.is_empty() {
            let kind = list.u8()?;
            let name = list.vec16()?;
            if kind == 0 {
                return std::str::from_utf8(name).ok().map(str::to_ascii_lowercase);
            }
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Arc;

    /// A real ClientHello from rustls for `name`.
    pub fn client_hello(name: &str) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut conn = rustls::ClientConnection::new(
            Arc::new(cfg),
            rustls::pki_types::ServerName::try_from(name.to_string()).unwrap(),
        )
        .unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn reads_the_name_of_a_real_client_hello() {
        let hello = client_hello("DB.Example.com");
        assert_eq!(parse(&hello), Sni::Name("db.example.com".into()));
        for cut in [0, 3, 5, 40, hello.len() - 1] {
            assert_eq!(parse(&hello[..cut]), Sni::NeedMore, "cut at {cut}");
        }
    }

    #[test]
    fn not_tls_or_garbage_has_no_name() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Sni::None);
        assert_eq!(parse(&[0x16, 3, 1, 0, 4, 9, 9, 9, 9]), Sni::None);
        // A record longer than any ClientHello the proxy reads.
        assert_eq!(parse(&[0x16, 3, 1, 0xff, 0xff]), Sni::None);
    }
}
