//! Citadel's Prometheus metrics.

use mesh_runtime::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// How a certificate request ended (`result` label of `citadel_csr_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrResult {
    Success,
    Unauthenticated,
    InvalidCsr,
    TtlTooLong,
    SignError,
}

impl CsrResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CsrResult::Success => "success",
            CsrResult::Unauthenticated => "unauthenticated",
            CsrResult::InvalidCsr => "invalid_csr",
            CsrResult::TtlTooLong => "ttl_too_long",
            CsrResult::SignError => "sign_error",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CsrLabels {
    result: String,
}

/// Counters for certificate requests.
#[derive(Debug, Clone, Default)]
pub struct CitadelMetrics {
    csr: Family<CsrLabels, Counter>,
    issued: Counter,
}

impl CitadelMetrics {
    /// Creates the counters and registers them as `citadel_csr_total{result}` and
    /// `citadel_cert_issued_total`.
    pub fn register(metrics: &Metrics) -> Self {
        let m = CitadelMetrics::default();
        metrics.register(|r| {
            r.register(
                "citadel_csr",
                "Certificate signing requests, by result",
                m.csr.clone(),
            );
            r.register(
                "citadel_cert_issued",
                "Workload certificates issued",
                m.issued.clone(),
            );
        });
        m
    }

    /// Counts one request with its result (and an issued certificate on success).
    pub fn record(&self, result: CsrResult) {
        self.csr
            .get_or_create(&CsrLabels {
                result: result.as_str().to_string(),
            })
            .inc();
        if result == CsrResult::Success {
            self.issued.inc();
        }
    }
}
