//! Protocol sniffing for a captured connection whose port declares no protocol: the first
//! bytes tell TLS (a handshake record), HTTP/2 (the connection preface), HTTP/1.x (a method
//! token and a space) from anything else, which is TCP. A client that sends nothing (a
//! server-first protocol such as MySQL or SMTP) is TCP once a short wait is over.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

/// What the first bytes of a connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// A TLS handshake record (`0x16 0x03`).
    Tls,
    /// The HTTP/2 connection preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`).
    Http2,
    /// An HTTP/1.x request line (`GET `, `POST `, ...).
    Http1,
    /// Anything else, or nothing within the wait.
    Tcp,
}

impl Sniffed {
    /// Whether the connection is served as HTTP.
    pub fn is_http(self) -> bool {
        matches!(self, Sniffed::Http1 | Sniffed::Http2)
    }
}

/// The HTTP/2 client connection preface.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Request methods of HTTP/1.x (RFC 9110 and WebDAV's common ones), each followed by a space.
const METHODS: &[&[u8]] = &[
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"CONNECT ",
    b"OPTIONS ",
    b"TRACE ",
    b"PATCH ",
    b"PROPFIND ",
    b"PROPPATCH ",
    b"MKCOL ",
    b"COPY ",
    b"MOVE ",
    b"LOCK ",
    b"UNLOCK ",
];

/// The most bytes classification needs (the preface; every method token is shorter).
pub const MAX_SNIFF: usize = H2_PREFACE.len();

/// Classifies `head`; `None` when more bytes could still change the answer.
pub fn classify(head: &[u8]) -> Option<Sniffed> {
    if head.is_empty() {
        return None;
    }
    if head[0] == 0x16 {
        return match head.get(1) {
            None => None,
            Some(0x03) => Some(Sniffed::Tls),
            Some(_) => Some(Sniffed::Tcp),
        };
    }
    // Is `head` the whole of `token`, or a start of it that more bytes may complete?
    let fits = |token: &[u8]| {
        let n = head.len().min(token.len());
        head[..n] == token[..n]
    };
    if fits(H2_PREFACE) {
        if head.len() >= H2_PREFACE.len() {
            return Some(Sniffed::Http2);
        }
        return None;
    }
    let mut undecided = false;
    for m in METHODS {
        if fits(m) {
            if head.len() >= m.len() {
                return Some(Sniffed::Http1);
            }
            undecided = true;
        }
    }
    if undecided { None } else { Some(Sniffed::Tcp) }
}

/// The outcome of [`sniff`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sniff {
    pub protocol: Sniffed,
    /// The bytes read, to be replayed to whoever serves the connection.
    pub head: Vec<u8>,
    /// The wait ran out before a decision (else: decided, or the stream ended or failed).
    pub timed_out: bool,
}

/// Reads the start of `stream` until [`classify`] decides, at most [`MAX_SNIFF`] bytes and for
/// at most `wait`. Silence, end of stream or a read error before a decision mean TCP.
pub async fn sniff<S: AsyncRead + Unpin>(stream: &mut S, wait: Duration) -> Sniff {
    let mut head = Vec::with_capacity(MAX_SNIFF);
    let read = async {
        let mut chunk = [0u8; MAX_SNIFF];
        loop {
            if let Some(s) = classify(&head) {
                return s;
            }
            let want = MAX_SNIFF - head.len();
            match stream.read(&mut chunk[..want]).await {
                Ok(0) | Err(_) => return Sniffed::Tcp,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let (protocol, timed_out) = match tokio::time::timeout(wait, read).await {
        Ok(p) => (p, false),
        Err(_) => (Sniffed::Tcp, true),
    };
    Sniff {
        protocol,
        head,
        timed_out,
    }
}

/// Like [`sniff`], without consuming anything: the first bytes are only peeked at, so the
/// stream can be handed on untouched (the inbound path, whose mTLS and HTTP servers read the
/// socket themselves). Undecided after `wait` (silence, or a partial token) means TCP.
pub async fn peek_sniff(stream: &TcpStream, wait: Duration) -> Sniffed {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; MAX_SNIFF];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) | Err(_) => return Sniffed::Tcp,
        };
        if n == 0 {
            return Sniffed::Tcp;
        }
        if let Some(s) = classify(&buf[..n]) {
            return s;
        }
        // A partial token: the bytes stay queued, so peek would answer at once; give the
        // client a moment to send more (bounded by the wait).
        if tokio::time::timeout_at(deadline, tokio::time::sleep(PEEK_AGAIN))
            .await
            .is_err()
        {
            return Sniffed::Tcp;
        }
    }
}

/// How long [`peek_sniff`] waits before looking again at a partial first token.
const PEEK_AGAIN: Duration = Duration::from_millis(5);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn classify_by_first_bytes() {
        assert_eq!(classify(b"\x16\x03\x01\x02\x00"), Some(Sniffed::Tls));
        assert_eq!(classify(b"\x16"), None);
        assert_eq!(classify(b"\x16\x01"), Some(Sniffed::Tcp));
        assert_eq!(classify(H2_PREFACE), Some(Sniffed::Http2));
        assert_eq!(classify(b"PRI * HTTP/2"), None);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Sniffed::Http1));
        assert_eq!(classify(b"POST "), Some(Sniffed::Http1));
        assert_eq!(classify(b"PO"), None);
        // `P` could still be PUT, POST, PATCH or PRI.
        assert_eq!(classify(b"P"), None);
        assert_eq!(classify(b"PROPFIND /x HTTP/1.1"), Some(Sniffed::Http1));
        // Not a method (no space after the token), a binary protocol, a lower-case word.
        assert_eq!(classify(b"GETX"), Some(Sniffed::Tcp));
        assert_eq!(classify(b"\x00\x00\x00\x01"), Some(Sniffed::Tcp));
        assert_eq!(classify(b"get / HTTP/1.1"), Some(Sniffed::Tcp));
        assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Some(Sniffed::Tcp));
        assert_eq!(classify(b""), None);
    }

    async fn sniff_bytes(chunks: &[&[u8]], wait: Duration) -> (Sniffed, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for c in chunks {
                client.write_all(&c).await.unwrap();
                tokio::task::yield_now().await;
            }
            client // kept open: the peer does not close
        });
        let out = sniff(&mut server, wait).await;
        drop(writer);
        (out.protocol, out.head)
    }

    #[tokio::test]
    async fn sniff_each_protocol_and_keep_the_bytes() {
        let long = Duration::from_secs(10);
        let hello = b"\x16\x03\x01\x00\xa5\x01\x00";
        let (s, head) = sniff_bytes(&[hello], long).await;
        assert_eq!(s, Sniffed::Tls);
        assert!(hello.starts_with(&head) && head.len() >= 2);

        let (s, head) = sniff_bytes(&[b"PRI * HT", b"TP/2.0\r\n\r\nSM\r\n\r\n"], long).await;
        assert_eq!((s, head.as_slice()), (Sniffed::Http2, H2_PREFACE));

        let (s, head) = sniff_bytes(&[b"GE", b"T /index HTTP/1.1\r\n"], long).await;
        assert_eq!(s, Sniffed::Http1);
        assert!(head.starts_with(b"GET "));

        let (s, head) = sniff_bytes(&[b"\x03\x00\x00\x01"], long).await;
        assert_eq!(
            (s, head.as_slice()),
            (Sniffed::Tcp, &b"\x03\x00\x00\x01"[..])
        );
    }

    /// A server-first protocol (MySQL greets first): the client sends nothing, and sniffing
    /// must give up after the bounded wait rather than hang.
    #[tokio::test]
    async fn silent_client_is_tcp_after_the_wait() {
        let started = Instant::now();
        let (mut client, mut server) = tokio::io::duplex(64);
        let out = sniff(&mut server, Duration::from_millis(100)).await;
        assert_eq!(out.protocol, Sniffed::Tcp);
        assert!(out.head.is_empty() && out.timed_out);
        // A client that closes at once is not a timeout.
        client.shutdown().await.unwrap();
        let out = sniff(&mut server, Duration::from_secs(10)).await;
        assert!(out.head.is_empty() && !out.timed_out);
        assert!(started.elapsed() < Duration::from_secs(5), "sniffing hung");
        // A partial token and then silence: also TCP, and the bytes are kept.
        let (s, head) = sniff_bytes(&[b"PO"], Duration::from_millis(100)).await;
        assert_eq!((s, head.as_slice()), (Sniffed::Tcp, &b"PO"[..]));
    }

    /// A connected pair over loopback.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (client, server)
    }

    /// Peeking classifies like reading, leaves every byte to be read, and gives a silent
    /// client (server-first protocol) or a token never completed up as TCP after the wait.
    #[tokio::test]
    async fn peek_sniff_classifies_without_consuming() {
        let wait = Duration::from_millis(100);
        for (bytes, want) in [
            (&b"GET / HTTP/1.1\r\n"[..], Sniffed::Http1),
            (H2_PREFACE, Sniffed::Http2),
            (&b"\x16\x03\x01\x00\xa5\x01"[..], Sniffed::Tls),
            (&b"\x00\x01binary"[..], Sniffed::Tcp),
        ] {
            let (mut client, mut server) = pair().await;
            client.write_all(bytes).await.unwrap();
            assert_eq!(peek_sniff(&server, Duration::from_secs(5)).await, want);
            let mut back = vec![0u8; bytes.len()];
            server.read_exact(&mut back).await.unwrap();
            assert_eq!(back, bytes, "nothing consumed");
        }
        // A token completed by a second segment.
        let (mut client, server) = pair().await;
        client.write_all(b"PO").await.unwrap();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            client.write_all(b"ST /x HTTP/1.1\r\n").await.unwrap();
            client
        });
        assert_eq!(
            peek_sniff(&server, Duration::from_secs(5)).await,
            Sniffed::Http1
        );
        drop(late.await.unwrap());

        let started = Instant::now();
        let (_silent, server) = pair().await;
        assert_eq!(peek_sniff(&server, wait).await, Sniffed::Tcp);
        let (mut partial, server) = pair().await;
        partial.write_all(b"GE").await.unwrap();
        assert_eq!(peek_sniff(&server, wait).await, Sniffed::Tcp);
        assert!(started.elapsed() < Duration::from_secs(5), "peeking hung");
    }
}
