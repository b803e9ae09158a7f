//! Mesh mTLS or an application's own TLS? On a PERMISSIVE inbound port both start with a TLS
//! ClientHello; Istio tells them apart by ALPN (its `tls_inspector` + filter chain match on
//! `application_protocols`): a sidecar offers one of the mesh protocols below, anything else is
//! the application's TLS and goes to the application untouched, as TCP.
//!
//! The mesh protocols are Istio's (`istio-peer-exchange`, `istio`, `istio-http/1.0`,
//! `istio-http/1.1`, `istio-h2`) and this proxy's own `istio-tcp` (`crate::http::alpn`: every
//! offer of the proxy's upstream TLS client carries one of them).

use std::time::Duration;

use tokio::net::TcpStream;

use crate::tcp::{MAX_HELLO, Peeked, with_client_hello};

/// ALPN values that mark a connection as mesh mTLS from a sidecar.
pub const MESH_ALPN: &[&[u8]] = &[
    b"istio-peer-exchange",
    b"istio",
    b"istio-http/1.0",
    b"istio-http/1.1",
    b"istio-h2",
    b"istio-tcp",
];

/// What the start of a TLS connection says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// More bytes are needed.
    Incomplete,
    /// A ClientHello offering these ALPN protocols (empty: no ALPN extension).
    Alpn(Vec<Vec<u8>>),
    /// Not a (well-formed) ClientHello.
    NotHello,
}

/// The first peek's buffer: enough for nearly every ClientHello (post-quantum key shares
/// included); a fuller hello doubles it, up to [`MAX_HELLO`].
const FIRST_PEEK: usize = 2048;

/// Parses the ClientHello at the start of `buf` (TLS records, possibly several carrying one
/// handshake message) for its ALPN extension (the proxy's one parser,
/// `crate::tcp::with_client_hello`).
pub fn parse_client_hello(buf: &[u8]) -> Hello {
    match with_client_hello(buf, |h| h.alpn().map(<[u8]>::to_vec).collect()) {
        Peeked::Hello(p) => Hello::Alpn(p),
        Peeked::Incomplete => Hello::Incomplete,
        Peeked::NotHello => Hello::NotHello,
    }
}

fn is_mesh_alpn(p: &[u8]) -> bool {
    MESH_ALPN.contains(&p)
}

/// Whether `offered` includes a mesh protocol.
pub fn offers_mesh_alpn(offered: &[Vec<u8>]) -> bool {
    offered.iter().any(|p| is_mesh_alpn(p))
}

/// Whether the TLS connection on `stream` (already known to start with a handshake record) is
/// mesh mTLS, by peeking at its ClientHello (nothing is consumed, nothing is copied out of the
/// peeked bytes). A hello still incomplete after `wait` counts as mesh (the mTLS handshake then
/// decides, as before); a malformed one does not.
pub async fn peek_mesh_tls(stream: &TcpStream, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = vec![0u8; FIRST_PEEK];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) | Err(_) => return true,
        };
        match with_client_hello(&buf[..n], |h| h.alpn().any(is_mesh_alpn)) {
            Peeked::Hello(mesh) => return mesh,
            Peeked::NotHello => return false,
            Peeked::Incomplete if n == 0 => return true,
            Peeked::Incomplete if n == buf.len() && n < MAX_HELLO => {
                // The buffer is full: look again, at once, with room for the rest.
                buf.resize((n * 2).min(MAX_HELLO), 0);
                continue;
            }
            Peeked::Incomplete => {}
        }
        // The bytes stay queued, so peek would answer at once: let the client send more.
        if tokio::time::timeout_at(deadline, tokio::time::sleep(PEEK_AGAIN))
            .await
            .is_err()
        {
            return true;
        }
    }
}

/// How long [`peek_mesh_tls`] waits before looking again at a partial ClientHello.
const PEEK_AGAIN: Duration = Duration::from_millis(5);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The first flight of a real rustls client offering `alpn`.
    fn client_hello(alpn: &[&[u8]]) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let mut conn = rustls::ClientConnection::new(
            Arc::new(cfg),
            rustls::pki_types::ServerName::try_from("app.example.com").unwrap(),
        )
        .unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn alpn_of_real_client_hellos() {
        let hello = client_hello(&[b"istio", b"http/1.1"]);
        assert_eq!(
            parse_client_hello(&hello),
            Hello::Alpn(vec![b"istio".to_vec(), b"http/1.1".to_vec()])
        );
        assert_eq!(parse_client_hello(&client_hello(&[])), Hello::Alpn(vec![]));
        // Cut anywhere: more bytes needed.
        for cut in [1, 5, 40, hello.len() - 1] {
            assert_eq!(
                parse_client_hello(&hello[..cut]),
                Hello::Incomplete,
                "{cut}"
            );
        }
        // Split over two records.
        let body = &hello[5..];
        let (a, b) = body.split_at(30);
        let mut two = vec![0x16, 0x03, 0x01];
        two.extend_from_slice(&(a.len() as u16).to_be_bytes());
        two.extend_from_slice(a);
        two.extend_from_slice(&[0x16, 0x03, 0x01]);
        two.extend_from_slice(&(b.len() as u16).to_be_bytes());
        two.extend_from_slice(b);
        assert_eq!(parse_client_hello(&two), parse_client_hello(&hello));
        assert_eq!(parse_client_hello(b"GET / HTTP/1.1\r\n"), Hello::NotHello);
        // A handshake record that is not a ClientHello.
        assert_eq!(
            parse_client_hello(b"\x16\x03\x01\x00\x04\x02\x00\x00\x00"),
            Hello::NotHello
        );
    }

    #[test]
    fn mesh_protocols_are_istio_s_and_the_proxy_s() {
        for p in [
            &b"istio-peer-exchange"[..],
            b"istio",
            b"istio-http/1.0",
            b"istio-http/1.1",
            b"istio-h2",
            b"istio-tcp",
        ] {
            assert!(offers_mesh_alpn(&[b"h2".to_vec(), p.to_vec()]), "{p:?}");
        }
        assert!(!offers_mesh_alpn(&[b"h2".to_vec(), b"http/1.1".to_vec()]));
        assert!(!offers_mesh_alpn(&[]));
        // Every offer of the proxy's own upstream TLS client is mesh.
        use crate::http::alpn::HopProtocol;
        for p in [HopProtocol::Http1, HopProtocol::Http2, HopProtocol::Tcp] {
            let base = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
            let cfg = crate::http::alpn::client_config(&base, p);
            assert!(offers_mesh_alpn(&cfg.alpn_protocols), "{p:?}");
        }
    }

    #[tokio::test]
    async fn peek_reads_a_hello_larger_than_the_first_buffer_without_consuming_it() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // 40 long protocol names push the hello past the first 2 KiB peek.
        let long: Vec<Vec<u8>> = (0..40)
            .map(|i| format!("app-{i:0>90}").into_bytes())
            .collect();
        let mut offer: Vec<&[u8]> = long.iter().map(Vec::as_slice).collect();
        for (mesh, last) in [(true, &b"istio"[..]), (false, &b"h2"[..])] {
            offer.push(last);
            let hello = client_hello(&offer);
            offer.pop();
            assert!(hello.len() > FIRST_PEEK, "{}", hello.len());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (mut server, _) = listener.accept().await.unwrap();
            client.write_all(&hello).await.unwrap();
            assert_eq!(peek_mesh_tls(&server, Duration::from_secs(5)).await, mesh);
            let mut got = vec![0u8; hello.len()];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(got, hello, "peeking consumed nothing");
        }
    }
}
