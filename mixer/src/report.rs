//! Report: decode every bag of the batch (delta-encoded) and count what was reported.

use std::cell::OnceCell;

use mesh_proto::attributes::{Bag, Value, decompress_report_with_word_count};
use mesh_proto::istio::mixer::v1::ReportRequest;

use crate::adapter::Adapter;
use crate::adapter::prometheus::{PrometheusSink, label_value};
use crate::adapter::stdio::{self, StdioSink};
use crate::adapter::tracespan::{self, SpanExporters};
use crate::check::{CheckAttributes, RequestError, matching_rules_reads, word_count};
use crate::config::Policy;
use crate::expr::{Attributes, eval_value_reads};
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
    // Counted per destination service once per batch (a batch is mostly a few services).
    let mut per_service: Vec<(&str, u64)> = Vec::new();
    for bag in &bags {
        let service = bag
            .get_string("destination.service.host")
            .unwrap_or(UNKNOWN_SERVICE);
        match per_service.iter_mut().find(|(s, _)| *s == service) {
            Some((_, n)) => *n += 1,
            None => per_service.push((service, 1)),
        }
        tracing::debug!(
            destination_service = service,
            response_code = bag.get_int64("response.code"),
            request_path = bag.get_string("request.path"),
            "request reported"
        );
    }
    for (service, n) in per_service {
        metrics.report_records_for(service, n);
    }
    Ok(bags)
}

/// The attributes Report's rules read: what the client sent, the workload attributes (as
/// [`CheckAttributes`] gives them) and what [`with_http_attributes`] derives from the request
/// headers, without copying the bag.
pub struct ReportAttributes<'a> {
    check: CheckAttributes<'a>,
    sent: &'a Bag,
    /// `request.useragent`, `request.referer`, `request.id`, `context.protocol`: made on first
    /// read.
    derived: [OnceCell<Option<Value>>; 4],
}

/// The attributes derived from a request header, and the header.
const FROM_HEADERS: [(&str, &str); 3] = [
    ("request.useragent", "user-agent"),
    ("request.referer", "referer"),
    ("request.id", "x-request-id"),
];

impl<'a> ReportAttributes<'a> {
    pub fn new(policy: &'a Policy, sent: &'a Bag) -> Self {
        ReportAttributes {
            check: CheckAttributes::new(policy, sent),
            sent,
            derived: Default::default(),
        }
    }

    fn derive(&self, i: usize) -> Option<Value> {
        let headers = self.sent.get_string_map("request.headers")?;
        match FROM_HEADERS.get(i) {
            Some((_, header)) => headers.get(*header).map(|v| Value::String(v.clone())),
            None => self.sent.contains("request.method").then(|| {
                let grpc = headers
                    .get("content-type")
                    .is_some_and(|c| c.starts_with("application/grpc"));
                Value::from(if grpc { "grpc" } else { "http" })
            }),
        }
    }
}

impl Attributes for ReportAttributes<'_> {
    fn attribute(&self, name: &str) -> Option<&Value> {
        if let Some(v) = self.check.attribute(name) {
            return Some(v);
        }
        let i = match name {
            "request.useragent" => 0,
            "request.referer" => 1,
            "request.id" => 2,
            "context.protocol" => 3,
            _ => return None,
        };
        self.derived[i].get_or_init(|| self.derive(i)).as_ref()
    }
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
    let mut matched = Vec::new();
    for sent in bags {
        let bag = ReportAttributes::new(policy, sent);
        let mut reads = Vec::new();
        matched.clear();
        matching_rules_reads(policy, &bag, &mut reads, &mut matched);
        for &ri in &matched {
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
    let mut matched = Vec::new();
    for sent in bags {
        let bag = ReportAttributes::new(policy, sent);
        let mut reads = Vec::new();
        matched.clear();
        matching_rules_reads(policy, &bag, &mut reads, &mut matched);
        for &ri in &matched {
            for action in &policy.rules[ri].actions {
                if let Adapter::Prometheus(params) = &action.adapter {
                    record_metrics(params, &action.instances, &bag, sink);
                }
            }
        }
    }
}

fn record_metrics<B: Attributes + ?Sized>(
    params: &crate::adapter::prometheus::Params,
    instances: &[crate::config::Instance],
    bag: &B,
    sink: &PrometheusSink,
) {
    let mut reads = Vec::new();
    for inst in instances {
        let Some(metric) = params
            .metrics
            .iter()
            .find(|m| inst.is_named(&m.instance_name))
        else {
            continue;
        };
        let Some(value_expr) = &inst.value else {
            continue;
        };
        reads.clear();
        let value = match eval_value_reads(value_expr, bag, &mut reads) {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(instance = %inst.key, error = %e, "metric value not evaluated");
                continue;
            }
        };
        // Only the dimensions the metric has labels for are evaluated, straight to label text.
        sink.record_with(metric, &value, |label| {
            let (_, e) = inst.dimensions.iter().find(|(n, _)| n == label)?;
            reads.clear();
            match eval_value_reads(e, bag, &mut reads) {
                Ok(v) => Some(label_value(&v)),
                Err(err) => {
                    tracing::debug!(instance = %inst.key, dimension = %label, error = %err, "metric dimension not evaluated");
                    None
                }
            }
        });
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
    fn report_attributes_read_what_the_copied_bag_holds() {
        let headers: std::collections::BTreeMap<String, String> = [
            ("user-agent".to_string(), "curl/8".to_string()),
            ("x-request-id".to_string(), "abc".to_string()),
            ("content-type".to_string(), "application/grpc".to_string()),
        ]
        .into();
        let sent = Bag::new()
            .with("source.principal", "spiffe://cluster.local/ns/default/sa/a")
            .with("source.uid", "kubernetes://nowhere.default")
            .with("request.method", "POST")
            .with("request.headers", headers);
        let policy = Policy::default();
        let (mut copied, _) = crate::check::with_workload_attributes(&policy, &sent);
        with_http_attributes(&mut copied);
        let view = ReportAttributes::new(&policy, &sent);
        for (name, value) in copied.iter() {
            assert_eq!(view.attribute(name), Some(value), "{name}");
        }
        assert_eq!(
            view.attribute("context.protocol"),
            Some(&Value::from("grpc"))
        );
        assert_eq!(view.attribute("request.referer"), None);
        assert_eq!(
            view.attribute("source.user"),
            Some(&Value::from("cluster.local/ns/default/sa/a"))
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
