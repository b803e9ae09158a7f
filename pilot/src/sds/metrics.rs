//! SDS metrics, registered in Pilot's [`mesh_runtime::Metrics`].

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

/// What the credential source and the secret builder count. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct SdsMetrics {
    /// `pilot_sds_secrets_missing_total`: secret names a gateway's listeners reference that no
    /// credential answers (not sent; counted each time a gateway's secrets are computed).
    pub missing: Counter,
    /// `pilot_sds_secrets_served_total`: secrets built for gateways (per computation).
    pub served: Counter,
    /// `pilot_sds_credential_changes_total`: times the credential directory's content changed.
    pub changes: Counter,
    /// `pilot_sds_credentials`: credentials (namespace/name) currently read.
    pub credentials: Gauge,
}

impl SdsMetrics {
    /// Creates the metrics and registers them in `metrics`.
    pub fn register(metrics: &mesh_runtime::Metrics) -> SdsMetrics {
        let m = SdsMetrics::default();
        metrics.register(|r| {
            r.register(
                "pilot_sds_secrets_missing",
                "Secret names referenced by gateway listeners that no credential answers",
                m.missing.clone(),
            );
            r.register(
                "pilot_sds_secrets_served",
                "Secrets built for gateway proxies",
                m.served.clone(),
            );
            r.register(
                "pilot_sds_credential_changes",
                "Changes of the credential directory's content",
                m.changes.clone(),
            );
            r.register(
                "pilot_sds_credentials",
                "Credentials (namespace/name) read from the credential directory",
                m.credentials.clone(),
            );
        });
        m
    }
}
