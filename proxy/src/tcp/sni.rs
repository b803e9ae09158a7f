//! The server name (SNI) of a TLS ClientHello, read from the first bytes of a connection
//! without terminating TLS (passthrough by SNI), by [`super::client_hello`].

use super::client_hello::{Peeked, with_client_hello};

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

pub use super::client_hello::MAX_HELLO;

/// Parses the SNI from `buf`, the first bytes of a connection (a ClientHello split over several
/// handshake records is read too), lower-cased.
pub fn parse(buf: &[u8]) -> Sni {
    match with_client_hello(buf, |h| h.server_name().map(str::to_ascii_lowercase)) {
        Peeked::Hello(Some(name)) => Sni::Name(name),
        Peeked::Hello(None) | Peeked::NotHello => Sni::None,
        Peeked::Incomplete => Sni::NeedMore,
    }
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
