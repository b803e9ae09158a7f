//! Encoded xDS resources per type, with content-derived versions.

use mesh_proto::envoy::google::protobuf::{Any, Duration};
use mesh_proto::type_url;
use prost::Message;

/// The four xDS types Pilot serves, in push order (CDS before EDS, LDS before RDS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum XdsType {
    Cluster,
    Endpoint,
    Listener,
    Route,
}

impl XdsType {
    /// Push order.
    pub const ALL: [XdsType; 4] = [
        XdsType::Cluster,
        XdsType::Endpoint,
        XdsType::Listener,
        XdsType::Route,
    ];

    /// The v3 type URL.
    pub fn type_url(self) -> &'static str {
        match self {
            XdsType::Cluster => type_url::CLUSTER,
            XdsType::Endpoint => type_url::ENDPOINT,
            XdsType::Listener => type_url::LISTENER,
            XdsType::Route => type_url::ROUTE,
        }
    }

    /// The type for `url`.
    pub fn from_type_url(url: &str) -> Option<XdsType> {
        XdsType::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// Short name for logs and metrics: `cds`, `eds`, `lds`, `rds`.
    pub fn short(self) -> &'static str {
        match self {
            XdsType::Cluster => "cds",
            XdsType::Endpoint => "eds",
            XdsType::Listener => "lds",
            XdsType::Route => "rds",
        }
    }

    /// Whether clients subscribe to this type by resource name (RDS, EDS).
    pub fn named(self) -> bool {
        matches!(self, XdsType::Endpoint | XdsType::Route)
    }
}

/// One encoded resource and its own version (for Delta xDS).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncodedResource {
    pub name: String,
    /// Hex hash of the name and the encoding: changes exactly when the resource does.
    pub version: String,
    pub resource: Any,
}

/// One type's resources, encoded, and their version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypeResources {
    /// Hex hash of every resource's name and encoding, in order.
    pub version: String,
    /// Every resource, in the order given (sorted by name).
    pub resources: Vec<EncodedResource>,
}

impl TypeResources {
    /// Encodes `items` (already sorted by name) as `type_url` resources.
    pub fn encode<M: Message>(
        type_url: &str,
        items: impl IntoIterator<Item = (String, M)>,
    ) -> TypeResources {
        let mut hash = Fnv64::default();
        let mut resources = Vec::new();
        for (name, msg) in items {
            let any = pack(type_url, &msg);
            hash.write_len_prefixed(name.as_bytes());
            hash.write_len_prefixed(&any.value);
            let mut own = Fnv64::default();
            own.write_len_prefixed(name.as_bytes());
            own.write_len_prefixed(&any.value);
            resources.push(EncodedResource {
                name,
                version: format!("{:016x}", own.0),
                resource: any,
            });
        }
        TypeResources {
            version: format!("{:016x}", hash.0),
            resources,
        }
    }

    /// The resources named in `names` (all of them when `names` is empty).
    pub fn select(&self, names: &[String]) -> Vec<Any> {
        self.resources
            .iter()
            .filter(|r| names.is_empty() || names.contains(&r.name))
            .map(|r| r.resource.clone())
            .collect()
    }

    /// The resource called `name`.
    pub fn get(&self, name: &str) -> Option<&EncodedResource> {
        self.resources.iter().find(|r| r.name == name)
    }
}

/// Packs `msg` into an `Any` of `type_url`.
pub fn pack<M: Message>(type_url: &str, msg: &M) -> Any {
    Any {
        type_url: type_url.to_string(),
        value: msg.encode_to_vec(),
    }
}

/// A protobuf duration.
pub fn duration(d: std::time::Duration) -> Duration {
    Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// 64-bit FNV-1a: stable across processes and Rust versions, unlike `DefaultHasher`.
struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_len_prefixed(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::envoy::envoy::config::cluster::v3::Cluster;

    fn cluster(name: &str) -> (String, Cluster) {
        (
            name.to_string(),
            Cluster {
                name: name.to_string(),
                ..Cluster::default()
            },
        )
    }

    #[test]
    fn version_follows_content_and_select_filters() {
        let a = TypeResources::encode(type_url::CLUSTER, [cluster("a"), cluster("b")]);
        let a2 = TypeResources::encode(type_url::CLUSTER, [cluster("a"), cluster("b")]);
        let b = TypeResources::encode(type_url::CLUSTER, [cluster("a")]);
        assert_eq!(a.version, a2.version);
        assert_ne!(a.version, b.version);
        assert_eq!(a.select(&[]).len(), 2);
        assert_eq!(a.select(&["b".to_string(), "zz".to_string()]).len(), 1);
        assert_eq!(a.resources[0].resource.type_url, type_url::CLUSTER);
        // Per-resource versions: equal for equal content, distinct per resource.
        let c = TypeResources::encode(type_url::CLUSTER, [cluster("a"), cluster("c")]);
        assert_eq!(a.get("a").unwrap().version, c.get("a").unwrap().version);
        assert_ne!(a.get("a").unwrap().version, a.get("b").unwrap().version);
        assert!(c.get("b").is_none());
        assert_eq!(
            XdsType::from_type_url(type_url::ROUTE),
            Some(XdsType::Route)
        );
        assert_eq!(XdsType::from_type_url("nope"), None);
    }
}
