//! Pilot's Prometheus metrics, registered once in the service's [`mesh_runtime::Metrics`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

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

/// Label naming what a push recomputed: `full` or `endpoints` (EDS only).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// Buckets from 1 ms to ~33 s.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric Pilot exports. Cheap to clone (the handles share their values).
#[derive(Debug, Clone)]
pub struct PilotMetrics {
    /// `pilot_xds_pushes_total{type}`: xDS responses sent.
    pub xds_pushes: Family<TypeLabel, Counter>,
    /// `pilot_xds_nacks_total{type}`: xDS responses rejected by proxies.
    pub xds_nacks: Family<TypeLabel, Counter>,
    /// `pilot_xds_connected_proxies`: open ADS streams.
    pub connected_proxies: Gauge,
    /// `pilot_virtualservices_skipped_total`: VirtualService rules that could not be translated.
    pub vs_skipped: Counter,
    /// `pilot_registry_problems`: config objects the last push left out as invalid.
    pub registry_problems: Gauge,
    /// `pilot_galley_updates_total{collection}`: collection states received from Galley.
    pub galley_updates: Family<CollectionLabel, Counter>,
    /// `pilot_galley_nacks_total{collection}`: collection states rejected (undecodable resource).
    pub galley_nacks: Family<CollectionLabel, Counter>,
    /// `pilot_galley_connects_total`: streams opened to Galley.
    pub galley_connects: Counter,
    /// `pilot_push_triggers_total{kind}`: debounced config changes pushed (`full`, `endpoints`).
    pub push_triggers: Family<KindLabel, Counter>,
    /// `pilot_push_context_seconds`: time to build the shared part of a push (registry, CDS, EDS).
    pub push_context_time: Histogram,
    /// `pilot_xds_push_seconds`: time to recompute and queue one proxy's push.
    pub push_time: Histogram,
    /// `pilot_xds_convergence_seconds`: from a config change reaching Pilot until every proxy
    /// connected at push time answered (ACK or NACK) what it was sent.
    pub convergence_time: Histogram,
}

impl Default for PilotMetrics {
    fn default() -> Self {
        PilotMetrics {
            xds_pushes: Family::default(),
            xds_nacks: Family::default(),
            connected_proxies: Gauge::default(),
            vs_skipped: Counter::default(),
            registry_problems: Gauge::default(),
            galley_updates: Family::default(),
            galley_nacks: Family::default(),
            galley_connects: Counter::default(),
            push_triggers: Family::default(),
            push_context_time: seconds(),
            push_time: seconds(),
            convergence_time: seconds(),
        }
    }
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
                "pilot_registry_problems",
                "Config objects (Sidecars, WorkloadEntries, security policies) the last push left out because they are invalid; /debug/registryz lists them",
                m.registry_problems.clone(),
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
            r.register(
                "pilot_push_triggers",
                "Debounced config changes pushed, by what they recompute (full, endpoints)",
                m.push_triggers.clone(),
            );
            r.register(
                "pilot_push_context_seconds",
                "Time to build the shared part of a push (registry, clusters, endpoints)",
                m.push_context_time.clone(),
            );
            r.register(
                "pilot_xds_push_seconds",
                "Time to recompute and queue one proxy's push",
                m.push_time.clone(),
            );
            r.register(
                "pilot_xds_convergence_seconds",
                "Time from a config change reaching Pilot until every connected proxy answered it",
                m.convergence_time.clone(),
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

    /// Counts a debounced push of `kind` (`full` or `endpoints`).
    pub fn trigger(&self, kind: &str) {
        self.push_triggers
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
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
        m.trigger("endpoints");
        m.convergence_time.observe(0.05);
        m.push_time.observe(0.001);
        m.push_context_time.observe(0.01);
        let text = reg.encode();
        assert!(
            text.contains("pilot_push_triggers_total{kind=\"endpoints\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pilot_xds_convergence_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains("pilot_xds_push_seconds_count 1"), "{text}");
        assert!(
            text.contains("pilot_push_context_seconds_count 1"),
            "{text}"
        );
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
