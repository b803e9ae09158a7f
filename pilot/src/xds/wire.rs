//! Responses written straight from the shared, already encoded resources: a response holds an
//! `Arc` of the resource set and the indexes it sends, and its protobuf encoding copies each
//! resource's bytes into the gRPC frame. No resource is cloned or re-encoded per proxy.
//!
//! The encoding is exactly prost's for `DiscoveryResponse` / `DeltaDiscoveryResponse` (fields
//! in tag order, empty strings left out), so any xDS client decodes it.

use std::sync::Arc;

use mesh_proto::envoy::envoy::service::discovery::v3::{
    DeltaDiscoveryResponse, DiscoveryResponse, Resource,
};
use prost::bytes::{Buf, BufMut};
use prost::encoding::{DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint};
use prost::{DecodeError, Message};

use crate::translate::{EncodedResource, TypeResources};

/// Some resources of a shared set, by index.
#[derive(Debug, Clone, Default)]
pub(super) struct Picked {
    set: Arc<TypeResources>,
    picks: Arc<[u32]>,
}

impl Picked {
    /// The resources of `set` at `picks`.
    pub(super) fn new(set: Arc<TypeResources>, picks: Arc<[u32]>) -> Picked {
        Picked { set, picks }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &EncodedResource> {
        self.picks
            .iter()
            .filter_map(|i| self.set.resources.get(*i as usize))
    }

    pub(super) fn len(&self) -> usize {
        self.picks.len()
    }
}

/// Length of field `tag` holding `len` bytes (key, length, payload).
fn delimited_len(tag: u32, len: usize) -> usize {
    prost::encoding::key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_delimited_head(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// A string field, left out when empty (proto3).
fn str_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        delimited_len(tag, s.len())
    }
}

fn put_str(tag: u32, s: &str, buf: &mut impl BufMut) {
    if !s.is_empty() {
        put_delimited_head(tag, s.len(), buf);
        buf.put_slice(s.as_bytes());
    }
}

/// The encoded length of the resource's `Any` (without its own key and length).
fn any_len(r: &EncodedResource) -> usize {
    str_len(1, &r.resource.type_url)
        + if r.resource.value.is_empty() {
            0
        } else {
            delimited_len(2, r.resource.value.len())
        }
}

/// Writes the resource's `Any` as field `tag`.
fn put_any(tag: u32, r: &EncodedResource, buf: &mut impl BufMut) {
    put_delimited_head(tag, any_len(r), buf);
    put_str(1, &r.resource.type_url, buf);
    if !r.resource.value.is_empty() {
        put_delimited_head(2, r.resource.value.len(), buf);
        buf.put_slice(&r.resource.value);
    }
}

/// A SotW `DiscoveryResponse` over shared resources.
#[derive(Debug, Clone, Default)]
pub(super) struct SotwResponse {
    pub(super) version_info: String,
    pub(super) resources: Picked,
    pub(super) type_url: &'static str,
    pub(super) nonce: String,
}

impl SotwResponse {
    /// The same response as a decoded message.
    pub(super) fn decoded(&self) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: self.version_info.clone(),
            resources: self.resources.iter().map(|r| r.resource.clone()).collect(),
            type_url: self.type_url.to_string(),
            nonce: self.nonce.clone(),
            ..DiscoveryResponse::default()
        }
    }
}

impl Message for SotwResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_str(1, &self.version_info, buf);
        for r in self.resources.iter() {
            put_any(2, r, buf);
        }
        put_str(4, self.type_url, buf);
        put_str(5, &self.nonce, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // Encode-only: nothing is ever decoded into it.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        str_len(1, &self.version_info)
            + self
                .resources
                .iter()
                .map(|r| delimited_len(2, any_len(r)))
                .sum::<usize>()
            + str_len(4, self.type_url)
            + str_len(5, &self.nonce)
    }

    fn clear(&mut self) {
        *self = SotwResponse::default();
    }
}

/// A Delta `DeltaDiscoveryResponse` over shared resources.
#[derive(Debug, Clone, Default)]
pub(super) struct DeltaResponse {
    pub(super) system_version_info: String,
    pub(super) resources: Picked,
    pub(super) type_url: &'static str,
    pub(super) nonce: String,
    pub(super) removed_resources: Vec<String>,
}

/// The encoded length of a `Resource` {version = 1, resource = 2, name = 3}.
fn resource_len(r: &EncodedResource) -> usize {
    str_len(1, &r.version) + delimited_len(2, any_len(r)) + str_len(3, &r.name)
}

impl DeltaResponse {
    /// The same response as a decoded message.
    pub(super) fn decoded(&self) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            system_version_info: self.system_version_info.clone(),
            resources: self
                .resources
                .iter()
                .map(|r| Resource {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    resource: Some(r.resource.clone()),
                    ..Resource::default()
                })
                .collect(),
            type_url: self.type_url.to_string(),
            removed_resources: self.removed_resources.clone(),
            nonce: self.nonce.clone(),
            ..DeltaDiscoveryResponse::default()
        }
    }
}

impl Message for DeltaResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_str(1, &self.system_version_info, buf);
        for r in self.resources.iter() {
            put_delimited_head(2, resource_len(r), buf);
            put_str(1, &r.version, buf);
            put_any(2, r, buf);
            put_str(3, &r.name, buf);
        }
        put_str(4, self.type_url, buf);
        put_str(5, &self.nonce, buf);
        for n in &self.removed_resources {
            put_delimited_head(6, n.len(), buf);
            buf.put_slice(n.as_bytes());
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        str_len(1, &self.system_version_info)
            + self
                .resources
                .iter()
                .map(|r| delimited_len(2, resource_len(r)))
                .sum::<usize>()
            + str_len(4, self.type_url)
            + str_len(5, &self.nonce)
            + self
                .removed_resources
                .iter()
                .map(|n| delimited_len(6, n.len()))
                .sum::<usize>()
    }

    fn clear(&mut self) {
        *self = DeltaResponse::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::envoy::envoy::config::cluster::v3::Cluster;
    use mesh_proto::type_url;

    fn set() -> Arc<TypeResources> {
        Arc::new(TypeResources::encode(
            type_url::CLUSTER,
            ["a", "b", "c"].map(|n| {
                (
                    n.to_string(),
                    Cluster {
                        name: n.to_string(),
                        ..Cluster::default()
                    },
                )
            }),
        ))
    }

    #[test]
    fn encodes_like_the_generated_messages() {
        let r = SotwResponse {
            version_info: "v1".into(),
            resources: Picked::new(set(), vec![0, 2].into()),
            type_url: type_url::CLUSTER,
            nonce: "n".into(),
        };
        let bytes = r.encode_to_vec();
        assert_eq!(bytes.len(), r.encoded_len());
        let d = DiscoveryResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(d, r.decoded());
        assert_eq!(bytes, d.encode_to_vec(), "byte for byte prost's encoding");
        assert_eq!(d.resources.len(), 2);
        assert_eq!(
            Cluster::decode(d.resources[1].value.as_slice())
                .unwrap()
                .name,
            "c"
        );

        let r = DeltaResponse {
            system_version_info: "v2".into(),
            resources: Picked::new(set(), vec![1].into()),
            type_url: type_url::CLUSTER,
            nonce: "m".into(),
            removed_resources: vec!["x".into(), "y".into()],
        };
        let bytes = r.encode_to_vec();
        assert_eq!(bytes.len(), r.encoded_len());
        let d = DeltaDiscoveryResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(d, r.decoded());
        assert_eq!(bytes, d.encode_to_vec());
        assert_eq!(d.resources[0].name, "b");
    }
}
