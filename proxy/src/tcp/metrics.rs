//! Istio's TCP metrics: `istio_tcp_sent_bytes_total`, `istio_tcp_received_bytes_total`,
//! `istio_tcp_connections_opened_total`, `istio_tcp_connections_closed_total`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::admin::RequestLabels;

/// Istio's TCP label set (the request labels without `response_code` and
/// `grpc_response_status`; `request_protocol` is `tcp`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TcpLabels {
    pub reporter: &'static str,
    pub source_workload: Arc<str>,
    pub source_workload_namespace: Arc<str>,
    pub source_principal: Arc<str>,
    pub source_app: Arc<str>,
    pub source_version: Arc<str>,
    pub destination_workload: Arc<str>,
    pub destination_workload_namespace: Arc<str>,
    pub destination_principal: Arc<str>,
    pub destination_service: Arc<str>,
    pub destination_service_name: Arc<str>,
    pub destination_service_namespace: Arc<str>,
    pub destination_app: Arc<str>,
    pub destination_version: Arc<str>,
    pub request_protocol: &'static str,
    pub response_flags: &'static str,
    pub connection_security_policy: &'static str,
}

impl From<RequestLabels> for TcpLabels {
    fn from(l: RequestLabels) -> Self {
        TcpLabels {
            reporter: l.reporter,
            source_workload: l.source_workload,
            source_workload_namespace: l.source_workload_namespace,
            source_principal: l.source_principal,
            source_app: l.source_app,
            source_version: l.source_version,
            destination_workload: l.destination_workload,
            destination_workload_namespace: l.destination_workload_namespace,
            destination_principal: l.destination_principal,
            destination_service: l.destination_service,
            destination_service_name: l.destination_service_name,
            destination_service_namespace: l.destination_service_namespace,
            destination_app: l.destination_app,
            destination_version: l.destination_version,
            request_protocol: "tcp",
            response_flags: l.response_flags,
            connection_security_policy: l.connection_security_policy,
        }
    }
}

/// The four TCP counters. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct TcpMetrics {
    pub sent_bytes: Family<TcpLabels, Counter>,
    pub received_bytes: Family<TcpLabels, Counter>,
    pub connections_opened: Family<TcpLabels, Counter>,
    pub connections_closed: Family<TcpLabels, Counter>,
}

impl TcpMetrics {
    /// Registers the families (prometheus-client appends `_total` to counters).
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the downstream of TCP connections",
            self.sent_bytes.clone(),
        );
        r.register(
            "istio_tcp_received_bytes",
            "Bytes received from the downstream of TCP connections",
            self.received_bytes.clone(),
        );
        r.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            self.connections_opened.clone(),
        );
        r.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            self.connections_closed.clone(),
        );
    }

    /// The byte counters of one connection (sent, received).
    pub fn bytes(&self, labels: &TcpLabels) -> (Counter, Counter) {
        (
            self.sent_bytes.get_or_create(labels).clone(),
            self.received_bytes.get_or_create(labels).clone(),
        )
    }

    pub fn opened(&self, labels: &TcpLabels) {
        self.connections_opened.get_or_create(labels).inc();
    }

    pub fn closed(&self, labels: &TcpLabels) {
        self.connections_closed.get_or_create(labels).inc();
    }
}
