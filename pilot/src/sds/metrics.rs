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
    /// `pilot_sds_credential_changes_total`: times the credentials (the directory's content,
    /// or the Kubernetes Secrets) changed.
    pub changes: Counter,
    /// `pilot_sds_credentials`: credentials (namespace/name) currently read.
    pub credentials: Gauge,
    /// `pilot_sds_credentials_rejected_total`: Kubernetes Secrets skipped as malformed
    /// credentials (a certificate without its key or the reverse), each time one is seen.
    pub rejected: Counter,
    /// `pilot_sds_kube_watch_errors_total`: failed lists/watches of the Kubernetes Secrets
    /// (each is retried with backoff; the last credentials stay).
    pub kube_watch_errors: Counter,
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
                "Changes of the gateway credentials (directory content or Kubernetes Secrets)",
                m.changes.clone(),
            );
            r.register(
                "pilot_sds_credentials",
                "Credentials (namespace/name) read from the credential directory or Kubernetes",
                m.credentials.clone(),
            );
            r.register(
                "pilot_sds_credentials_rejected",
                "Kubernetes Secrets skipped as malformed gateway credentials",
                m.rejected.clone(),
            );
            r.register(
                "pilot_sds_kube_watch_errors",
                "Failed lists or watches of the Kubernetes Secrets (retried with backoff)",
                m.kube_watch_errors.clone(),
            );
        });
        m
    }
}
