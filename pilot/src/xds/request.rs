//! SotW requests decoded without their resource names: a SotW client re-sends its whole name
//! list with every request (an EDS ACK of an unscoped proxy names thousands of clusters), and
//! nearly always the list it named already. The names stay in the received bytes
//! ([`RawNames`]); a stream compares them with the list it holds and splits them into
//! `String`s only when they differ. Every other field is decoded as the generated message.

use bytes::Bytes;
use mesh_proto::envoy::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint};
use prost::{DecodeError, Message};

/// `DiscoveryRequest.resource_names`.
const RESOURCE_NAMES: u32 = 3;

/// Why a request could not be decoded.
#[derive(Debug, thiserror::Error)]
pub(super) enum RequestError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("a resource name is not UTF-8")]
    NameNotUtf8,
    #[error("a resource name runs past the end of the message")]
    NameTruncated,
}

/// A request message decoded from the bytes of one gRPC frame.
pub(super) trait WireRequest: Sized + Send + 'static {
    fn decode_wire(msg: Bytes) -> Result<Self, RequestError>;
}

impl WireRequest for DeltaDiscoveryRequest {
    fn decode_wire(msg: Bytes) -> Result<Self, RequestError> {
        Ok(DeltaDiscoveryRequest::decode(msg)?)
    }
}

impl WireRequest for DiscoveryRequest {
    fn decode_wire(msg: Bytes) -> Result<Self, RequestError> {
        Ok(DiscoveryRequest::decode(msg)?)
    }
}

/// A SotW `DiscoveryRequest`: `rest` holds every field but `resource_names` (left empty).
#[derive(Debug, Clone, Default)]
pub(super) struct SotwRequest {
    pub(super) rest: DiscoveryRequest,
    pub(super) names: RawNames,
}

impl From<DiscoveryRequest> for SotwRequest {
    fn from(mut rest: DiscoveryRequest) -> Self {
        let names = RawNames::Decoded(std::mem::take(&mut rest.resource_names));
        SotwRequest { rest, names }
    }
}

impl WireRequest for SotwRequest {
    fn decode_wire(msg: Bytes) -> Result<Self, RequestError> {
        let mut rest = DiscoveryRequest::default();
        let mut buf: &[u8] = &msg;
        let mut count = 0usize;
        let ctx = DecodeContext::default();
        while !buf.is_empty() {
            let (tag, wire_type) = decode_key(&mut buf)?;
            if tag == RESOURCE_NAMES && wire_type == WireType::LengthDelimited {
                // Skipped over: UTF-8 is checked when the names are split (a name equal to
                // one the stream holds is valid).
                let len = usize::try_from(decode_varint(&mut buf)?)
                    .map_err(|_| RequestError::NameTruncated)?;
                buf = buf.get(len..).ok_or(RequestError::NameTruncated)?;
                count += 1;
            } else {
                rest.merge_field(tag, wire_type, &mut buf, ctx.clone())?;
            }
        }
        let names = if count == 0 {
            RawNames::Decoded(Vec::new())
        } else {
            RawNames::Raw { msg, count }
        };
        Ok(SotwRequest { rest, names })
    }
}

/// A request's resource names, in the order sent (duplicates kept).
#[derive(Debug, Clone)]
pub(super) enum RawNames {
    /// Inside the received message: `count` `resource_names` fields (UTF-8 not checked yet).
    Raw { msg: Bytes, count: usize },
    /// Already split (requests built in process).
    Decoded(Vec<String>),
}

impl Default for RawNames {
    fn default() -> Self {
        RawNames::Decoded(Vec::new())
    }
}

impl RawNames {
    pub(super) fn len(&self) -> usize {
        match self {
            RawNames::Raw { count, .. } => *count,
            RawNames::Decoded(v) => v.len(),
        }
    }

    /// Each name's bytes, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let (raw, decoded) = match self {
            RawNames::Raw { msg, .. } => (Some(RawIter { buf: &msg[..] }), None),
            RawNames::Decoded(v) => (None, Some(v.iter().map(|s| s.as_bytes()))),
        };
        raw.into_iter()
            .flatten()
            .chain(decoded.into_iter().flatten())
    }

    /// Whether these are `names`, in the same order (no allocation).
    pub(super) fn same_as(&self, names: &[String]) -> bool {
        self.len() == names.len() && self.iter().eq(names.iter().map(|n| n.as_bytes()))
    }

    /// The names as `String`s; an error when one is not UTF-8.
    pub(super) fn into_strings(self) -> Result<Vec<String>, RequestError> {
        match self {
            RawNames::Decoded(v) => Ok(v),
            RawNames::Raw { .. } => self
                .iter()
                .map(|b| {
                    std::str::from_utf8(b)
                        .map(str::to_string)
                        .map_err(|_| RequestError::NameNotUtf8)
                })
                .collect(),
        }
    }
}

/// The `resource_names` fields of an encoded `DiscoveryRequest` (its structure was checked when
/// decoded, so the walk does not fail; a malformed rest would end it).
struct RawIter<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for RawIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        while !self.buf.is_empty() {
            let (tag, wire_type) = decode_key(&mut self.buf).ok()?;
            if wire_type == WireType::LengthDelimited {
                let len = usize::try_from(decode_varint(&mut self.buf).ok()?).ok()?;
                let value = self.buf.get(..len)?;
                self.buf = &self.buf[len..];
                if tag == RESOURCE_NAMES {
                    return Some(value);
                }
            } else {
                prost::encoding::skip_field(
                    wire_type,
                    tag,
                    &mut self.buf,
                    DecodeContext::default(),
                )
                .ok()?;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::envoy::envoy::config::core::v3::Node;
    use mesh_proto::envoy::google::rpc::Status as RpcStatus;

    fn request(names: &[&str]) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: "v1".into(),
            node: Some(Node {
                id: "sidecar~10.0.0.1~a-1.default~default.svc.cluster.local".into(),
                ..Node::default()
            }),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            type_url: "t".into(),
            response_nonce: "n".into(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: "bad".into(),
                details: vec![],
            }),
            ..DiscoveryRequest::default()
        }
    }

    #[test]
    fn decodes_every_field_and_keeps_names_raw() {
        let names = ["b", "a", "a", "outbound|80||c.default.svc.cluster.local"];
        let req = request(&names);
        let bytes = Bytes::from(req.encode_to_vec());
        let got = SotwRequest::decode_wire(bytes).unwrap();
        assert!(matches!(got.names, RawNames::Raw { count: 4, .. }));
        let mut rest = req.clone();
        rest.resource_names.clear();
        assert_eq!(got.rest, rest);
        let owned: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        assert!(got.names.same_as(&owned));
        assert!(!got.names.same_as(&owned[..3]));
        let mut other = owned.clone();
        other.swap(0, 1);
        assert!(!got.names.same_as(&other), "order matters");
        assert_eq!(got.names.clone().into_strings().unwrap(), owned);
        // The same through the in-process conversion.
        let conv = SotwRequest::from(req);
        assert!(conv.names.same_as(&owned));
        assert_eq!(conv.rest, rest);
    }

    #[test]
    fn names_interleaved_with_other_fields_and_none() {
        // Fields out of tag order (allowed on the wire): names around the type URL.
        let mut wire = Vec::new();
        prost::encoding::string::encode(3, &"x".to_string(), &mut wire);
        prost::encoding::string::encode(4, &"t".to_string(), &mut wire);
        prost::encoding::string::encode(3, &"y".to_string(), &mut wire);
        let got = SotwRequest::decode_wire(Bytes::from(wire)).unwrap();
        assert_eq!(got.rest.type_url, "t");
        assert_eq!(got.names.into_strings().unwrap(), vec!["x", "y"]);
        let empty = SotwRequest::decode_wire(Bytes::from(request(&[]).encode_to_vec())).unwrap();
        assert_eq!(empty.names.len(), 0);
        assert!(empty.names.same_as(&[]));
    }

    #[test]
    fn invalid_names_are_refused_when_split() {
        let mut wire = Vec::new();
        prost::encoding::bytes::encode(3, &vec![0xff, 0xfe], &mut wire);
        let got = SotwRequest::decode_wire(Bytes::from(wire)).unwrap();
        assert!(!got.names.same_as(&["a".to_string()]));
        assert!(matches!(
            got.names.into_strings(),
            Err(RequestError::NameNotUtf8)
        ));
        let mut cut = request(&["abc"]).encode_to_vec();
        cut.truncate(cut.len() - 1);
        assert!(SotwRequest::decode_wire(Bytes::from(cut)).is_err());
    }
}
