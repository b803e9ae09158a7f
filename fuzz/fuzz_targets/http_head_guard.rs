//! The request-head guard (`HeadGuard`, the proxy's HTTP/1 request-smuggling defence) and the
//! protocol sniffer's `classify`, at the byte level, without hyper or a runtime.
//!
//! Input: two control bytes (how the stream is cut into reads, the guard's head limit), then
//! the bytes a client sends. Checked:
//! - nothing panics;
//! - the guard is transparent: when it refuses nothing, hyper reads exactly the client's bytes;
//!   when it refuses, hyper reads a prefix of them followed by the replacement head;
//! - no smuggling: walking what hyper reads with hyper's own framing rules (httparse, as
//!   hyper's server does), no request hyper would serve carries both `Content-Length` and
//!   `Transfer-Encoding` before the guard documents stepping aside (a chunked body, an
//!   upgrade or CONNECT, repeated `Content-Length`, anything hyper refuses);
//! - `classify` is monotonic (a decision never changes with more bytes) and decides within
//!   `MAX_SNIFF` bytes.
#![no_main]

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mesh_fuzz::hyper_model::{Walk, walk_http1};
use mesh_proxy::capture::{MAX_SNIFF, classify};
use mesh_proxy::http::fuzzing::{HeadGuard, reason};
use tokio::io::{AsyncRead, ReadBuf};

/// The client: `data` delivered in reads of the sizes a small generator picks.
struct Chunks<'a> {
    data: &'a [u8],
    pos: usize,
    rng: u32,
    max_chunk: usize,
}

impl AsyncRead for Chunks<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let left = self.data.len() - self.pos;
        if left == 0 {
            return Poll::Ready(Ok(()));
        }
        self.rng = self.rng.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let want = 1 + (self.rng >> 16) as usize % self.max_chunk;
        let n = want.min(left).min(buf.remaining());
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// What hyper is handed for a head over the limit (mirrors `smuggling::too_large_head`).
fn too_large_head() -> Vec<u8> {
    let mut h = b"GET / HTTP/1.1\r\n".to_vec();
    for _ in 0..=128 {
        h.extend_from_slice(b"x: y\r\n");
    }
    h.extend_from_slice(b"\r\n");
    h
}

/// What hyper is handed for a request with conflicting framing (mirrors `smuggling::REFUSED`).
const REFUSED: &[u8] = b"REFUSED\r\n\r\n";

fn check_classify(data: &[u8]) {
    let mut decided = None;
    for n in 0..=data.len().min(MAX_SNIFF) {
        let c = classify(&data[..n]);
        if let Some(d) = decided {
            assert_eq!(c, Some(d), "classify changed its mind at {n} bytes");
        }
        decided = decided.or(c);
    }
    if data.len() >= MAX_SNIFF {
        assert!(
            decided.is_some(),
            "classify undecided after MAX_SNIFF bytes"
        );
    }
}

fuzz_target!(|input: &[u8]| {
    let [c0, c1, data @ ..] = input else {
        return;
    };
    check_classify(data);
    // Small head limits too, so "too large" is reachable within libFuzzer's input sizes.
    let max_head = 16 + usize::from(*c1) * 8;
    let client = Chunks {
        data,
        pos: 0,
        rng: u32::from(*c0) | u32::from(*c1) << 8,
        max_chunk: 1 + usize::from(*c0 % 64) * if c0 & 0x80 != 0 { 64 } else { 1 },
    };
    let (mut guard, refused) = HeadGuard::new(client, max_head, Duration::from_secs(10), true);
    // hyper's side: read everything, with buffers of varying sizes. The client never returns
    // Pending, so no timer is ever armed and no runtime is needed.
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 + usize::from(*c1 % 32) * 97];
    loop {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut guard).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                if rb.filled().is_empty() {
                    break;
                }
                out.extend_from_slice(rb.filled());
            }
            Poll::Ready(Err(e)) => panic!("the guard failed reading from memory: {e}"),
            Poll::Pending => panic!("the guard is pending on a client that never is"),
        }
        assert!(out.len() <= data.len() + 4096, "the guard made up bytes");
    }
    let why = refused.load(Ordering::Relaxed);
    match why {
        reason::NONE => assert_eq!(out, data, "the guard changed bytes it did not refuse"),
        reason::CL_TE_CONFLICT | reason::HEADER_TOO_LARGE => {
            let repl = if why == reason::CL_TE_CONFLICT {
                REFUSED.to_vec()
            } else {
                too_large_head()
            };
            assert!(out.ends_with(&repl), "refused without the replacement head");
            let passed = &out[..out.len() - repl.len()];
            assert!(
                data.starts_with(passed),
                "the guard passed bytes the client did not send"
            );
        }
        other => panic!("unexpected refusal reason {other}"),
    }
    if let Walk::Smuggled { at } = walk_http1(&out) {
        panic!(
            "hyper would serve a request with both Content-Length and Transfer-Encoding at byte {at}"
        );
    }
});
