//! Report: decode every bag of the batch (delta-encoded) and count what was reported.

use std::collections::HashMap;

use mesh_proto::attributes::{Bag, decompress_report_with_word_count};
use mesh_proto::istio::mixer::v1::ReportRequest;

use crate::adapter::Adapter;
use crate::adapter::prometheus::PrometheusSink;
use crate::adapter::stdio::{self, StdioSink};
use crate::adapter::tracespan::{self, SpanExporters};
use crate::check::{RequestError, matching_rules, with_workload_attributes, word_count};
use crate::config::Policy;
use crate::expr::evaluate_value;
use crate::metrics::MixerMetrics;

/// The label used when a bag does not say which service it is about.
pub const UNKNOWN_SERVICE: &str = "unknown";

/// Decodes `req` and records each bag; returns the bags. Nothing is recorded when any bag is
/// malformed.
pub fn report(req: &ReportRequest, metrics: &MixerMetrics) -> Result<Vec<Bag>, RequestError> {
    let words = word_count(req.global_word_count)?;
    let bags = decompress_report_with_word_count(req, words)?;
    for bag in &bags {
        mesh_proto::attributes::check_types(bag)?;
    }
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

/// Where Report's instances go: the prometheus adapter's series, the stdio adapter's outputs and
/// the OTLP span exporters. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReportAdapters {
    pub prometheus: PrometheusSink,
    pub stdio: StdioSink,
    pub spans: SpanExporters,
}

impl ReportAdapters {
    /// Adapters whose prometheus series go to `prometheus`.
    pub fn new(prometheus: PrometheusSink) -> Self {
        ReportAdapters {
            prometheus,
            stdio: StdioSink::default(),
            spans: SpanExporters::default(),
        }
    }
}

/// Adds what Istio's proxy derives from the request headers when the bag lacks it:
/// `request.useragent` (`user-agent`), `request.referer` (`referer`), `request.id`
/// (`x-request-id`), and `context.protocol` (`grpc` for an `application/grpc*` content type,
/// else `http`) for a bag with a `request.method`.
pub fn with_http_attributes(bag: &mut Bag) {
    let Some(headers) = bag.get_string_map("request.headers") else {
        return;
    };
    let protocol =
        (!bag.contains("context.protocol") && bag.contains("request.method")).then(|| {
            let grpc = headers
                .get("content-type")
                .is_some_and(|c| c.starts_with("application/grpc"));
            if grpc { "grpc" } else { "http" }
        });
    let derived: Vec<(&str, String)> = [
        ("request.useragent", "user-agent"),
        ("request.referer", "referer"),
        ("request.id", "x-request-id"),
    ]
    .into_iter()
    .filter(|(attr, _)| !bag.contains(attr))
    .filter_map(|(attr, header)| headers.get(header).map(|v| (attr, v.clone())))
    .collect();
    for (attr, v) in derived {
        bag.set(attr, v);
    }
    if let Some(p) = protocol {
        bag.set("context.protocol", p);
    }
}

/// Runs the telemetry rules for each bag: every instance of a matching rule whose handler is
/// `prometheus` (`metric`), `stdio` (`logentry`) or `opentelemetry` (`tracespan`) is evaluated
/// and handed to its adapter. An instance that cannot be evaluated is skipped (logged at debug).
pub fn dispatch(policy: &Policy, bags: &[Bag], adapters: &ReportAdapters) {
    let mut logs: Vec<(&stdio::Params, Vec<u8>)> = Vec::new();
    for sent in bags {
        let (mut bag, _) = with_workload_attributes(policy, sent);
        with_http_attributes(&mut bag);
        let mut refs = Vec::new();
        for ri in matching_rules(policy, &bag, &mut refs) {
            for action in &policy.rules[ri].actions {
                match &action.adapter {
                    Adapter::Prometheus(params) => {
                        record_metrics(params, &action.instances, &bag, &adapters.prometheus);
                    }
                    Adapter::Stdio(params) => {
                        for inst in &action.instances {
                            let entry = stdio::evaluate_entry(inst, &bag);
                            let Some(line) = stdio::render(params, &entry) else {
                                continue;
                            };
                            match logs.iter_mut().find(|(p, _)| std::ptr::eq(*p, params)) {
                                Some((_, buf)) => buf.extend_from_slice(&line),
                                None => logs.push((params, line)),
                            }
                        }
                    }
                    Adapter::OpenTelemetry(params) => {
                        for inst in &action.instances {
                            if let Some(span) = tracespan::build_span(params, inst, &bag) {
                                adapters.spans.send(&params.endpoint, span);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    for (params, lines) in logs {
        if let Err(e) = adapters.stdio.write(params, &lines) {
            tracing::warn!(stream = ?params.log_stream, path = ?params.output_path, error = %e, "cannot write log entries");
        }
    }
}

/// Runs only the `prometheus` actions of the telemetry rules (see [`dispatch`]).
pub fn dispatch_metrics(policy: &Policy, bags: &[Bag], sink: &PrometheusSink) {
    for sent in bags {
        let (bag, _) = with_workload_attributes(policy, sent);
        let mut refs = Vec::new();
        for ri in matching_rules(policy, &bag, &mut refs) {
            for action in &policy.rules[ri].actions {
                if let Adapter::Prometheus(params) = &action.adapter {
                    record_metrics(params, &action.instances, &bag, sink);
                }
            }
        }
    }
}

fn record_metrics(
    params: &crate::adapter::prometheus::Params,
    instances: &[crate::config::Instance],
    bag: &Bag,
    sink: &PrometheusSink,
) {
    for inst in instances {
        let full = inst.full_name();
        let Some(metric) = params.metrics.iter().find(|m| m.instance_name == full) else {
            continue;
        };
        let Some(value_expr) = &inst.value else {
            continue;
        };
        let value = match evaluate_value(value_expr, bag).result {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(instance = %inst.key, error = %e, "metric value not evaluated");
                continue;
            }
        };
        let mut dims = HashMap::with_capacity(inst.dimensions.len());
        for (name, e) in &inst.dimensions {
            match evaluate_value(e, bag).result {
                Ok(v) => {
                    dims.insert(name.clone(), v);
                }
                Err(err) => {
                    tracing::debug!(instance = %inst.key, dimension = %name, error = %err, "metric dimension not evaluated");
                }
            }
        }
        sink.record(metric, &value, &dims);
    }
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
