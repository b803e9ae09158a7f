//! Encoded xDS resources per type, with content-derived versions.

use mesh_proto::envoy::google::protobuf::{Any, Duration};
use mesh_proto::type_url;
use prost::Message;

/// The xDS types Pilot serves, in push order (CDS before EDS, LDS before RDS, SDS last as
/// Istio orders it). Secrets (SDS) go only to gateway proxies (see `crate::sds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum XdsType {
    Cluster,
    Endpoint,
    Listener,
    Route,
    Secret,
}

impl XdsType {
    /// Push order.
    pub const ALL: [XdsType; 5] = [
        XdsType::Cluster,
        XdsType::Endpoint,
        XdsType::Listener,
        XdsType::Route,
        XdsType::Secret,
    ];

    /// The v3 type URL.
    pub fn type_url(self) -> &'static str {
        match self {
            XdsType::Cluster => type_url::CLUSTER,
            XdsType::Endpoint => type_url::ENDPOINT,
            XdsType::Listener => type_url::LISTENER,
            XdsType::Route => type_url::ROUTE,
            XdsType::Secret => type_url::SECRET,
        }
    }

    /// The type for `url`.
    pub fn from_type_url(url: &str) -> Option<XdsType> {
        XdsType::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// Short name for logs and metrics: `cds`, `eds`, `lds`, `rds`, `sds`.
    pub fn short(self) -> &'static str {
        match self {
            XdsType::Cluster => "cds",
            XdsType::Endpoint => "eds",
            XdsType::Listener => "lds",
            XdsType::Route => "rds",
            XdsType::Secret => "sds",
        }
    }

    /// Whether clients subscribe to this type by resource name (RDS, EDS, SDS).
    pub fn named(self) -> bool {
        matches!(self, XdsType::Endpoint | XdsType::Route | XdsType::Secret)
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

    /// Resources already encoded (sorted by name), with the version [`TypeResources::encode`]
    /// would give them.
    pub fn from_encoded(resources: Vec<EncodedResource>) -> TypeResources {
        let mut hash = Fnv64::default();
        for r in &resources {
            hash.write_len_prefixed(r.name.as_bytes());
            hash.write_len_prefixed(&r.resource.value);
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

    /// The resource called `name` (a binary search: resources are sorted by name).
    pub fn get(&self, name: &str) -> Option<&EncodedResource> {
        self.position(name).and_then(|i| self.resources.get(i))
    }

    /// The index of the resource called `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        match self
            .resources
            .binary_search_by(|r| r.name.as_str().cmp(name))
        {
            Ok(i) => Some(i),
            // Not sorted after all: look everywhere.
            Err(_) => self.resources.iter().position(|r| r.name == name),
        }
    }

    /// These resources with the ones `drop` names removed and `fresh` (sorted by name) added;
    /// also returns the names whose resource changed, appeared or went away.
    pub fn patch(
        &self,
        drop: impl Fn(&str) -> bool,
        fresh: Vec<EncodedResource>,
    ) -> (TypeResources, std::collections::BTreeSet<String>) {
        use std::collections::BTreeMap;
        let mut changed: BTreeMap<&str, Option<&str>> = BTreeMap::new();
        for r in self.resources.iter().filter(|r| drop(&r.name)) {
            changed.insert(&r.name, Some(&r.version));
        }
        let mut out: Vec<EncodedResource> = Vec::with_capacity(self.resources.len());
        let mut fresh = fresh.into_iter().peekable();
        for r in self.resources.iter().filter(|r| !drop(&r.name)) {
            while let Some(f) = fresh.next_if(|f| f.name < r.name) {
                out.push(f);
            }
            out.push(r.clone());
        }
        out.extend(fresh);
        let mut names = std::collections::BTreeSet::new();
        for r in &out {
            if let Some(old) = changed.remove(r.name.as_str())
                && old != Some(r.version.as_str())
            {
                names.insert(r.name.clone());
            }
        }
        names.extend(changed.into_keys().map(str::to_string));
        // A fresh resource that was not dropped before is new.
        let before: std::collections::BTreeSet<&str> =
            self.resources.iter().map(|r| r.name.as_str()).collect();
        names.extend(
            out.iter()
                .filter(|r| !before.contains(r.name.as_str()))
                .map(|r| r.name.clone()),
        );
        (TypeResources::from_encoded(out), names)
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
        // Re-assembled from encoded resources: the same version.
        let again = TypeResources::from_encoded(a.resources.clone());
        assert_eq!(again, a);
        assert_eq!(
            TypeResources::from_encoded(vec![a.resources[0].clone()]).version,
            b.version
        );
        // Patched: b dropped and re-added unchanged, c added, a kept.
        let fresh = TypeResources::encode(type_url::CLUSTER, [cluster("b"), cluster("c")]);
        let (p, changed) = a.patch(|n| n == "b", fresh.resources);
        assert_eq!(
            p,
            TypeResources::encode(
                type_url::CLUSTER,
                [cluster("a"), cluster("b"), cluster("c")]
            )
        );
        assert_eq!(
            changed.into_iter().collect::<Vec<_>>(),
            vec!["c".to_string()]
        );
        let mut b2 = cluster("b");
        b2.1.alt_stat_name = "x".into();
        let fresh = TypeResources::encode(type_url::CLUSTER, [b2]);
        let (p2, changed) = p.patch(|n| n == "b" || n == "a", fresh.resources);
        assert_eq!(p2.resources.len(), 2);
        assert_eq!(changed.into_iter().collect::<Vec<_>>(), vec!["a", "b"]);
        assert_ne!(p2.get("b").unwrap().version, p.get("b").unwrap().version);
        assert_eq!(
            XdsType::from_type_url(type_url::ROUTE),
            Some(XdsType::Route)
        );
        assert_eq!(XdsType::from_type_url("nope"), None);
    }
}
