//! Istio's configuration forms from before `compiledAdapter`/`compiledTemplate`: a handler is an
//! object whose kind is the adapter's name (`kind: stdio`, `kind: denier`, ...) and an instance
//! one whose kind is the template's name (`kind: logentry`, `kind: quota`, ...), both
//! `config.istio.io/v1alpha2`, their `spec` being the params.
//!
//! Galley delivers them over MCP in the collections `istio/config/v1alpha2/legacy/<plural>`
//! ([`collection`]), one `mesh_proto::config::Kind::Legacy` each, as Istio 1.4's Galley did;
//! Mixer's sink subscribes to all of them. [`ConfigState::apply_legacy`] (also reached through
//! [`ConfigState::apply`] for a legacy collection) and [`ConfigState::apply_objects`] take them,
//! and the policy resolves them like `handler` and `instance` objects.
//!
//! [`ConfigState::apply_legacy`]: super::ConfigState::apply_legacy
//! [`ConfigState::apply_objects`]: super::ConfigState::apply_objects

use mesh_proto::config::{ConfigObject, HandlerSpec, InstanceSpec, Kind};

/// The API version of the legacy kinds.
pub const API_VERSION: &str = "config.istio.io/v1alpha2";

/// Adapters that may be written as a kind of their own, with their collection's plural.
pub const ADAPTER_KINDS: [(&str, &str); 8] = [
    ("denier", "deniers"),
    ("listchecker", "listcheckers"),
    ("memquota", "memquotas"),
    ("redisquota", "redisquotas"),
    ("prometheus", "prometheuses"),
    ("stdio", "stdios"),
    ("opentelemetry", "opentelemetries"),
    ("noop", "noops"),
];

/// Templates that may be written as a kind of their own, with their collection's plural.
pub const TEMPLATE_KINDS: [(&str, &str); 7] = [
    ("quota", "quotas"),
    ("metric", "metrics"),
    ("logentry", "logentries"),
    ("checknothing", "checknothings"),
    ("listentry", "listentries"),
    ("tracespan", "tracespans"),
    ("reportnothing", "reportnothings"),
];

/// What a legacy object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyKind {
    /// A handler of the named adapter.
    Adapter(&'static str),
    /// An instance of the named template.
    Template(&'static str),
}

impl LegacyKind {
    /// The legacy kind of `apiVersion` + `kind`, if it is one.
    pub fn of(api_version: &str, kind: &str) -> Option<LegacyKind> {
        if api_version != API_VERSION {
            return None;
        }
        Self::named(kind)
    }

    /// The legacy kind named `kind` (`stdio`, `logentry`, ...).
    pub fn named(kind: &str) -> Option<LegacyKind> {
        ADAPTER_KINDS
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(k, _)| LegacyKind::Adapter(k))
            .or_else(|| {
                TEMPLATE_KINDS
                    .iter()
                    .find(|(k, _)| *k == kind)
                    .map(|(k, _)| LegacyKind::Template(k))
            })
    }

    /// The legacy kind a mesh [`Kind`] stands for (`Kind::Legacy(..)`), if Mixer knows it.
    pub fn from_kind(kind: Kind) -> Option<LegacyKind> {
        match kind {
            Kind::Legacy(l) => Self::named(l.name()),
            _ => None,
        }
    }

    /// The mesh [`Kind`] of this legacy kind (its collection is the one galley serves it in).
    pub fn mesh_kind(self) -> Option<Kind> {
        Kind::legacy().find(|k| k.info().kind == self.name())
    }

    /// The kind's name.
    pub fn name(self) -> &'static str {
        match self {
            LegacyKind::Adapter(k) | LegacyKind::Template(k) => k,
        }
    }

    /// The typed `handler` or `instance` spec this object stands for.
    pub fn convert(self, obj: &ConfigObject) -> Legacy {
        let params = obj.body.get("spec").cloned();
        match self {
            LegacyKind::Adapter(adapter) => Legacy::Handler(HandlerSpec {
                compiled_adapter: Some(adapter.to_string()),
                adapter: None,
                params,
            }),
            LegacyKind::Template(template) => Legacy::Instance(InstanceSpec {
                compiled_template: Some(template.to_string()),
                template: None,
                params,
            }),
        }
    }
}

/// A legacy object as the handler or instance it is.
#[derive(Debug, Clone, PartialEq)]
pub enum Legacy {
    Handler(HandlerSpec),
    Instance(InstanceSpec),
}

/// The MCP collection Istio 1.4's Galley serves a legacy kind in
/// (`istio/config/v1alpha2/legacy/stdios`).
pub fn collection(kind: &str) -> Option<String> {
    ADAPTER_KINDS
        .iter()
        .chain(TEMPLATE_KINDS.iter())
        .find(|(k, _)| *k == kind)
        .map(|(_, plural)| format!("istio/config/v1alpha2/legacy/{plural}"))
}

/// Every legacy collection Mixer would subscribe to.
pub fn collections() -> Vec<String> {
    ADAPTER_KINDS
        .iter()
        .chain(TEMPLATE_KINDS.iter())
        .filter_map(|(k, _)| collection(k))
        .collect()
}

/// The legacy kind a collection name carries.
pub fn kind_of_collection(collection: &str) -> Option<LegacyKind> {
    let plural = collection.strip_prefix("istio/config/v1alpha2/legacy/")?;
    ADAPTER_KINDS
        .iter()
        .chain(TEMPLATE_KINDS.iter())
        .find(|(_, p)| *p == plural)
        .and_then(|(k, _)| LegacyKind::named(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_collections() {
        assert_eq!(
            LegacyKind::of(API_VERSION, "stdio"),
            Some(LegacyKind::Adapter("stdio"))
        );
        assert_eq!(
            LegacyKind::of(API_VERSION, "logentry"),
            Some(LegacyKind::Template("logentry"))
        );
        assert_eq!(LegacyKind::of("v1", "stdio"), None);
        assert_eq!(LegacyKind::of(API_VERSION, "rule"), None);
        assert_eq!(
            collection("listentry").as_deref(),
            Some("istio/config/v1alpha2/legacy/listentries")
        );
        assert_eq!(
            kind_of_collection("istio/config/v1alpha2/legacy/memquotas"),
            Some(LegacyKind::Adapter("memquota"))
        );
        assert_eq!(collections().len(), 15);
    }

    #[test]
    fn every_legacy_kind_is_a_mesh_kind_with_the_same_collection() {
        for (name, _) in ADAPTER_KINDS.iter().chain(TEMPLATE_KINDS.iter()) {
            let l = LegacyKind::named(name).unwrap();
            let kind = l.mesh_kind().unwrap();
            assert_eq!(kind.info().collection, collection(name).unwrap());
            assert_eq!(LegacyKind::from_kind(kind), Some(l));
            assert_eq!(Kind::from_type(API_VERSION, name), Some(kind));
        }
        assert_eq!(Kind::legacy().count(), collections().len());
        assert_eq!(LegacyKind::from_kind(Kind::Rule), None);
    }
}
