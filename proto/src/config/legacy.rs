//! Istio 1.4's legacy Mixer kinds: a handler written as an object whose kind is its adapter's
//! name (`kind: denier`, `kind: stdio`, ...) and an instance whose kind is its template's name
//! (`kind: checknothing`, `kind: logentry`, ...), all `config.istio.io/v1alpha2`, their `spec`
//! being the params. Each is a [`super::Kind::Legacy`] served in the MCP collection
//! `istio/config/v1alpha2/legacy/<plural>` (as Istio 1.4's Galley did).

/// One legacy adapter or template kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LegacyKind {
    Denier,
    ListChecker,
    MemQuota,
    RedisQuota,
    Prometheus,
    Stdio,
    OpenTelemetry,
    Noop,
    Quota,
    Metric,
    LogEntry,
    CheckNothing,
    ListEntry,
    TraceSpan,
    ReportNothing,
}

impl LegacyKind {
    /// Every legacy kind, adapters first.
    pub const ALL: [LegacyKind; 15] = [
        LegacyKind::Denier,
        LegacyKind::ListChecker,
        LegacyKind::MemQuota,
        LegacyKind::RedisQuota,
        LegacyKind::Prometheus,
        LegacyKind::Stdio,
        LegacyKind::OpenTelemetry,
        LegacyKind::Noop,
        LegacyKind::Quota,
        LegacyKind::Metric,
        LegacyKind::LogEntry,
        LegacyKind::CheckNothing,
        LegacyKind::ListEntry,
        LegacyKind::TraceSpan,
        LegacyKind::ReportNothing,
    ];

    /// The kind as written in `kind:` (the adapter's or template's name) and its MCP collection.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            LegacyKind::Denier => ("denier", "istio/config/v1alpha2/legacy/deniers"),
            LegacyKind::ListChecker => ("listchecker", "istio/config/v1alpha2/legacy/listcheckers"),
            LegacyKind::MemQuota => ("memquota", "istio/config/v1alpha2/legacy/memquotas"),
            LegacyKind::RedisQuota => ("redisquota", "istio/config/v1alpha2/legacy/redisquotas"),
            LegacyKind::Prometheus => ("prometheus", "istio/config/v1alpha2/legacy/prometheuses"),
            LegacyKind::Stdio => ("stdio", "istio/config/v1alpha2/legacy/stdios"),
            LegacyKind::OpenTelemetry => (
                "opentelemetry",
                "istio/config/v1alpha2/legacy/opentelemetries",
            ),
            LegacyKind::Noop => ("noop", "istio/config/v1alpha2/legacy/noops"),
            LegacyKind::Quota => ("quota", "istio/config/v1alpha2/legacy/quotas"),
            LegacyKind::Metric => ("metric", "istio/config/v1alpha2/legacy/metrics"),
            LegacyKind::LogEntry => ("logentry", "istio/config/v1alpha2/legacy/logentries"),
            LegacyKind::CheckNothing => {
                ("checknothing", "istio/config/v1alpha2/legacy/checknothings")
            }
            LegacyKind::ListEntry => ("listentry", "istio/config/v1alpha2/legacy/listentries"),
            LegacyKind::TraceSpan => ("tracespan", "istio/config/v1alpha2/legacy/tracespans"),
            LegacyKind::ReportNothing => (
                "reportnothing",
                "istio/config/v1alpha2/legacy/reportnothings",
            ),
        }
    }

    /// The kind's name (`denier`, `logentry`, ...).
    pub fn name(self) -> &'static str {
        self.names().0
    }

    /// The MCP collection (`istio/config/v1alpha2/legacy/deniers`).
    pub fn collection(self) -> &'static str {
        self.names().1
    }

    /// Whether this kind is a handler of an adapter (else it is an instance of a template).
    pub fn is_adapter(self) -> bool {
        matches!(
            self,
            LegacyKind::Denier
                | LegacyKind::ListChecker
                | LegacyKind::MemQuota
                | LegacyKind::RedisQuota
                | LegacyKind::Prometheus
                | LegacyKind::Stdio
                | LegacyKind::OpenTelemetry
                | LegacyKind::Noop
        )
    }

    /// The legacy kind named `name`.
    pub fn named(name: &str) -> Option<LegacyKind> {
        LegacyKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_collections_and_roles() {
        assert_eq!(LegacyKind::named("memquota"), Some(LegacyKind::MemQuota));
        assert_eq!(LegacyKind::named("rule"), None);
        assert_eq!(
            LegacyKind::ListEntry.collection(),
            "istio/config/v1alpha2/legacy/listentries"
        );
        assert!(LegacyKind::Denier.is_adapter());
        assert!(!LegacyKind::CheckNothing.is_adapter());
        assert_eq!(LegacyKind::ALL.iter().filter(|k| k.is_adapter()).count(), 8);
        for k in LegacyKind::ALL {
            let plural = k.collection().rsplit('/').next().unwrap();
            let stem = &k.name()[..k.name().len() - 1];
            assert!(plural.starts_with(stem), "{plural}");
        }
    }
}
