//! The proxy's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// Labels of `istio_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub reporter: &'static str,
    pub source_principal: String,
    pub destination_principal: String,
    pub destination_service: String,
    pub destination_workload: String,
    pub response_code: u16,
    pub connection_security_policy: &'static str,
}

/// Labels of `proxy_xds_updates_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct XdsLabels {
    pub r#type: &'static str,
    pub result: &'static str,
}

/// Labels of `proxy_mixer_checks_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CheckLabels {
    pub result: &'static str,
}

/// Labels of `proxy_upstream_errors_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    pub reason: &'static str,
}

/// Every metric the proxy keeps. Cheap to clone (all handles are shared).
#[derive(Debug, Clone, Default)]
pub struct ProxyMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub xds_updates: Family<XdsLabels, Counter>,
    pub xds_connects: Counter,
    pub mixer_checks: Family<CheckLabels, Counter>,
    pub mixer_fail_open: Counter,
    pub mixer_reports_sent: Counter,
    pub mixer_reports_dropped: Counter,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub tls_handshake_failures: Counter,
}

impl ProxyMetrics {
    /// Creates the metrics and registers them in `metrics`.
    pub fn register(metrics: &mesh_runtime::Metrics) -> Self {
        let m = ProxyMetrics::default();
        metrics.register(|r| {
            r.register(
                "istio_requests",
                "Requests handled by the proxy",
                m.requests.clone(),
            );
            r.register(
                "proxy_xds_updates",
                "xDS responses by type and result (ack/nack)",
                m.xds_updates.clone(),
            );
            r.register(
                "proxy_xds_connects",
                "ADS streams opened",
                m.xds_connects.clone(),
            );
            r.register(
                "proxy_mixer_checks",
                "Mixer Check calls by result",
                m.mixer_checks.clone(),
            );
            r.register(
                "proxy_mixer_fail_open",
                "Requests let through because Mixer was unreachable or slow",
                m.mixer_fail_open.clone(),
            );
            r.register(
                "proxy_mixer_reports_sent",
                "Report records sent to Mixer",
                m.mixer_reports_sent.clone(),
            );
            r.register(
                "proxy_mixer_reports_dropped",
                "Report records dropped (queue full or Mixer unreachable)",
                m.mixer_reports_dropped.clone(),
            );
            r.register(
                "proxy_upstream_errors",
                "Requests that got no upstream response, by reason",
                m.upstream_errors.clone(),
            );
            r.register(
                "proxy_tls_handshake_failures",
                "Inbound connections whose mTLS handshake failed",
                m.tls_handshake_failures.clone(),
            );
        });
        m
    }

    pub fn xds(&self, ty: &'static str, result: &'static str) {
        self.xds_updates
            .get_or_create(&XdsLabels { r#type: ty, result })
            .inc();
    }

    pub fn upstream_error(&self, reason: &'static str) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels { reason })
            .inc();
    }
}
