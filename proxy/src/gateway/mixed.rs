//! A gateway port with both TLS-terminating chains (HTTPS, or `protocol: TLS` SIMPLE/MUTUAL)
//! and PASSTHROUGH chains (`tcp_proxy` by SNI, no transport socket): the ClientHello's server
//! name, peeked without consuming it, picks the most specific chain across both kinds (exact
//! name, then the longest `*.suffix`, then a chain without names; a terminating catch-all
//! before a passthrough one), as Envoy's filter chain match does over one listener.

use std::time::Duration;

use tokio::net::TcpStream;

use super::decode::GatewayTlsSpec;
use super::tls::name_match;
use crate::tcp::{MAX_HELLO, Sni, TcpProxy, parse_sni};

/// How long a client may take to send its ClientHello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause between looks at a ClientHello that came in pieces.
const PEEK_PAUSE: Duration = Duration::from_millis(2);

/// The best score of `names` for `sni` (see `tls::name_match`): `Some(0)` for a chain without
/// names, `None` when no chain takes it.
fn best<'a>(chains: impl Iterator<Item = &'a [String]>, sni: Option<&str>) -> Option<usize> {
    chains
        .filter_map(|names| {
            if names.is_empty() {
                return Some(0);
            }
            let sni = sni?;
            names.iter().filter_map(|p| name_match(p, sni)).max()
        })
        .max()
}

/// Whether a connection naming `sni` belongs to a passthrough chain of `tcp` rather than to a
/// terminating chain of `tls`.
pub fn passthrough_wins(tls: &GatewayTlsSpec, tcp: &TcpProxy, sni: Option<&str>) -> bool {
    let terminated = best(tls.chains.iter().map(|c| c.server_names.as_slice()), sni);
    let passthrough = best(tcp.chains.iter().map(|c| c.server_names.as_slice()), sni);
    match (terminated, passthrough) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(t), Some(p)) => p > t,
    }
}

/// The ClientHello's server name, read with `peek` (the bytes stay for whoever serves the
/// connection); `None` when there is none, the bytes are not TLS, or none come in time.
pub async fn peek_sni(stream: &TcpStream) -> Option<String> {
    let look = async {
        let mut buf = vec![0u8; MAX_HELLO];
        let mut last = 0;
        loop {
            let n = stream.peek(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            match parse_sni(&buf[..n]) {
                Sni::Name(name) => return Some(name),
                Sni::None => return None,
                Sni::NeedMore if n >= MAX_HELLO => return None,
                Sni::NeedMore => {}
            }
            // `peek` returns at once while the bytes it saw are unread: wait for more.
            if n == last {
                tokio::time::sleep(PEEK_PAUSE).await;
            }
            last = n;
        }
    };
    tokio::time::timeout(HELLO_TIMEOUT, look)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::{ChainSpec, PemSource};
    use crate::tcp::TcpChain;

    fn tls(names: &[&[&str]]) -> GatewayTlsSpec {
        GatewayTlsSpec {
            chains: names
                .iter()
                .map(|n| ChainSpec {
                    server_names: n.iter().map(|s| s.to_string()).collect(),
                    cert_chain: PemSource::Inline(Vec::new()),
                    private_key: PemSource::Inline(Vec::new()),
                    client_ca: None,
                    require_client_certificate: false,
                    client_sans: Vec::new(),
                    alpn: Vec::new(),
                    tls12: true,
                    tls13: true,
                    tcp: None,
                })
                .collect(),
        }
    }

    fn tcp(names: &[&[&str]]) -> TcpProxy {
        TcpProxy {
            chains: names
                .iter()
                .map(|n| TcpChain {
                    server_names: n.iter().map(|s| s.to_string()).collect(),
                    clusters: vec![("c".into(), 1)],
                })
                .collect(),
        }
    }

    #[test]
    fn the_most_specific_chain_wins_across_terminating_and_passthrough() {
        let t = tls(&[&["web.example.com"], &["*.example.com"]]);
        let p = tcp(&[&["db.example.com"], &["*.a.example.com"]]);
        assert!(passthrough_wins(&t, &p, Some("db.example.com")));
        assert!(!passthrough_wins(&t, &p, Some("web.example.com")));
        assert!(
            passthrough_wins(&t, &p, Some("x.a.example.com")),
            "longer wildcard"
        );
        assert!(!passthrough_wins(&t, &p, Some("x.example.com")));
        assert!(
            !passthrough_wins(&t, &p, Some("other.org")),
            "nobody: refused by TLS"
        );
        assert!(!passthrough_wins(&t, &p, None));
        // A passthrough catch-all takes what no terminating chain names.
        let p = tcp(&[&[]]);
        assert!(passthrough_wins(&t, &p, Some("other.org")));
        assert!(passthrough_wins(&t, &p, None));
        assert!(!passthrough_wins(&t, &p, Some("web.example.com")));
    }

    #[tokio::test]
    async fn the_server_name_is_peeked_without_consuming_the_bytes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let hello = crate::tcp::client_hello_for_tests("db.example.com");
        let (first, rest) = hello.split_at(hello.len() / 2);
        let (first, rest) = (first.to_vec(), rest.to_vec());
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            // In two pieces, the second a little later.
            c.write_all(&first).await.unwrap();
            c.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            c.write_all(&rest).await.unwrap();
            c
        });
        let (mut s, _) = l.accept().await.unwrap();
        assert_eq!(peek_sni(&s).await.as_deref(), Some("db.example.com"));
        let mut all = vec![0u8; hello.len()];
        s.read_exact(&mut all).await.unwrap();
        assert_eq!(all, hello, "the bytes are still there to read");
        drop(client.await.unwrap());
    }
}
