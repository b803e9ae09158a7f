//! Pilot's Prometheus metrics, registered once in the service's [`mesh_runtime::Metrics`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// Label naming an xDS type (`cds`, `eds`, `lds`, `rds`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

/// Label naming an MCP collection.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CollectionLabel {
    pub collection: String,
}

/// Every metric Pilot exports. Cheap to clone (the handles share their values).
#[derive(Debug, Clone, Default)]
pub struct PilotMetrics {
    /// `pilot_xds_pushes_total{type}`: xDS responses sent.
    pub xds_pushes: Family<TypeLabel, Counter>,
    /// `pilot_xds_nacks_total{type}`: xDS responses rejected by proxies.
    pub xds_nacks: Family<TypeLabel, Counter>,
    /// `pilot_xds_connected_proxies`: open ADS streams.
    pub connected_proxies: Gauge,
    /// `pilot_virtualservices_skipped_total`: VirtualService rules that could not be translated.
    pub vs_skipped: Counter,
    /// `pilot_galley_updates_total{collection}`: collection states received from Galley.
    pub galley_updates: Family<CollectionLabel, Counter>,
    /// `pilot_galley_nacks_total{collection}`: collection states rejected (undecodable resource).
    pub galley_nacks: Family<CollectionLabel, Counter>,
    /// `pilot_galley_connects_total`: streams opened to Galley.
    pub galley_connects: Counter,
}

impl PilotMetrics {
    /// Creates the metrics and registers them in `metrics`.
    pub fn register(metrics: &mesh_runtime::Metrics) -> PilotMetrics {
        let m = PilotMetrics::default();
        metrics.register(|r| {
            r.register(
                "pilot_xds_pushes",
                "xDS responses sent to proxies, by type",
                m.xds_pushes.clone(),
            );
            r.register(
                "pilot_xds_nacks",
                "xDS responses rejected by proxies, by type",
                m.xds_nacks.clone(),
            );
            r.register(
                "pilot_xds_connected_proxies",
                "Proxies with an open ADS stream",
                m.connected_proxies.clone(),
            );
            r.register(
                "pilot_virtualservices_skipped",
                "VirtualServices (or rules of them) skipped because they cannot be translated",
                m.vs_skipped.clone(),
            );
            r.register(
                "pilot_galley_updates",
                "Collection states received from Galley",
                m.galley_updates.clone(),
            );
            r.register(
                "pilot_galley_nacks",
                "Collection states from Galley rejected because a resource could not be decoded",
                m.galley_nacks.clone(),
            );
            r.register(
                "pilot_galley_connects",
                "MCP streams opened to Galley",
                m.galley_connects.clone(),
            );
        });
        m
    }

    /// Counts a push of `type_`.
    pub fn push(&self, type_: &str) {
        self.xds_pushes
            .get_or_create(&TypeLabel {
                r#type: type_.to_string(),
            })
            .inc();
    }

    /// Counts a NACK of `type_`.
    pub fn nack(&self, type_: &str) {
        self.xds_nacks
            .get_or_create(&TypeLabel {
                r#type: type_.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_names() {
        let reg = mesh_runtime::Metrics::default();
        let m = PilotMetrics::register(&reg);
        m.push("cds");
        m.nack("rds");
        m.connected_proxies.set(2);
        let text = reg.encode();
        assert!(
            text.contains("pilot_xds_pushes_total{type=\"cds\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pilot_xds_nacks_total{type=\"rds\"} 1"),
            "{text}"
        );
        assert!(text.contains("pilot_xds_connected_proxies 2"), "{text}");
    }
}
