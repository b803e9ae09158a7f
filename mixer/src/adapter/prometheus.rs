//! The `prometheus` adapter: `metric` instances, fed by Report, become series on Mixer's own
//! `/metrics`, named `istio_<name>` with the instance's dimensions as labels (`label_names`).
//!
//! COUNTER adds the instance's value; GAUGE sets it; DISTRIBUTION observes it in the metric's
//! buckets (explicit, linear or exponential; Prometheus' defaults otherwise). Counters are
//! exposed in OpenMetrics form: `istio_<name>` with one `_total` suffix (a configured name that
//! already ends in `_total`, like `requests_total`, is not suffixed twice).
//! A series, once registered, lives as long as the process (a registry cannot forget one).

use std::collections::HashMap;
use std::sync::Arc;

use mesh_proto::attributes::Value;
use mesh_runtime::Metrics;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use serde_json::Value as Json;
use std::sync::atomic::AtomicU64;

/// Prometheus' default histogram buckets.
const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Distribution,
}

/// One `metrics[]` entry of a prometheus handler.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricInfo {
    /// As configured (`requests_total`); exposed as `istio_<name>`.
    pub name: String,
    /// The `metric` instance that feeds it (`name.instance.namespace`).
    pub instance_name: String,
    pub kind: MetricKind,
    pub description: String,
    pub label_names: Vec<String>,
    pub buckets: Vec<f64>,
}

/// Handler params: `metrics[]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Params {
    pub metrics: Vec<MetricInfo>,
}

impl Eq for Params {}

fn buckets(b: Option<&Json>) -> Result<Vec<f64>, String> {
    let Some(b) = b else {
        return Ok(DEFAULT_BUCKETS.to_vec());
    };
    let num = |v: Option<&Json>, what: &str| {
        v.and_then(Json::as_f64)
            .ok_or_else(|| format!("buckets.{what} is missing or not a number"))
    };
    if let Some(e) = b
        .get("explicit_buckets")
        .or_else(|| b.get("explicitBuckets"))
    {
        let bounds = e
            .get("bounds")
            .and_then(Json::as_array)
            .ok_or("explicit_buckets.bounds is missing")?;
        return bounds
            .iter()
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| format!("bucket bound {v} is not a number"))
            })
            .collect();
    }
    if let Some(l) = b.get("linear_buckets").or_else(|| b.get("linearBuckets")) {
        let n = num(
            l.get("num_finite_buckets").or(l.get("numFiniteBuckets")),
            "num_finite_buckets",
        )?;
        let width = num(l.get("width"), "width")?;
        let offset = num(l.get("offset"), "offset")?;
        return Ok((0..n.max(0.0) as usize)
            .map(|i| offset + width * i as f64)
            .collect());
    }
    if let Some(e) = b
        .get("exponential_buckets")
        .or_else(|| b.get("exponentialBuckets"))
    {
        let n = num(
            e.get("num_finite_buckets").or(e.get("numFiniteBuckets")),
            "num_finite_buckets",
        )?;
        let growth = num(
            e.get("growth_factor").or(e.get("growthFactor")),
            "growth_factor",
        )?;
        let scale = num(e.get("scale"), "scale")?;
        return Ok((0..n.max(0.0) as i32)
            .map(|i| scale * growth.powi(i))
            .collect());
    }
    Ok(DEFAULT_BUCKETS.to_vec())
}

impl Params {
    pub fn parse(p: &Json) -> Result<Params, String> {
        let Some(list) = p.get("metrics").and_then(Json::as_array) else {
            return Ok(Params::default());
        };
        let mut metrics = Vec::new();
        for (i, m) in list.iter().enumerate() {
            let s = |k: &str, alt: &str| {
                m.get(k)
                    .or_else(|| m.get(alt))
                    .and_then(Json::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let name = s("name", "name");
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "params.metrics[{i}].name {name:?} is not a metric name"
                ));
            }
            let kind = match s("kind", "kind").as_str() {
                "COUNTER" => MetricKind::Counter,
                "GAUGE" => MetricKind::Gauge,
                "DISTRIBUTION" => MetricKind::Distribution,
                other => {
                    return Err(format!(
                        "params.metrics[{i}].kind {other:?} is not COUNTER, GAUGE or DISTRIBUTION"
                    ));
                }
            };
            let label_names = m
                .get("label_names")
                .or_else(|| m.get("labelNames"))
                .and_then(Json::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Json::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            metrics.push(MetricInfo {
                instance_name: s("instance_name", "instanceName"),
                description: s("description", "description"),
                buckets: buckets(m.get("buckets"))
                    .map_err(|e| format!("params.metrics[{i}]: {e}"))?,
                name,
                kind,
                label_names,
            });
        }
        Ok(Params { metrics })
    }
}

/// Builds histograms with one metric's buckets.
#[derive(Debug, Clone)]
pub struct Buckets(Arc<Vec<f64>>);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

type Labels = Vec<(String, String)>;

#[derive(Debug, Clone)]
enum Series {
    Counter(Family<Labels, Counter<f64, AtomicU64>>),
    Gauge(Family<Labels, Gauge<f64, AtomicU64>>),
    Histogram(Family<Labels, Histogram, Buckets>),
}

/// The series of every prometheus handler, registered in Mixer's registry on first use.
#[derive(Debug, Clone)]
pub struct PrometheusSink {
    registry: Metrics,
    series: Arc<Mutex<HashMap<String, Series>>>,
}

/// The text of a label value.
pub fn label_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Int64(i) => i.to_string(),
        Value::Double(d) => d.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Bytes(b) if b.len() == 4 => {
            std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()
        }
        Value::Bytes(b) if b.len() == 16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            std::net::Ipv6Addr::from(a).to_string()
        }
        Value::Bytes(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Value::Duration(d) => format!("{}ms", d.as_millis()),
        Value::Timestamp(t) => t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs().to_string())
            .unwrap_or_default(),
        Value::StringMap(m) => format!("{m:?}"),
    }
}

/// The number a metric records for `v` (durations in seconds, or milliseconds for metrics
/// named `..._milliseconds`).
fn numeric(v: &Value, metric: &str) -> Option<f64> {
    match v {
        Value::Int64(i) => Some(*i as f64),
        Value::Double(d) => Some(*d),
        Value::Duration(d) if metric.contains("milliseconds") => Some(d.as_secs_f64() * 1000.0),
        Value::Duration(d) => Some(d.as_secs_f64()),
        Value::String(s) => s.parse().ok(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

impl PrometheusSink {
    pub fn new(registry: Metrics) -> Self {
        PrometheusSink {
            registry,
            series: Arc::default(),
        }
    }

    /// The exposed name of `metric` (without the counter's `_total`).
    pub fn exposed_name(metric: &MetricInfo) -> String {
        let base = match metric.kind {
            MetricKind::Counter => metric.name.strip_suffix("_total").unwrap_or(&metric.name),
            _ => metric.name.as_str(),
        };
        format!("istio_{base}")
    }

    fn series(&self, metric: &MetricInfo) -> Series {
        let mut all = self.series.lock();
        // Keyed by the exposed name without its `istio_` prefix: found without allocating.
        let base = match metric.kind {
            MetricKind::Counter => metric.name.strip_suffix("_total").unwrap_or(&metric.name),
            _ => metric.name.as_str(),
        };
        if let Some(s) = all.get(base) {
            return s.clone();
        }
        let base = base.to_string();
        let name = Self::exposed_name(metric);
        let help = if metric.description.is_empty() {
            format!("{} from Mixer's prometheus adapter", metric.name)
        } else {
            metric.description.clone()
        };
        let s = match metric.kind {
            MetricKind::Counter => Series::Counter(Family::default()),
            MetricKind::Gauge => Series::Gauge(Family::default()),
            MetricKind::Distribution => Series::Histogram(Family::new_with_constructor(Buckets(
                Arc::new(metric.buckets.clone()),
            ))),
        };
        let registered = s.clone();
        self.registry.register(|r| match registered {
            Series::Counter(f) => r.register(name.clone(), help, f),
            Series::Gauge(f) => r.register(name.clone(), help, f),
            Series::Histogram(f) => r.register(name.clone(), help, f),
        });
        tracing::info!(metric = %name, "prometheus series registered");
        all.insert(base, s.clone());
        s
    }

    /// Records one instance of `metric`: `value` and `dimensions` (by name).
    pub fn record(&self, metric: &MetricInfo, value: &Value, dimensions: &HashMap<String, Value>) {
        self.record_with(metric, value, |l| dimensions.get(l).map(label_value))
    }

    /// Records one instance of `metric`: `value`, and each label's text from `label` (by
    /// label name; `None`: empty).
    pub fn record_with(
        &self,
        metric: &MetricInfo,
        value: &Value,
        mut label: impl FnMut(&str) -> Option<String>,
    ) {
        let Some(n) = numeric(value, &metric.name) else {
            tracing::debug!(metric = %metric.name, value = value.type_name(), "metric value is not a number");
            return;
        };
        let labels: Labels = metric
            .label_names
            .iter()
            .map(|l| (l.clone(), label(l).unwrap_or_default()))
            .collect();
        match self.series(metric) {
            Series::Counter(f) => {
                if n >= 0.0 {
                    f.get_or_create(&labels).inc_by(n);
                }
            }
            Series::Gauge(f) => {
                f.get_or_create(&labels).set(n);
            }
            Series::Histogram(f) => f.get_or_create(&labels).observe(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counters_and_histograms_with_labels() {
        let registry = Metrics::default();
        let sink = PrometheusSink::new(registry.clone());
        let p = Params::parse(&json!({"metrics": [
            {"name": "requests_total", "instance_name": "requestcount.instance.istio-system",
             "kind": "COUNTER", "label_names": ["destination_service", "response_code"]},
            {"name": "request_duration_milliseconds", "instance_name": "requestduration.instance.istio-system",
             "kind": "DISTRIBUTION", "label_names": ["destination_service"],
             "buckets": {"explicit_buckets": {"bounds": [1, 10, 100]}}}
        ]}))
        .unwrap();
        let dims: HashMap<String, Value> = [
            ("destination_service".to_string(), Value::from("reviews")),
            ("response_code".to_string(), Value::Int64(200)),
        ]
        .into();
        sink.record(&p.metrics[0], &Value::Int64(1), &dims);
        sink.record(&p.metrics[0], &Value::Int64(2), &dims);
        sink.record(
            &p.metrics[1],
            &Value::Duration(std::time::Duration::from_millis(5)),
            &dims,
        );
        let text = registry.encode();
        assert!(
            text.contains(
                r#"istio_requests_total{destination_service="reviews",response_code="200"} 3"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"istio_request_duration_milliseconds_bucket{le="10.0",destination_service="reviews"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"istio_request_duration_milliseconds_bucket{le="1.0",destination_service="reviews"} 0"#),
            "{text}"
        );
        assert!(Params::parse(&json!({"metrics": [{"name": "x", "kind": "SUMMARY"}]})).is_err());
    }
}
