//! The proxy's Prometheus metrics.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use parking_lot::RwLock;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

/// Labels of `proxy_downstream_rejected_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RejectLabels {
    /// `bad_request` (400), `header_too_large` (431), `header_timeout` (slow client),
    /// `cl_te_conflict` (Content-Length with Transfer-Encoding).
    pub reason: &'static str,
}

/// Labels of `proxy_capture_connections_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CaptureLabels {
    /// `outbound` or `inbound`.
    pub direction: &'static str,
    /// How the protocol was known: `declared`, or sniffed `http1`, `http2`, `tls`, `tcp`.
    pub protocol: &'static str,
    /// `http`, `tcp_proxy`, `passthrough`, `blackhole`, `inbound`, `no_original_dst`, `loop`.
    pub target: &'static str,
}

/// The series of the four request metrics for one label set.
#[derive(Debug, Clone)]
struct RequestSeries {
    requests: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

/// Records requests in the four standard request metrics; one reference count to clone.
#[derive(Debug)]
pub struct RequestRecorder {
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily,
    request_bytes: HistogramFamily,
    response_bytes: HistogramFamily,
    /// The series by label set: one lookup per request instead of one per family.
    series: RwLock<HashMap<RequestLabels, Arc<RequestSeries>, foldhash::fast::RandomState>>,
}

impl RequestRecorder {
    /// Records one request in the four standard request metrics.
    pub fn record(
        &self,
        labels: &RequestLabels,
        duration: Duration,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        let cached = self.series.read().get(labels).cloned();
        let series = match cached {
            Some(s) => s,
            None => {
                let s = Arc::new(RequestSeries {
                    requests: self.requests.get_or_create(labels).clone(),
                    duration: self.request_duration.get_or_create(labels).clone(),
                    request_bytes: self.request_bytes.get_or_create(labels).clone(),
                    response_bytes: self.response_bytes.get_or_create(labels).clone(),
                });
                self.series.write().insert(labels.clone(), s.clone());
                s
            }
        };
        series.requests.inc();
        series.duration.observe(duration.as_secs_f64() * 1000.0);
        series.request_bytes.observe(request_bytes as f64);
        series.response_bytes.observe(response_bytes as f64);
    }
}

/// Every metric the proxy keeps. Cheap to clone (all handles are shared).
#[derive(Debug, Clone)]
pub struct ProxyMetrics {
    /// Records into `requests`, `request_duration`, `request_bytes` and `response_bytes`.
    pub recorder: Arc<RequestRecorder>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily,
    pub request_bytes: HistogramFamily,
    pub response_bytes: HistogramFamily,
    pub xds_updates: Family<XdsLabels, Counter>,
    /// Resources a Delta xDS response carried (`result` = `added` or `removed`), per type.
    pub xds_delta_resources: Family<XdsLabels, Counter>,
    pub xds_connects: Counter,
    pub mixer_checks: Family<CheckLabels, Counter>,
    pub mixer_fail_open: Counter,
    /// Requests refused because Mixer was unreachable or slow (FAIL_CLOSE).
    pub mixer_fail_close: Counter,
    /// Check answers taken from the Check cache / asked of Mixer (requests without quotas).
    pub mixer_check_cache_hits: Counter,
    pub mixer_check_cache_misses: Counter,
    /// Requests refused for a quota (429 `RESOURCE_EXHAUSTED`, or the quota's status).
    pub mixer_quota_refused: Counter,
    pub mixer_reports_sent: Counter,
    pub mixer_reports_dropped: Counter,
    pub access_log_dropped: Counter,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub tls_handshake_failures: Counter,
    /// Downstream connections or requests refused for bad input, by reason.
    pub downstream_rejected: Family<RejectLabels, Counter>,
    /// Connections accepted on the capture listeners, by protocol and where they went.
    pub capture_connections: Family<CaptureLabels, Counter>,
    /// Istio's TCP metrics (`tcp_proxy` listeners and the inbound TCP splice).
    pub tcp: crate::tcp::TcpMetrics,
    /// Seconds until the workload certificate expires (0 before the first one).
    pub identity_expiry_seconds: Gauge<f64, AtomicU64>,
    /// Certificate renewals that failed in a row (0 after a success).
    pub identity_renewal_failures: Gauge,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        let requests = Family::default();
        let request_duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let request_bytes: HistogramFamily = Family::new_with_constructor(size_histogram);
        let response_bytes: HistogramFamily = Family::new_with_constructor(size_histogram);
        ProxyMetrics {
            recorder: Arc::new(RequestRecorder {
                requests: requests.clone(),
                request_duration: request_duration.clone(),
                request_bytes: request_bytes.clone(),
                response_bytes: response_bytes.clone(),
                series: RwLock::default(),
            }),
            requests,
            request_duration,
            request_bytes,
            response_bytes,
            xds_updates: Family::default(),
            xds_delta_resources: Family::default(),
            xds_connects: Counter::default(),
            mixer_checks: Family::default(),
            mixer_fail_open: Counter::default(),
            mixer_fail_close: Counter::default(),
            mixer_check_cache_hits: Counter::default(),
            mixer_check_cache_misses: Counter::default(),
            mixer_quota_refused: Counter::default(),
            mixer_reports_sent: Counter::default(),
            mixer_reports_dropped: Counter::default(),
            access_log_dropped: Counter::default(),
            upstream_errors: Family::default(),
            tls_handshake_failures: Counter::default(),
            downstream_rejected: Family::default(),
            capture_connections: Family::default(),
            tcp: crate::tcp::TcpMetrics::default(),
            identity_expiry_seconds: Gauge::default(),
            identity_renewal_failures: Gauge::default(),
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
                "proxy_identity_cert_expiry_seconds",
                "Seconds until the workload certificate expires (0 before the first one)",
                m.identity_expiry_seconds.clone(),
            );
            r.register(
                "proxy_identity_renewal_failures",
                "Workload certificate renewals that failed in a row (0 after a success)",
                m.identity_renewal_failures.clone(),
            );
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
                "proxy_xds_delta_resources",
                "Resources received in Delta xDS responses by type and result (added/removed)",
                m.xds_delta_resources.clone(),
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
                "proxy_mixer_fail_close",
                "Requests refused because Mixer was unreachable or slow (FAIL_CLOSE)",
                m.mixer_fail_close.clone(),
            );
            r.register(
                "proxy_mixer_check_cache_hits",
                "Mixer Check answers taken from the Check cache",
                m.mixer_check_cache_hits.clone(),
            );
            r.register(
                "proxy_mixer_check_cache_misses",
                "Mixer Check calls made because the Check cache had no answer",
                m.mixer_check_cache_misses.clone(),
            );
            r.register(
                "proxy_mixer_quota_refused",
                "Requests refused because Mixer granted less quota than asked (429)",
                m.mixer_quota_refused.clone(),
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
            r.register(
                "proxy_downstream_rejected",
                "Downstream requests or connections refused for bad input, by reason",
                m.downstream_rejected.clone(),
            );
            r.register(
                "proxy_capture_connections",
                "Connections on the capture listeners, by protocol and target",
                m.capture_connections.clone(),
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
        self.recorder
            .record(labels, duration, request_bytes, response_bytes);
    }

    pub fn xds(&self, ty: &'static str, result: &'static str) {
        self.xds_updates
            .get_or_create(&XdsLabels { r#type: ty, result })
            .inc();
    }

    pub fn downstream_rejected(&self, reason: &'static str) {
        self.downstream_rejected
            .get_or_create(&RejectLabels { reason })
            .inc();
    }

    pub fn captured(&self, direction: &'static str, protocol: &'static str, target: &'static str) {
        self.capture_connections
            .get_or_create(&CaptureLabels {
                direction,
                protocol,
                target,
            })
            .inc();
    }

    pub fn upstream_error(&self, reason: &'static str) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels { reason })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(code: u16) -> RequestLabels {
        let s: Arc<str> = Arc::from("x");
        RequestLabels {
            reporter: "source",
            source_workload: s.clone(),
            source_workload_namespace: s.clone(),
            source_principal: s.clone(),
            source_app: s.clone(),
            source_version: s.clone(),
            destination_workload: s.clone(),
            destination_workload_namespace: s.clone(),
            destination_principal: s.clone(),
            destination_service: s.clone(),
            destination_service_name: s.clone(),
            destination_service_namespace: s.clone(),
            destination_app: s.clone(),
            destination_version: s,
            request_protocol: "http",
            response_code: code,
            grpc_response_status: "",
            response_flags: "-",
            connection_security_policy: "unknown",
        }
    }

    #[test]
    fn requests_land_in_the_families_through_the_series_cache() {
        let m = ProxyMetrics::default();
        let ms = Duration::from_millis(3);
        m.record_request(&labels(200), ms, 10, 1000);
        m.record_request(&labels(200), ms, 10, 1000);
        m.record_request(&labels(503), ms, 0, 0);
        assert_eq!(m.requests.get_or_create(&labels(200)).get(), 2);
        assert_eq!(m.requests.get_or_create(&labels(503)).get(), 1);
        // Equal label sets built from other allocations find the same series.
        let mut other = labels(200);
        other.destination_service = Arc::from("x");
        m.record_request(&other, ms, 10, 1000);
        assert_eq!(m.requests.get_or_create(&labels(200)).get(), 3);
        assert_eq!(m.recorder.series.read().len(), 2);
    }
}
