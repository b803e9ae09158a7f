//! Request smuggling defence for HTTP/1 listeners: a request carrying both `Content-Length`
//! and `Transfer-Encoding` is refused with 400 and the connection closed, as Envoy does (hyper
//! alone would let `Transfer-Encoding` win, answer it, and close).
//!
//! [`HeadGuard`] sits between the socket and hyper. It holds each request head back until it
//! is complete, checks its framing headers, and only then passes it on; it follows
//! `Content-Length` bodies to find the next head. On a conflict, hyper is handed an invalid
//! request line instead (which it answers 400 before closing) and nothing after it, so no
//! byte of the offending request, nor anything pipelined behind it, reaches the upstream.
//! After a chunked request, an upgrade or anything it cannot parse it steps aside (hyper's
//! own parser still closes the connection after any request with both headers).
//!
//! Since it sees where heads start and end, it also enforces the head limits exactly: a head
//! over the size limit is replaced by one hyper answers 431 to, and a head not complete within
//! the header read timeout ends the connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Why the guard refused a request (the cell [`HeadGuard::new`] returns).
pub mod reason {
    pub const NONE: u8 = 0;
    pub const CL_TE_CONFLICT: u8 = 1;
    pub const HEADER_TOO_LARGE: u8 = 2;
    pub const HEADER_TIMEOUT: u8 = 3;
}

/// A head hyper answers 431 to: more header lines than it accepts (100).
fn too_large_head() -> Vec<u8> {
    let mut h = b"GET / HTTP/1.1\r\n".to_vec();
    for _ in 0..=MAX_HEADERS {
        h.extend_from_slice(b"x: y\r\n");
    }
    h.extend_from_slice(b"\r\n");
    h
}

/// What hyper is handed in place of a refused request: a request line it answers 400 to.
const REFUSED: &[u8] = b"REFUSED\r\n\r\n";
/// Headers a head may have for inspection (hyper's own limit is 100).
const MAX_HEADERS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a request head (held back in `pending`).
    Head,
    /// Inside a `Content-Length` body: bytes left.
    Body(u64),
    /// Not inspecting any more: bytes pass through.
    Passive,
    /// A request was refused: nothing more is read.
    Refused,
}

/// How a complete head frames what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Conflict,
    /// Chunked, an upgrade or CONNECT: stop following.
    Opaque,
}

/// What [`judge_head`] found at the start of some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// A complete head of `len` bytes.
    Complete { len: usize, framing: Framing },
    /// Not complete yet.
    Partial,
    /// Over the size limit (complete or not).
    TooLarge,
    /// Not an HTTP/1 request head hyper would accept: hyper answers it.
    Invalid,
}

/// Finds the request head at the start of `bytes` and how it frames what follows, reading
/// only the line structure and the framing headers' names (and `Content-Length`'s value): no
/// copy, no allocation. Lines end in LF or CRLF and the head at the first empty line, as
/// httparse (hyper's parser) reads them; empty lines before the request line are skipped as
/// httparse does. A head hyper would refuse may be judged anything: hyper answers it 400 and
/// closes the connection, so what follows it is never read.
fn judge_head(bytes: &[u8], max_head: usize) -> Head {
    let mut i = 0;
    // Empty lines before the request line.
    loop {
        match &bytes[i..] {
            [b'\r', b'\n', ..] => i += 2,
            [b'\n', ..] => i += 1,
            _ => break,
        }
    }
    let mut request_line = true;
    let (mut lengths, mut length, mut te, mut upgrade, mut connect) =
        (0u32, 0u64, false, false, false);
    loop {
        let Some(nl) = bytes[i..].iter().position(|&b| b == b'\n') else {
            return if bytes.len() > max_head {
                Head::TooLarge
            } else {
                partial(bytes)
            };
        };
        let end = i + nl + 1;
        if end > max_head {
            return Head::TooLarge;
        }
        let line = &bytes[i..i + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.contains(&b'\r') {
            return Head::Invalid;
        }
        i = end;
        if request_line {
            request_line = false;
            connect = line.starts_with(b"CONNECT ");
            continue;
        }
        if line.is_empty() {
            let framing = if te && lengths > 0 {
                Framing::Conflict
            } else if te || upgrade || connect || lengths > 1 {
                // Duplicate lengths are hyper's to judge (equal: fine; different: 400).
                Framing::Opaque
            } else {
                Framing::Length(length)
            };
            return Head::Complete { len: end, framing };
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Head::Invalid;
        };
        let name = &line[..colon];
        // Only three names matter; their lengths tell them apart before any comparison.
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                lengths += 1;
                length = std::str::from_utf8(&line[colon + 1..])
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => te = true,
            7 if name.eq_ignore_ascii_case(b"upgrade") => upgrade = true,
            _ => {}
        }
    }
}

/// An incomplete head: held, unless httparse already refuses it (hyper answers that at once).
/// Only heads split across reads come here.
fn partial(bytes: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::Request::new(&mut headers).parse(bytes) {
        Err(_) => Head::Invalid,
        Ok(_) => Head::Partial,
    }
}

/// What the scan of newly read bytes decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Every byte passes (the state says what comes next).
    Pass,
    /// The first `n` bytes pass; the rest starts a head not complete yet.
    Hold(usize),
    /// The first `n` bytes pass; the head after them is refused for reason `why`.
    Refuse(usize, u8),
}

/// The guarded stream.
pub struct HeadGuard<S> {
    inner: S,
    state: State,
    /// The start of a head, read but not yet passed on (only when a head is split across
    /// reads).
    pending: Vec<u8>,
    /// Bytes approved for hyper, not yet read by it (after a split head or a refusal).
    ready: Vec<u8>,
    max_head: usize,
    header_timeout: Duration,
    /// Running while a head is incomplete.
    deadline: Option<Pin<Box<Sleep>>>,
    refused: Arc<AtomicU8>,
}

impl<S> HeadGuard<S> {
    /// Guards `inner`: heads over `max_head` bytes are answered 431, heads not complete within
    /// `header_timeout` end the connection. With `inspect` false (an HTTP/2 connection) bytes
    /// pass through untouched. The returned cell says why a request was refused
    /// ([`reason`]).
    pub fn new(
        inner: S,
        max_head: usize,
        header_timeout: Duration,
        inspect: bool,
    ) -> (Self, Arc<AtomicU8>) {
        let refused = Arc::new(AtomicU8::new(reason::NONE));
        (
            HeadGuard {
                inner,
                state: if inspect { State::Head } else { State::Passive },
                pending: Vec::new(),
                ready: Vec::new(),
                max_head,
                header_timeout,
                deadline: None,
                refused: refused.clone(),
            },
            refused,
        )
    }

    fn refuse(&mut self, why: u8) {
        self.refused.store(why, Ordering::Relaxed);
        self.state = State::Refused;
        self.pending.clear();
        self.deadline = None;
        if why == reason::HEADER_TOO_LARGE {
            tracing::debug!(max = self.max_head, "request head too large");
            self.ready.extend_from_slice(&too_large_head());
        } else {
            tracing::info!("request with both Content-Length and Transfer-Encoding refused");
            self.ready.extend_from_slice(REFUSED);
        }
    }

    /// Runs the state machine over `bytes` (read in this order, nothing held before them).
    fn scan(&mut self, bytes: &[u8]) -> Scan {
        let mut pos = 0;
        while pos < bytes.len() {
            match self.state {
                State::Passive | State::Refused => return Scan::Pass,
                State::Body(left) => {
                    let n = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - pos);
                    pos += n;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Body(left)
                    };
                }
                State::Head => match judge_head(&bytes[pos..], self.max_head) {
                    Head::Complete { len, framing } => {
                        self.deadline = None;
                        match framing {
                            Framing::Conflict => return Scan::Refuse(pos, reason::CL_TE_CONFLICT),
                            Framing::Opaque => {
                                self.state = State::Passive;
                                return Scan::Pass;
                            }
                            Framing::Length(n) => {
                                pos += len;
                                if n > 0 {
                                    self.state = State::Body(n);
                                }
                            }
                        }
                    }
                    Head::Partial => return Scan::Hold(pos),
                    Head::TooLarge => return Scan::Refuse(pos, reason::HEADER_TOO_LARGE),
                    // Too many headers, or not HTTP: hyper answers it (431 / 400).
                    Head::Invalid => {
                        self.state = State::Passive;
                        return Scan::Pass;
                    }
                },
            }
        }
        Scan::Pass
    }

    /// Judges a split head once more bytes came: the passed part goes to `ready`.
    fn scan_held(&mut self) {
        let held = std::mem::take(&mut self.pending);
        match self.scan(&held) {
            Scan::Pass => self.ready.extend_from_slice(&held),
            Scan::Hold(n) => {
                self.ready.extend_from_slice(&held[..n]);
                self.pending.extend_from_slice(&held[n..]);
            }
            Scan::Refuse(n, why) => {
                self.ready.extend_from_slice(&held[..n]);
                self.refuse(why);
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.drain(..n);
                return Poll::Ready(Ok(()));
            }
            match this.state {
                State::Refused => return Poll::Ready(Ok(())),
                State::Passive if this.pending.is_empty() => {
                    return Pin::new(&mut this.inner).poll_read(cx, buf);
                }
                _ => {}
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // Read straight into hyper's buffer; what may not pass yet is taken back out.
            let start = buf.filled().len();
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Pending => {
                    // A head has started and is not complete: the client has until the
                    // deadline to finish it.
                    if this.state == State::Head && !this.pending.is_empty() {
                        let timeout = this.header_timeout;
                        let deadline = this
                            .deadline
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                        if deadline.as_mut().poll(cx).is_ready() {
                            this.refused
                                .store(reason::HEADER_TIMEOUT, Ordering::Relaxed);
                            this.state = State::Refused;
                            this.deadline = None;
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "request head not complete before the header read timeout",
                            )));
                        }
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let end = buf.filled().len();
            if end == start {
                // End of stream: whatever was held goes to hyper as it is.
                if this.pending.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.ready.append(&mut this.pending);
                this.state = State::Passive;
                continue;
            }
            if !this.pending.is_empty() {
                // The rest of a split head (rare): judged from a copy.
                this.pending.extend_from_slice(&buf.filled()[start..end]);
                buf.set_filled(start);
                this.scan_held();
                continue;
            }
            match this.scan(&buf.filled()[start..end]) {
                Scan::Pass => return Poll::Ready(Ok(())),
                Scan::Hold(n) => {
                    this.pending
                        .extend_from_slice(&buf.filled()[start + n..end]);
                    buf.set_filled(start + n);
                }
                Scan::Refuse(n, why) => {
                    buf.set_filled(start + n);
                    this.refuse(why);
                }
            }
            if buf.filled().len() > start {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What hyper would read when `chunks` arrive, and whether a request was refused.
    async fn through(chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let (mut guard, refused) = HeadGuard::new(server, 60 * 1024, Duration::from_secs(10), true);
        for c in chunks {
            client.write_all(c).await.unwrap();
        }
        drop(client);
        let mut out = Vec::new();
        guard.read_to_end(&mut out).await.unwrap();
        (out, refused.load(Ordering::Relaxed) != reason::NONE)
    }

    #[tokio::test]
    async fn well_framed_requests_pass_unchanged() {
        let two = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        // Whole, and split inside the head and inside the body.
        assert_eq!(through(&[two]).await, (two.to_vec(), false));
        let (a, b) = two.split_at(20);
        let (b, c) = b.split_at(30);
        assert_eq!(through(&[a, b, c]).await, (two.to_vec(), false));
        // A body that looks like a conflicting head is a body.
        let tricky = b"POST /a HTTP/1.1\r\nContent-Length: 60\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (out, refused) = through(&[tricky]).await;
        assert!(!refused);
        assert_eq!(out, tricky.to_vec());
    }

    #[tokio::test]
    async fn any_split_of_the_stream_gives_the_same_result() {
        let mut ok = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".to_vec();
        ok.extend_from_slice(b"\r\nGET /b HTTP/1.1\nhost: x\n\n");
        let mut bad = ok.clone();
        bad.extend_from_slice(
            b"POST /c HTTP/1.1\ntransfer-encoding: chunked\nCONTENT-LENGTH: 3\n\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
        );
        let mut want_bad = ok.clone();
        want_bad.extend_from_slice(REFUSED);
        for (bytes, want, refused) in [(&ok, &ok, false), (&bad, &want_bad, true)] {
            for i in 0..bytes.len() {
                let (a, b) = bytes.split_at(i);
                assert_eq!(
                    through(&[a, b]).await,
                    (want.clone(), refused),
                    "split at {i}"
                );
            }
        }
    }

    #[test]
    fn heads_are_judged_by_their_framing_headers() {
        let max = 1024;
        let j = |h: &[u8]| judge_head(h, max);
        assert_eq!(
            j(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest"),
            Head::Complete {
                len: 27,
                framing: Framing::Length(0)
            }
        );
        assert_eq!(
            j(b"\r\nPOST / HTTP/1.1\r\nContent-Length:  12 \r\n\r\n"),
            Head::Complete {
                len: 43,
                framing: Framing::Length(12)
            }
        );
        let framing = |h: &[u8]| match j(h) {
            Head::Complete { framing, .. } => Some(framing),
            _ => None,
        };
        assert_eq!(
            framing(b"POST / HTTP/1.1\nTransfer-Encoding: chunked\nContent-Length: 1\n\n"),
            Some(Framing::Conflict)
        );
        assert_eq!(
            framing(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(Framing::Opaque)
        );
        assert_eq!(
            framing(b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"),
            Some(Framing::Opaque)
        );
        assert_eq!(
            framing(b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"),
            Some(Framing::Opaque)
        );
        // A header whose value merely mentions the names is ordinary.
        assert_eq!(
            framing(b"GET / HTTP/1.1\r\nX-Note: Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n"),
            Some(Framing::Length(0))
        );
        assert_eq!(j(b"GET / HTTP/1.1\r\nHost: x\r\n"), Head::Partial);
        assert_eq!(j(b"GET / HTTP/1.1\rHost: x\r\n\r\n"), Head::Invalid);
        assert_eq!(j(b"\x00\x01 nothing like HTTP"), Head::Invalid);
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(max + 1, b'a');
        assert_eq!(j(&big), Head::TooLarge);
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(j(&big), Head::TooLarge);
    }

    #[tokio::test]
    async fn conflicting_framing_is_replaced_and_nothing_follows() {
        let first = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let mut bytes = first.clone();
        bytes.extend_from_slice(
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        let (out, refused) = through(&[&bytes]).await;
        assert!(refused);
        let mut want = first;
        want.extend_from_slice(REFUSED);
        assert_eq!(out, want);
    }
}
