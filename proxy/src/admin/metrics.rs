//! The proxy's Prometheus metrics.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

/// Istio's standard request labels, shared by `istio_requests_total`,
/// `istio_request_duration_milliseconds`, `istio_request_bytes` and `istio_response_bytes`.
///
/// The per-proxy parts are `Arc<str>` built once, so a label set costs reference-count
/// increments plus the few per-request strings (peer metadata, service).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// `source` (outbound sidecar, gateway) or `destination` (inbound sidecar).
    pub reporter: &'static str,
    pub source_workload: Arc<str>,
    pub source_workload_namespace: Arc<str>,
    pub source_principal: Arc<str>,
    pub source_app: Arc<str>,
    pub source_version: Arc<str>,
    pub destination_workload: Arc<str>,
    pub destination_workload_namespace: Arc<str>,
    pub destination_principal: Arc<str>,
    /// The service FQDN (`reviews.default.svc.cluster.local`).
    pub destination_service: Arc<str>,
    pub destination_service_name: Arc<str>,
    pub destination_service_namespace: Arc<str>,
    pub destination_app: Arc<str>,
    pub destination_version: Arc<str>,
    /// `http`, or `grpc` for gRPC responses.
    pub request_protocol: &'static str,
    pub response_code: u16,
    /// The gRPC status code (`0`..`16`) of gRPC responses, else empty.
    pub grpc_response_status: &'static str,
    /// `-`, or Envoy's flags (`NR`, `UH`, `UF`, `UC`, `UAEX`).
    pub response_flags: &'static str,
    /// `mutual_tls` / `none` (destination side), `unknown` (source side, as Istio).
    pub connection_security_policy: &'static str,
}

/// Buckets of `istio_request_duration_milliseconds` (Istio's).
pub const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Buckets of `istio_request_bytes` and `istio_response_bytes` (Istio's).
pub const SIZE_BUCKETS_BYTES: [f64; 8] = [
    1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0, 1000000.0, 10000000.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS_MS)
}

fn size_histogram() -> Histogram {
    Histogram::new(SIZE_BUCKETS_BYTES)
}

/// A histogram family with fixed buckets.
pub type HistogramFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

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
#[derive(Debug, Clone)]
pub struct ProxyMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily,
    pub request_bytes: HistogramFamily,
    pub response_bytes: HistogramFamily,
    pub xds_updates: Family<XdsLabels, Counter>,
    pub xds_connects: Counter,
    pub mixer_checks: Family<CheckLabels, Counter>,
    pub mixer_fail_open: Counter,
    pub mixer_reports_sent: Counter,
    pub mixer_reports_dropped: Counter,
    pub access_log_dropped: Counter,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub tls_handshake_failures: Counter,
    /// Istio's TCP metrics (`tcp_proxy` listeners and the inbound TCP splice).
    pub tcp: crate::tcp::TcpMetrics,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        ProxyMetrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(duration_histogram),
            request_bytes: Family::new_with_constructor(size_histogram),
            response_bytes: Family::new_with_constructor(size_histogram),
            xds_updates: Family::default(),
            xds_connects: Counter::default(),
            mixer_checks: Family::default(),
            mixer_fail_open: Counter::default(),
            mixer_reports_sent: Counter::default(),
            mixer_reports_dropped: Counter::default(),
            access_log_dropped: Counter::default(),
            upstream_errors: Family::default(),
            tls_handshake_failures: Counter::default(),
            tcp: crate::tcp::TcpMetrics::default(),
        }
    }
}

impl ProxyMetrics {
    /// Creates the metrics and registers them in `metrics`.
    pub fn register(metrics: &mesh_runtime::Metrics) -> Self {
        let m = ProxyMetrics::default();
        metrics.register(|r| {
            m.tcp.register(r);
            r.register(
                "istio_requests",
                "Requests handled by the proxy",
                m.requests.clone(),
            );
            r.register(
                "istio_request_duration_milliseconds",
                "Request duration in milliseconds, until the last response byte",
                m.request_duration.clone(),
            );
            r.register(
                "istio_request_bytes",
                "Request body sizes in bytes (content-length; 0 when absent)",
                m.request_bytes.clone(),
            );
            r.register(
                "istio_response_bytes",
                "Response body sizes in bytes, as sent",
                m.response_bytes.clone(),
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
                "proxy_access_log_dropped",
                "Access log entries dropped because the writer fell behind",
                m.access_log_dropped.clone(),
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

    /// Records one request in the four standard request metrics.
    pub fn record_request(
        &self,
        labels: &RequestLabels,
        duration: Duration,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        self.requests.get_or_create(labels).inc();
        self.request_duration
            .get_or_create(labels)
            .observe(duration.as_secs_f64() * 1000.0);
        self.request_bytes
            .get_or_create(labels)
            .observe(request_bytes as f64);
        self.response_bytes
            .get_or_create(labels)
            .observe(response_bytes as f64);
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
