//! Trace context on the wire: W3C Trace Context (`traceparent`, `tracestate`) and B3 (multi
//! header `x-b3-*` and single header `b3`). Extracted on receipt; the new span's context is
//! injected in every format, so an application that forwards only one of them still works.

use std::str::FromStr;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// `traceparent`.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`.
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// `b3` (single header).
pub static B3: HeaderName = HeaderName::from_static("b3");
/// `x-b3-traceid`.
pub static X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
/// `x-b3-spanid`.
pub static X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
/// `x-b3-parentspanid`.
pub static X_B3_PARENTSPANID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
/// `x-b3-sampled`.
pub static X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
/// `x-b3-flags` (`1` = debug, which implies sampled).
pub static X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// A trace context received with a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    /// The caller's span (remote), with the sampled flag when the caller decided.
    pub context: SpanContext,
    /// The caller's sampling decision; `None` when it deferred it (B3 without a sampled flag).
    pub sampled: Option<bool>,
}

impl Extracted {
    /// The context with its sampled flag set to `sampled` (used when the caller deferred).
    pub fn decided(&self, sampled: bool) -> SpanContext {
        let c = &self.context;
        SpanContext::new(
            c.trace_id(),
            c.span_id(),
            c.trace_flags().with_sampled(sampled),
            true,
            c.trace_state().clone(),
        )
    }
}

/// The trace context of `headers`: `traceparent` (with `tracestate`) first, then `b3`, then
/// `x-b3-traceid`/`x-b3-spanid`. Malformed headers are ignored (the next format is tried).
pub fn extract(headers: &HeaderMap) -> Option<Extracted> {
    let text = |n: &HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(tp) = text(&TRACEPARENT)
        && let Some(mut e) = parse_traceparent(tp)
    {
        if let Some(state) = text(&TRACESTATE).and_then(|s| TraceState::from_str(s).ok()) {
            e.context = SpanContext::new(
                e.context.trace_id(),
                e.context.span_id(),
                e.context.trace_flags(),
                true,
                state,
            );
        }
        return Some(e);
    }
    if let Some(e) = text(&B3).and_then(parse_b3_single) {
        return Some(e);
    }
    let trace_id = text(&X_B3_TRACEID).and_then(b3_trace_id)?;
    let span_id = text(&X_B3_SPANID).and_then(span_id)?;
    let debug = text(&X_B3_FLAGS) == Some("1");
    let sampled = if debug {
        Some(true)
    } else {
        match text(&X_B3_SAMPLED) {
            Some("1" | "true" | "d") => Some(true),
            Some("0" | "false") => Some(false),
            _ => None,
        }
    };
    Some(remote(trace_id, span_id, sampled))
}

/// Writes `context` (this hop's span, whose parent is `parent`) into `headers` in every format,
/// replacing what was there.
pub fn inject(context: &SpanContext, parent: Option<SpanId>, headers: &mut HeaderMap) {
    let trace = context.trace_id();
    let span = context.span_id();
    let sampled = context.is_sampled();
    let flag = if sampled { "1" } else { "0" };
    let mut put = |name: &HeaderName, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name.clone(), v);
        }
    };
    put(
        &TRACEPARENT,
        format!("00-{trace}-{span}-{:02x}", context.trace_flags().to_u8()),
    );
    put(&X_B3_TRACEID, trace.to_string());
    put(&X_B3_SPANID, span.to_string());
    put(&X_B3_SAMPLED, flag.to_string());
    put(
        &B3,
        match parent {
            Some(p) => format!("{trace}-{span}-{flag}-{p}"),
            None => format!("{trace}-{span}-{flag}"),
        },
    );
    match parent {
        Some(p) => put(&X_B3_PARENTSPANID, p.to_string()),
        None => {
            headers.remove(&X_B3_PARENTSPANID);
        }
    }
    // The sampled flag carries the decision; a debug flag would override it downstream.
    headers.remove(&X_B3_FLAGS);
    let state = context.trace_state().header();
    if state.is_empty() {
        headers.remove(&TRACESTATE);
    } else if let Ok(v) = HeaderValue::from_str(&state) {
        headers.insert(TRACESTATE.clone(), v);
    }
}

fn remote(trace_id: TraceId, span_id: SpanId, sampled: Option<bool>) -> Extracted {
    let flags = TraceFlags::default().with_sampled(sampled == Some(true));
    Extracted {
        context: SpanContext::new(trace_id, span_id, flags, true, TraceState::NONE),
        sampled,
    }
}

/// `version-traceid-spanid-flags` (version `00`; later versions: the first four fields).
fn parse_traceparent(s: &str) -> Option<Extracted> {
    let mut parts = s.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    if version.len() != 2 || !is_lower_hex(version) || version == "ff" {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace_id = TraceId::from(hex_id::<32>(trace)?);
    let span_id = span_id(span)?;
    if flags.len() != 2 || !is_lower_hex(flags) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(remote(trace_id, span_id, Some(flags & 1 == 1)))
}

/// `traceid-spanid[-sampled[-parentspanid]]`, or only the sampling state (`0`, `1`, `d`), which
/// carries no context.
fn parse_b3_single(s: &str) -> Option<Extracted> {
    let mut parts = s.trim().split('-');
    let trace_id = b3_trace_id(parts.next()?)?;
    let span_id = span_id(parts.next()?)?;
    let sampled = match parts.next() {
        None => None,
        Some("1" | "d") => Some(true),
        Some("0") => Some(false),
        Some(_) => return None,
    };
    if let Some(parent) = parts.next() {
        hex_id::<16>(parent)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(remote(trace_id, span_id, sampled))
}

/// 16 lowercase hex digits, not all zero.
fn span_id(s: &str) -> Option<SpanId> {
    hex_id::<16>(s).map(|v| SpanId::from(v as u64))
}

/// A B3 trace id: 32 or 16 lowercase hex digits (64-bit ids are zero-extended).
fn b3_trace_id(s: &str) -> Option<TraceId> {
    let id = match s.len() {
        32 => hex_id::<32>(s)?,
        16 => u128::from(hex_id::<16>(s)? as u64),
        _ => return None,
    };
    Some(TraceId::from(id))
}

/// Exactly `N` lowercase hex digits, not all zero.
fn hex_id<const N: usize>(s: &str) -> Option<u128> {
    if s.len() != N || !is_lower_hex(s) {
        return None;
    }
    let v = u128::from_str_radix(s, 16).ok()?;
    (v != 0).then_some(v)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn ids(e: &Extracted) -> (String, String) {
        (
            e.context.trace_id().to_string(),
            e.context.span_id().to_string(),
        )
    }

    #[test]
    fn w3c_traceparent_and_tracestate() {
        let h = headers(&[
            ("traceparent", &format!("00-{TRACE}-{SPAN}-01")),
            ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
        ]);
        let e = extract(&h).unwrap();
        assert_eq!(ids(&e), (TRACE.into(), SPAN.into()));
        assert_eq!(e.sampled, Some(true));
        assert!(e.context.is_remote());
        assert_eq!(e.context.trace_state().get("congo"), Some("t61rcWkgMzE"));

        let h = headers(&[("traceparent", &format!("00-{TRACE}-{SPAN}-00"))]);
        assert_eq!(extract(&h).unwrap().sampled, Some(false));
    }

    #[test]
    fn malformed_traceparent_falls_back_to_b3() {
        for bad in [
            format!("00-{TRACE}-{SPAN}"),
            format!("00-{}-{SPAN}-01", "0".repeat(32)),
            format!("00-{TRACE}-{}-01", "0".repeat(16)),
            format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
            format!("ff-{TRACE}-{SPAN}-01"),
            format!("00-{TRACE}-{SPAN}-01-extra"),
            format!("00-+{}-{SPAN}-01", &TRACE[1..]),
        ] {
            assert_eq!(extract(&headers(&[("traceparent", &bad)])), None, "{bad}");
        }
        let h = headers(&[
            ("traceparent", "garbage"),
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", SPAN),
            ("x-b3-sampled", "1"),
        ]);
        let e = extract(&h).unwrap();
        assert_eq!(ids(&e), (TRACE.into(), SPAN.into()));
        assert_eq!(e.sampled, Some(true));
    }

    #[test]
    fn b3_multi_header() {
        let h = headers(&[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", SPAN),
            ("x-b3-parentspanid", "0000000000000001"),
            ("x-b3-sampled", "0"),
        ]);
        let e = extract(&h).unwrap();
        assert_eq!(
            ids(&e),
            ("0000000000000000a3ce929d0e0e4736".into(), SPAN.into())
        );
        assert_eq!(e.sampled, Some(false));
        assert!(!e.context.is_sampled());

        // Debug implies sampled; no flag at all defers the decision.
        let h = headers(&[
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", SPAN),
            ("x-b3-flags", "1"),
        ]);
        assert_eq!(extract(&h).unwrap().sampled, Some(true));
        let h = headers(&[("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN)]);
        let e = extract(&h).unwrap();
        assert_eq!(e.sampled, None);
        assert!(e.decided(true).is_sampled());
        assert_eq!(e.decided(true).trace_id(), e.context.trace_id());

        // Missing span id, bad lengths: nothing.
        assert_eq!(extract(&headers(&[("x-b3-traceid", TRACE)])), None);
        let h = headers(&[("x-b3-traceid", "abc"), ("x-b3-spanid", SPAN)]);
        assert_eq!(extract(&h), None);
    }

    #[test]
    fn b3_single_header() {
        let e = extract(&headers(&[(
            "b3",
            &format!("{TRACE}-{SPAN}-1-0000000000000001"),
        )]))
        .unwrap();
        assert_eq!(ids(&e), (TRACE.into(), SPAN.into()));
        assert_eq!(e.sampled, Some(true));
        let e = extract(&headers(&[("b3", &format!("{TRACE}-{SPAN}-d"))])).unwrap();
        assert_eq!(e.sampled, Some(true));
        let e = extract(&headers(&[("b3", &format!("{TRACE}-{SPAN}"))])).unwrap();
        assert_eq!(e.sampled, None);
        let e = extract(&headers(&[("b3", &format!("{TRACE}-{SPAN}-0"))])).unwrap();
        assert_eq!(e.sampled, Some(false));
        // Sampling state only, or junk: no context.
        assert_eq!(extract(&headers(&[("b3", "1")])), None);
        assert_eq!(
            extract(&headers(&[("b3", &format!("{TRACE}-{SPAN}-x"))])),
            None
        );
        // The single header wins over the multi headers.
        let h = headers(&[
            ("b3", &format!("{TRACE}-{SPAN}-1")),
            ("x-b3-traceid", "1111111111111111"),
            ("x-b3-spanid", "2222222222222222"),
        ]);
        assert_eq!(ids(&extract(&h).unwrap()), (TRACE.into(), SPAN.into()));
    }

    #[test]
    fn no_context_without_headers() {
        assert_eq!(extract(&HeaderMap::new()), None);
    }

    #[test]
    fn inject_writes_every_format_and_round_trips() {
        let trace = TraceId::from_hex(TRACE).unwrap();
        let span = SpanId::from_hex(SPAN).unwrap();
        let parent = SpanId::from_hex("0000000000000abc").unwrap();
        let state = TraceState::from_str("rojo=1").unwrap();
        let ctx = SpanContext::new(trace, span, TraceFlags::SAMPLED, false, state);
        let mut h = headers(&[("x-b3-flags", "1"), ("end-user", "jason")]);
        inject(&ctx, Some(parent), &mut h);
        assert_eq!(h["traceparent"], format!("00-{TRACE}-{SPAN}-01").as_str());
        assert_eq!(h["tracestate"], "rojo=1");
        assert_eq!(h["x-b3-traceid"], TRACE);
        assert_eq!(h["x-b3-spanid"], SPAN);
        assert_eq!(h["x-b3-parentspanid"], "0000000000000abc");
        assert_eq!(h["x-b3-sampled"], "1");
        assert_eq!(
            h["b3"],
            format!("{TRACE}-{SPAN}-1-0000000000000abc").as_str()
        );
        assert!(!h.contains_key("x-b3-flags"));
        assert_eq!(h["end-user"], "jason");

        // Each format alone carries the same context.
        for keep in [
            &["traceparent"][..],
            &["b3"][..],
            &["x-b3-traceid", "x-b3-spanid", "x-b3-sampled"][..],
        ] {
            let mut only = HeaderMap::new();
            for k in keep {
                only.insert(HeaderName::from_static(k), h[*k].clone());
            }
            let e = extract(&only).unwrap();
            assert_eq!(ids(&e), (TRACE.into(), SPAN.into()), "{keep:?}");
            assert_eq!(e.sampled, Some(true), "{keep:?}");
        }

        // Not sampled, no parent: the parent header goes, the flags say 0.
        let ctx = SpanContext::new(trace, span, TraceFlags::default(), false, TraceState::NONE);
        inject(&ctx, None, &mut h);
        assert_eq!(h["traceparent"], format!("00-{TRACE}-{SPAN}-00").as_str());
        assert_eq!(h["x-b3-sampled"], "0");
        assert_eq!(h["b3"], format!("{TRACE}-{SPAN}-0").as_str());
        assert!(!h.contains_key("x-b3-parentspanid"));
        assert!(!h.contains_key("tracestate"));
    }
}
