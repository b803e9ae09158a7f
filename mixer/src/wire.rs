//! A `CheckRequest` read straight from its protobuf bytes: the attribute bag is built from the
//! wire without prost's intermediate `HashMap`s and per-word `String`s.
//!
//! [`WireCheck::parse`] walks the whole message once (every malformation prost would refuse is
//! refused: truncation, bad varints, wrong wire types, invalid UTF-8) and keeps borrowed slices;
//! [`WireCheck::bag`] then resolves the word indexes against the client's global word count,
//! with the same meaning as `mesh_proto::attributes::decompress_with_word_count`: attributes are
//! applied type by type (strings, int64s, doubles, bools, bytes, timestamps, durations,
//! string maps), each by key order, a repeated map key keeping its last value.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use mesh_proto::attributes::{AttributeError, Bag, Value};
use mesh_proto::dictionary;
use mesh_proto::istio::mixer::v1::check_request::QuotaParams;
use prost::encoding::{WireType, decode_key, decode_varint};

/// Why the request bytes are not a `CheckRequest`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("failed to decode CheckRequest: {0}")]
    Prost(#[from] prost::DecodeError),
    #[error("failed to decode CheckRequest: buffer underflow")]
    Truncated,
    #[error("failed to decode CheckRequest: field {field} has wire type {found:?}")]
    WireType {
        field: &'static str,
        found: WireType,
    },
    #[error("failed to decode CheckRequest: {field} is not UTF-8")]
    Utf8 { field: &'static str },
}

/// One attribute entry as sent: its map (type rank), key index, position, and raw value.
#[derive(Debug, Clone, Copy)]
struct Entry<'a> {
    rank: u8,
    key: i32,
    seq: u32,
    value: Raw<'a>,
}

#[derive(Debug, Clone, Copy)]
enum Raw<'a> {
    Word(i32),
    Int64(i64),
    Double(f64),
    Bool(bool),
    Bytes(&'a [u8]),
    Timestamp(i64, i32),
    Duration(i64, i32),
    /// The `StringMap` message bytes (already validated).
    Map(&'a [u8]),
}

/// A parsed, not yet resolved, `CheckRequest`.
#[derive(Debug, Default)]
pub struct WireCheck<'a> {
    pub global_word_count: u32,
    pub deduplication_id: &'a str,
    pub quotas: HashMap<String, QuotaParams>,
    words: Vec<&'a str>,
    entries: Vec<Entry<'a>>,
}

/// Reads a length-delimited field's bytes.
fn delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], WireError> {
    let len = decode_varint(buf)?;
    if len > buf.len() as u64 {
        return Err(WireError::Truncated);
    }
    let (field, rest) = buf.split_at(len as usize);
    *buf = rest;
    Ok(field)
}

fn expect(wire: WireType, want: WireType, field: &'static str) -> Result<(), WireError> {
    if wire == want {
        Ok(())
    } else {
        Err(WireError::WireType { field, found: wire })
    }
}

fn zigzag32(v: u64) -> i32 {
    let v = v as u32;
    ((v >> 1) as i32) ^ (-((v & 1) as i32))
}

fn utf8<'a>(b: &'a [u8], field: &'static str) -> Result<&'a str, WireError> {
    std::str::from_utf8(b).map_err(|_| WireError::Utf8 { field })
}

fn fixed64(buf: &mut &[u8]) -> Result<u64, WireError> {
    let Some((bytes, rest)) = buf.split_first_chunk::<8>() else {
        return Err(WireError::Truncated);
    };
    *buf = rest;
    Ok(u64::from_le_bytes(*bytes))
}

fn skip(wire: WireType, tag: u32, buf: &mut &[u8]) -> Result<(), WireError> {
    prost::encoding::skip_field(wire, tag, buf, Default::default())?;
    Ok(())
}

/// Reads a `google.protobuf.Timestamp`/`Duration` message: (seconds, nanos).
fn seconds_nanos(mut m: &[u8]) -> Result<(i64, i32), WireError> {
    let (mut s, mut n) = (0i64, 0i32);
    while !m.is_empty() {
        let (tag, wire) = decode_key(&mut m)?;
        match tag {
            1 => {
                expect(wire, WireType::Varint, "seconds")?;
                s = decode_varint(&mut m)? as i64;
            }
            2 => {
                expect(wire, WireType::Varint, "nanos")?;
                n = decode_varint(&mut m)? as i32;
            }
            _ => skip(wire, tag, &mut m)?,
        }
    }
    Ok((s, n))
}

/// Calls `f` with each (key, value) of a `map<sint32, sint32>` field's entries in `m` (the
/// `StringMap` message bytes).
fn string_map_entries(
    mut m: &[u8],
    mut f: impl FnMut(i32, i32) -> Result<(), AttributeError>,
) -> Result<Result<(), AttributeError>, WireError> {
    while !m.is_empty() {
        let (tag, wire) = decode_key(&mut m)?;
        if tag != 1 {
            skip(wire, tag, &mut m)?;
            continue;
        }
        expect(wire, WireType::LengthDelimited, "StringMap.entries")?;
        let mut e = delimited(&mut m)?;
        let (mut k, mut v) = (0, 0);
        while !e.is_empty() {
            let (tag, wire) = decode_key(&mut e)?;
            match tag {
                1 => {
                    expect(wire, WireType::Varint, "StringMap key")?;
                    k = zigzag32(decode_varint(&mut e)?);
                }
                2 => {
                    expect(wire, WireType::Varint, "StringMap value")?;
                    v = zigzag32(decode_varint(&mut e)?);
                }
                _ => skip(wire, tag, &mut e)?,
            }
        }
        if let Err(a) = f(k, v) {
            return Ok(Err(a));
        }
    }
    Ok(Ok(()))
}

impl<'a> WireCheck<'a> {
    /// Parses `buf` (a whole `CheckRequest`), refusing what prost would refuse.
    pub fn parse(mut buf: &'a [u8]) -> Result<WireCheck<'a>, WireError> {
        let mut out = WireCheck::default();
        while !buf.is_empty() {
            let (tag, wire) = decode_key(&mut buf)?;
            match tag {
                1 => {
                    expect(wire, WireType::LengthDelimited, "attributes")?;
                    // A repeated message field merges: its words and entries add up.
                    let attrs = delimited(&mut buf)?;
                    out.parse_attributes(attrs)?;
                }
                2 => {
                    expect(wire, WireType::Varint, "global_word_count")?;
                    out.global_word_count = decode_varint(&mut buf)? as u32;
                }
                3 => {
                    expect(wire, WireType::LengthDelimited, "deduplication_id")?;
                    out.deduplication_id = utf8(delimited(&mut buf)?, "deduplication_id")?;
                }
                4 => {
                    expect(wire, WireType::LengthDelimited, "quotas")?;
                    let (name, params) = quota_entry(delimited(&mut buf)?)?;
                    out.quotas.insert(name.to_string(), params);
                }
                _ => skip(wire, tag, &mut buf)?,
            }
        }
        // Type by type, key order, the last of a repeated key first (a protobuf map keeps the
        // last): the order `bag` applies them in.
        out.entries
            .sort_unstable_by(|a, b| (a.rank, a.key, b.seq).cmp(&(b.rank, b.key, a.seq)));
        Ok(out)
    }

    fn parse_attributes(&mut self, mut buf: &'a [u8]) -> Result<(), WireError> {
        while !buf.is_empty() {
            let (tag, wire) = decode_key(&mut buf)?;
            if tag == 1 {
                expect(wire, WireType::LengthDelimited, "words")?;
                self.words.push(utf8(delimited(&mut buf)?, "words")?);
                continue;
            }
            if !(2..=9).contains(&tag) {
                skip(wire, tag, &mut buf)?;
                continue;
            }
            expect(wire, WireType::LengthDelimited, "attribute map")?;
            let mut e = delimited(&mut buf)?;
            let mut key = 0;
            let mut value = match tag {
                2 => Raw::Word(0),
                3 => Raw::Int64(0),
                4 => Raw::Double(0.0),
                5 => Raw::Bool(false),
                6 => Raw::Timestamp(0, 0),
                7 => Raw::Duration(0, 0),
                8 => Raw::Bytes(&[]),
                _ => Raw::Map(&[]),
            };
            while !e.is_empty() {
                let (etag, ewire) = decode_key(&mut e)?;
                match etag {
                    1 => {
                        expect(ewire, WireType::Varint, "attribute key")?;
                        key = zigzag32(decode_varint(&mut e)?);
                    }
                    2 => {
                        value = match value {
                            Raw::Word(_) => {
                                expect(ewire, WireType::Varint, "strings value")?;
                                Raw::Word(zigzag32(decode_varint(&mut e)?))
                            }
                            Raw::Int64(_) => {
                                expect(ewire, WireType::Varint, "int64s value")?;
                                Raw::Int64(decode_varint(&mut e)? as i64)
                            }
                            Raw::Double(_) => {
                                expect(ewire, WireType::SixtyFourBit, "doubles value")?;
                                Raw::Double(f64::from_bits(fixed64(&mut e)?))
                            }
                            Raw::Bool(_) => {
                                expect(ewire, WireType::Varint, "bools value")?;
                                Raw::Bool(decode_varint(&mut e)? != 0)
                            }
                            Raw::Timestamp(..) => {
                                expect(ewire, WireType::LengthDelimited, "timestamps value")?;
                                let (s, n) = seconds_nanos(delimited(&mut e)?)?;
                                Raw::Timestamp(s, n)
                            }
                            Raw::Duration(..) => {
                                expect(ewire, WireType::LengthDelimited, "durations value")?;
                                let (s, n) = seconds_nanos(delimited(&mut e)?)?;
                                Raw::Duration(s, n)
                            }
                            Raw::Bytes(_) => {
                                expect(ewire, WireType::LengthDelimited, "bytes value")?;
                                Raw::Bytes(delimited(&mut e)?)
                            }
                            Raw::Map(_) => {
                                expect(ewire, WireType::LengthDelimited, "string_maps value")?;
                                let m = delimited(&mut e)?;
                                // Validate now; resolved in `bag`.
                                let _ = string_map_entries(m, |_, _| Ok(()))?;
                                Raw::Map(m)
                            }
                        };
                    }
                    _ => skip(ewire, etag, &mut e)?,
                }
            }
            self.entries.push(Entry {
                rank: tag as u8,
                key,
                seq: self.entries.len() as u32,
                value,
            });
        }
        Ok(())
    }

    /// Resolves the attributes when the client's dictionary has `global_word_count` words
    /// (already checked against ours).
    pub fn bag(&self, global_word_count: usize) -> Result<Bag, AttributeError> {
        let global = dictionary::words();
        let count = global_word_count.min(global.len());
        let words = &self.words;
        let lookup = |i: i32| -> Result<&'a str, AttributeError> {
            if i >= 0 {
                let u = i as usize;
                if u < count {
                    return Ok(global[u]);
                }
                return Err(AttributeError::GlobalIndexOutOfRange { index: i, count });
            }
            let m = (-(i64::from(i) + 1)) as usize;
            words.get(m).copied().ok_or(AttributeError::UnknownWord {
                index: i,
                count: words.len(),
            })
        };
        let mut bag = Bag::new();
        let mut previous: Option<(u8, i32)> = None;
        for e in &self.entries {
            if previous == Some((e.rank, e.key)) {
                continue;
            }
            previous = Some((e.rank, e.key));
            let name = lookup(e.key)?;
            let value = match e.value {
                Raw::Word(v) => Value::String(lookup(v)?.to_string()),
                Raw::Int64(v) => Value::Int64(v),
                Raw::Double(v) => Value::Double(v),
                Raw::Bool(v) => Value::Bool(v),
                Raw::Bytes(v) => Value::Bytes(v.to_vec()),
                Raw::Timestamp(seconds, nanos) => {
                    let t = prost_types::Timestamp { seconds, nanos };
                    Value::Timestamp(SystemTime::try_from(t).map_err(|_| {
                        AttributeError::BadTimestamp {
                            name: name.to_string(),
                        }
                    })?)
                }
                Raw::Duration(seconds, nanos) => {
                    let d = prost_types::Duration { seconds, nanos };
                    Value::Duration(Duration::try_from(d).map_err(|_| {
                        AttributeError::BadDuration {
                            name: name.to_string(),
                        }
                    })?)
                }
                Raw::Map(m) => {
                    // Entries by key order, the last of a repeated key, as `decompress`.
                    let mut pairs: Vec<(i32, i32)> = Vec::new();
                    let parsed = string_map_entries(m, |k, v| {
                        pairs.push((k, v));
                        Ok(())
                    });
                    if !matches!(parsed, Ok(Ok(()))) {
                        // Validated in `parse`: cannot happen; refuse rather than guess.
                        return Err(AttributeError::UnknownWord {
                            index: e.key,
                            count: words.len(),
                        });
                    }
                    let mut kept: BTreeMap<i32, i32> = BTreeMap::new();
                    for (k, v) in pairs {
                        kept.insert(k, v);
                    }
                    let mut map = BTreeMap::new();
                    for (k, v) in kept {
                        map.insert(lookup(k)?.to_string(), lookup(v)?.to_string());
                    }
                    Value::StringMap(map)
                }
            };
            bag.set(name, value);
        }
        Ok(bag)
    }
}

/// One `quotas` map entry: (name, params).
fn quota_entry(mut e: &[u8]) -> Result<(&str, QuotaParams), WireError> {
    let mut name = "";
    let mut params = QuotaParams::default();
    while !e.is_empty() {
        let (tag, wire) = decode_key(&mut e)?;
        match tag {
            1 => {
                expect(wire, WireType::LengthDelimited, "quota name")?;
                name = utf8(delimited(&mut e)?, "quota name")?;
            }
            2 => {
                expect(wire, WireType::LengthDelimited, "quota params")?;
                let mut p = delimited(&mut e)?;
                while !p.is_empty() {
                    let (tag, wire) = decode_key(&mut p)?;
                    match tag {
                        1 => {
                            expect(wire, WireType::Varint, "amount")?;
                            params.amount = decode_varint(&mut p)? as i64;
                        }
                        2 => {
                            expect(wire, WireType::Varint, "best_effort")?;
                            params.best_effort = decode_varint(&mut p)? != 0;
                        }
                        _ => skip(wire, tag, &mut p)?,
                    }
                }
            }
            _ => skip(wire, tag, &mut e)?,
        }
    }
    Ok((name, params))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    use mesh_proto::attributes::{AttributeError, Bag, compress, decompress_with_word_count};
    use mesh_proto::dictionary;
    use mesh_proto::istio::mixer::v1::check_request::QuotaParams;
    use mesh_proto::istio::mixer::v1::{CheckRequest, CompressedAttributes, StringMap};
    use prost::Message;

    use super::*;
    use crate::check::{RequestError, check_wire, check_with_quotas};
    use crate::config::Policy;

    fn full_bag() -> Bag {
        let headers: BTreeMap<String, String> = [
            (":path", "/reviews/0"),
            ("x-not-in-the-dictionary", "some value"),
            ("user-agent", "curl"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Bag::new()
            .with("source.principal", "spiffe://cluster.local/ns/default/sa/a")
            .with(
                "destination.service.host",
                "reviews.default.svc.cluster.local",
            )
            .with("request.path", "/reviews/0")
            .with("request.headers", headers)
            .with("response.code", 200i64)
            .with("custom.ratio", 0.25f64)
            .with("connection.mtls", true)
            .with("source.ip", vec![10u8, 0, 0, 7])
            .with(
                "request.time",
                SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123),
            )
            .with("response.duration", Duration::from_micros(1500))
    }

    fn request(bag: &Bag) -> CheckRequest {
        CheckRequest {
            attributes: Some(compress(bag)),
            global_word_count: dictionary::words().len() as u32,
            deduplication_id: "dedup-7".into(),
            quotas: [(
                "requestcount".to_string(),
                QuotaParams {
                    amount: 3,
                    best_effort: true,
                },
            )]
            .into(),
        }
    }

    fn wire_bag(bytes: &[u8], words: usize) -> Result<Bag, AttributeError> {
        WireCheck::parse(bytes).unwrap().bag(words)
    }

    #[test]
    fn reads_every_field_as_prost_and_decompress_do() {
        let req = request(&full_bag());
        let bytes = req.encode_to_vec();
        let w = WireCheck::parse(&bytes).unwrap();
        assert_eq!(w.global_word_count, req.global_word_count);
        assert_eq!(w.deduplication_id, "dedup-7");
        assert_eq!(w.quotas, req.quotas);
        let n = dictionary::words().len();
        assert_eq!(w.bag(n).unwrap(), full_bag());
        assert_eq!(
            decompress_with_word_count(req.attributes.as_ref().unwrap(), n).unwrap(),
            full_bag()
        );
    }

    #[test]
    fn an_empty_request_is_an_empty_bag() {
        let w = WireCheck::parse(&[]).unwrap();
        assert_eq!(w.bag(10).unwrap(), Bag::new());
        assert!(w.quotas.is_empty());
        assert_eq!(w.deduplication_id, "");
    }

    #[test]
    fn every_truncation_prost_refuses_is_refused() {
        let bytes = request(&full_bag()).encode_to_vec();
        let mut refused = 0;
        for cut in 0..bytes.len() {
            let part = &bytes[..cut];
            let prost = CheckRequest::decode(part).is_err();
            assert_eq!(WireCheck::parse(part).is_err(), prost, "cut at {cut}");
            refused += usize::from(prost);
        }
        assert!(refused > bytes.len() / 2, "{refused} of {}", bytes.len());
    }

    #[test]
    fn wrong_wire_types_and_bad_utf8_are_refused() {
        // attributes (field 1) as a varint.
        assert!(WireCheck::parse(&[0x08, 0x01]).is_err());
        assert!(CheckRequest::decode(&[0x08u8, 0x01][..]).is_err());
        // global_word_count (field 2) as length-delimited.
        assert!(WireCheck::parse(&[0x12, 0x00]).is_err());
        // strings entry (attributes.2) whose value (field 2) is length-delimited.
        let inner = [0x12, 0x04, 0x08, 0x02, 0x12, 0x00];
        let mut msg = vec![0x0a, inner.len() as u8];
        msg.extend_from_slice(&inner);
        assert!(CheckRequest::decode(&msg[..]).is_err());
        assert!(WireCheck::parse(&msg).is_err());
        // A word that is not UTF-8.
        let msg = [0x0a, 0x04, 0x0a, 0x02, 0xff, 0xfe];
        assert!(CheckRequest::decode(&msg[..]).is_err());
        assert!(WireCheck::parse(&msg).is_err());
        // A length past the end.
        assert_eq!(
            WireCheck::parse(&[0x1a, 0x05, b'a']).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut bytes = request(&full_bag()).encode_to_vec();
        // field 15, varint 1; field 16, length-delimited "ab".
        bytes.extend_from_slice(&[0x78, 0x01, 0x82, 0x01, 0x02, b'a', b'b']);
        assert!(CheckRequest::decode(&bytes[..]).is_ok());
        let n = dictionary::words().len();
        assert_eq!(wire_bag(&bytes, n).unwrap(), full_bag());
    }

    #[test]
    fn bad_indexes_are_refused_like_decompress() {
        let n = dictionary::words().len();
        let cases = [
            CompressedAttributes {
                strings: [(-3, 1)].into(),
                ..Default::default()
            },
            CompressedAttributes {
                words: vec!["a".into()],
                strings: [(-1, -2)].into(),
                ..Default::default()
            },
            CompressedAttributes {
                int64s: [(200, 1)].into(),
                ..Default::default()
            },
            CompressedAttributes {
                string_maps: [(
                    dictionary::index_of("request.headers").unwrap(),
                    StringMap {
                        entries: [(-9, 0)].into(),
                    },
                )]
                .into(),
                ..Default::default()
            },
        ];
        for (i, attrs) in cases.into_iter().enumerate() {
            let words = if i == 2 { 100 } else { n };
            let req = CheckRequest {
                attributes: Some(attrs.clone()),
                ..Default::default()
            };
            let want = decompress_with_word_count(&attrs, words).unwrap_err();
            let got = wire_bag(&req.encode_to_vec(), words).unwrap_err();
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn bad_timestamps_and_durations_are_refused() {
        let name = dictionary::index_of("response.duration").unwrap();
        let req = CheckRequest {
            attributes: Some(CompressedAttributes {
                durations: [(
                    name,
                    prost_types::Duration {
                        seconds: -5,
                        nanos: 0,
                    },
                )]
                .into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let n = dictionary::words().len();
        assert!(matches!(
            wire_bag(&req.encode_to_vec(), n),
            Err(AttributeError::BadDuration { .. })
        ));
    }

    /// A length-delimited field `tag` holding `body`.
    fn field(tag: u32, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_key(tag, WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(body.len() as u64, &mut out);
        out.extend_from_slice(body);
        out
    }

    /// A `map<sint32, sint32>` entry.
    fn entry(k: i32, v: i32) -> Vec<u8> {
        let zz = |i: i32| u64::from(((i << 1) ^ (i >> 31)) as u32);
        let mut out = Vec::new();
        prost::encoding::encode_key(1, WireType::Varint, &mut out);
        prost::encoding::encode_varint(zz(k), &mut out);
        prost::encoding::encode_key(2, WireType::Varint, &mut out);
        prost::encoding::encode_varint(zz(v), &mut out);
        out
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value_and_repeated_attributes_merge() {
        let path = dictionary::index_of("request.path").unwrap();
        let n = dictionary::words().len();
        // attributes { words: ["x", "y"], strings {path: -1}, strings {path: -2} }
        let attrs = [
            field(1, b"x"),
            field(1, b"y"),
            field(2, &entry(path, -1)),
            field(2, &entry(path, -2)),
        ]
        .concat();
        let msg = field(1, &attrs);
        let prost = CheckRequest::decode(&msg[..]).unwrap();
        let want = decompress_with_word_count(prost.attributes.as_ref().unwrap(), n).unwrap();
        assert_eq!(want.get_string("request.path"), Some("y"));
        assert_eq!(wire_bag(&msg, n).unwrap(), want);
        // The attributes field twice: words and entries add up (protobuf merge).
        let twice = [
            field(1, &field(1, b"z")),
            field(1, &field(2, &entry(path, -1))),
        ]
        .concat();
        let prost = CheckRequest::decode(&twice[..]).unwrap();
        let want = decompress_with_word_count(prost.attributes.as_ref().unwrap(), n).unwrap();
        assert_eq!(want.get_string("request.path"), Some("z"));
        assert_eq!(wire_bag(&twice, n).unwrap(), want);
    }

    #[test]
    fn check_wire_decides_as_check_with_quotas() {
        let policy = Policy::default();
        let req = request(&full_bag());
        let bytes = req.encode_to_vec();
        let w = WireCheck::parse(&bytes).unwrap();
        let a = check_wire(&policy, &w).unwrap();
        let b = check_with_quotas(&policy, &req).unwrap();
        assert_eq!(a.response.quotas["requestcount"].granted_amount, 3);
        assert_eq!(a.response, b.response);
        assert_eq!(a.quota_calls, b.quota_calls);
    }

    #[test]
    fn check_wire_refuses_wrong_types_and_dictionary_mismatch() {
        let policy = Policy::default();
        let code = dictionary::index_of("response.code").unwrap();
        let req = CheckRequest {
            attributes: Some(CompressedAttributes {
                words: vec!["200".into()],
                strings: [(code, -1)].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let bytes = req.encode_to_vec();
        let err = check_wire(&policy, &WireCheck::parse(&bytes).unwrap()).unwrap_err();
        assert!(
            matches!(
                err,
                RequestError::Attributes(AttributeError::WrongType { .. })
            ),
            "{err:?}"
        );
        let req = CheckRequest {
            global_word_count: dictionary::words().len() as u32 + 1,
            ..Default::default()
        };
        let bytes = req.encode_to_vec();
        let err = check_wire(&policy, &WireCheck::parse(&bytes).unwrap()).unwrap_err();
        assert!(
            matches!(err, RequestError::DictionaryMismatch { .. }),
            "{err:?}"
        );
    }
}
