//! Mixer's Prometheus metrics.

use std::sync::{Arc, OnceLock};

use mesh_runtime::Metrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

type Labels = Vec<(&'static str, String)>;

/// Handles to every metric Mixer updates (cheap to clone).
#[derive(Clone, Default, Debug)]
pub struct MixerMetrics {
    check_total: Family<Labels, Counter>,
    /// `check_total`'s series of each google.rpc code, looked up once (a Counter handle shares
    /// the series' value).
    check_by_code: Arc<[OnceLock<Counter>; 17]>,
    report_records: Counter,
    reported_requests: Family<Labels, Counter>,
    config_rules: Gauge,
    config_updates: Family<Labels, Counter>,
}

impl MixerMetrics {
    /// Creates the metrics and registers them in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let m = MixerMetrics::default();
        metrics.register(|r| {
            r.register(
                "mixer_check",
                "Check calls answered, by result code name",
                m.check_total.clone(),
            );
            r.register(
                "mixer_report_records",
                "Attribute bags received in Report calls",
                m.report_records.clone(),
            );
            r.register(
                "mixer_reported_requests",
                "Reported requests by destination.service.host",
                m.reported_requests.clone(),
            );
            r.register(
                "mixer_config_rules",
                "Rules in the current configuration",
                m.config_rules.clone(),
            );
            r.register(
                "mixer_config_updates",
                "Configuration updates received from galley, by collection and result (ack/nack)",
                m.config_updates.clone(),
            );
        });
        m
    }

    /// Counts a Check answered with google.rpc `code` (no allocation after the first of a code).
    pub fn check_answered_code(&self, code: i32) {
        match usize::try_from(code)
            .ok()
            .and_then(|i| self.check_by_code.get(i))
        {
            Some(cell) => {
                cell.get_or_init(|| {
                    self.check_total
                        .get_or_create(&vec![("code", crate::adapter::code_name(code))])
                        .clone()
                })
                .inc();
            }
            None => self.check_answered(&crate::adapter::code_name(code)),
        }
    }

    pub fn check_answered(&self, code: &str) {
        self.check_total
            .get_or_create(&vec![("code", code.to_string())])
            .inc();
    }

    pub fn report_record(&self, destination_service: &str) {
        self.report_records_for(destination_service, 1);
    }

    /// `n` records reported about `destination_service`.
    pub fn report_records_for(&self, destination_service: &str, n: u64) {
        self.report_records.inc_by(n);
        self.reported_requests
            .get_or_create(&vec![(
                "destination_service",
                destination_service.to_string(),
            )])
            .inc_by(n);
    }

    pub fn set_rules(&self, n: usize) {
        self.config_rules.set(n as i64);
    }

    pub fn config_update(&self, collection: &str, result: &'static str) {
        self.config_updates
            .get_or_create(&vec![
                ("collection", collection.to_string()),
                ("result", result.to_string()),
            ])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_are_counted_by_code_name() {
        let registry = Metrics::default();
        let m = MixerMetrics::register(&registry);
        m.check_answered_code(0);
        m.check_answered_code(0);
        m.check_answered_code(7);
        m.check_answered_code(42);
        m.check_answered("OK");
        let text = registry.encode();
        assert!(text.contains("mixer_check_total{code=\"OK\"} 3"), "{text}");
        assert!(
            text.contains("mixer_check_total{code=\"PERMISSION_DENIED\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mixer_check_total{code=\"CODE_42\"} 1"),
            "{text}"
        );
    }
}
