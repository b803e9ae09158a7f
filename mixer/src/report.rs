//! Report: decode every bag of the batch (delta-encoded) and count what was reported.

use mesh_proto::attributes::{Bag, decompress_report_with_word_count};
use mesh_proto::istio::mixer::v1::ReportRequest;

use crate::check::{RequestError, word_count};
use crate::metrics::MixerMetrics;

/// The label used when a bag does not say which service it is about.
pub const UNKNOWN_SERVICE: &str = "unknown";

/// Decodes `req` and records each bag; returns the bags. Nothing is recorded when any bag is
/// malformed.
pub fn report(req: &ReportRequest, metrics: &MixerMetrics) -> Result<Vec<Bag>, RequestError> {
    let words = word_count(req.global_word_count)?;
    let bags = decompress_report_with_word_count(req, words)?;
    for bag in &bags {
        let service = bag
            .get_string("destination.service.host")
            .unwrap_or(UNKNOWN_SERVICE);
        metrics.report_record(service);
        tracing::debug!(
            destination_service = service,
            response_code = bag.get_int64("response.code"),
            request_path = bag.get_string("request.path"),
            "request reported"
        );
    }
    Ok(bags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::attributes::compress_report;
    use mesh_runtime::Metrics;

    #[test]
    fn counts_each_bag_by_destination_service() {
        let registry = Metrics::default();
        let m = MixerMetrics::register(&registry);
        let a = Bag::new()
            .with(
                "destination.service.host",
                "reviews.default.svc.cluster.local",
            )
            .with("response.code", 200i64);
        let b = a.clone().with("response.code", 500i64);
        let c = Bag::new().with("response.code", 200i64);
        let req = compress_report(&[a, b, c]);
        let bags = report(&req, &m).unwrap();
        assert_eq!(bags.len(), 3);
        assert_eq!(bags[1].get_int64("response.code"), Some(500));
        let text = registry.encode();
        assert!(text.contains("mixer_report_records_total 3"), "{text}");
        assert!(
            text.contains(
                r#"mixer_reported_requests_total{destination_service="reviews.default.svc.cluster.local"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"mixer_reported_requests_total{destination_service="unknown"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn malformed_batches_record_nothing() {
        let registry = Metrics::default();
        let m = MixerMetrics::register(&registry);
        let mut req = compress_report(&[Bag::new().with("response.code", 200i64)]);
        req.attributes
            .push(mesh_proto::istio::mixer::v1::CompressedAttributes {
                int64s: [(-40, 1)].into(),
                ..Default::default()
            });
        assert!(matches!(report(&req, &m), Err(RequestError::Attributes(_))));
        assert!(registry.encode().contains("mixer_report_records_total 0"));
    }
}
