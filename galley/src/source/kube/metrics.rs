//! Metrics of the Kubernetes source, per watched kind.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

/// Label set: `kind` and, for some metrics, one more label.
pub type Labels = Vec<(&'static str, String)>;

fn lag_histogram() -> Histogram {
    Histogram::new([0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0])
}

/// Metrics of the Kubernetes source, registered in the service's registry.
#[derive(Debug, Clone)]
pub struct KubeMetrics {
    /// `galley_kube_watch_lag_seconds{kind}`: from an object's last change (the newest
    /// `metadata.managedFields[].time`, else `creationTimestamp`) to galley seeing it.
    pub lag: Family<Labels, Histogram, fn() -> Histogram>,
    /// `galley_kube_last_event_timestamp_seconds{kind}`: when the last watch event of the kind
    /// arrived (Unix seconds); `time() - x` is the time since the kind last changed.
    pub last_event: Family<Labels, Gauge>,
    /// `galley_kube_watch_restarts_total{kind,reason}`: `error` (the watch failed and is
    /// re-established with backoff) or `relist` (a new full list, e.g. after 410 Gone).
    pub restarts: Family<Labels, Counter>,
    /// `galley_kube_rejected_total{kind}`: objects that failed validation.
    pub rejected: Family<Labels, Counter>,
    /// `galley_kube_report_errors_total{kind,what}`: status patches (`status`) or Events
    /// (`event`) the API server refused.
    pub report_errors: Family<Labels, Counter>,
    /// `galley_kube_synced{kind}`: 1 once the kind's first full list is in the store.
    pub synced: Family<Labels, Gauge>,
}

impl Default for KubeMetrics {
    fn default() -> Self {
        KubeMetrics {
            lag: Family::new_with_constructor(lag_histogram),
            last_event: Family::default(),
            restarts: Family::default(),
            rejected: Family::default(),
            report_errors: Family::default(),
            synced: Family::default(),
        }
    }
}

/// The `kind` label.
pub fn kind_label(kind: &'static str) -> Labels {
    vec![("kind", kind.to_string())]
}

/// The `kind` label and one more.
pub fn kind_and(kind: &'static str, key: &'static str, value: &'static str) -> Labels {
    vec![("kind", kind.to_string()), (key, value.to_string())]
}

impl KubeMetrics {
    /// Creates the metrics and registers them in `metrics`.
    pub fn register(metrics: &mesh_runtime::Metrics) -> KubeMetrics {
        let m = KubeMetrics::default();
        metrics.register(|r| {
            r.register(
                "galley_kube_watch_lag_seconds",
                "Seconds from a Kubernetes object's last change to galley seeing it",
                m.lag.clone(),
            );
            r.register(
                "galley_kube_last_event_timestamp_seconds",
                "Unix time of the last Kubernetes watch event of the kind",
                m.last_event.clone(),
            );
            r.register(
                "galley_kube_watch_restarts",
                "Kubernetes watches re-established (reason error) or re-listed (reason relist)",
                m.restarts.clone(),
            );
            r.register(
                "galley_kube_rejected",
                "Kubernetes objects rejected by validation",
                m.rejected.clone(),
            );
            r.register(
                "galley_kube_report_errors",
                "Status patches or Events about rejected objects the API server refused",
                m.report_errors.clone(),
            );
            r.register(
                "galley_kube_synced",
                "1 once the kind's first full list from the API server is in the store",
                m.synced.clone(),
            );
        });
        m
    }
}
