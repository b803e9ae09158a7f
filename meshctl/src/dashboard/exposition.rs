//! Reading the Prometheus text exposition format (version 0.0.4) that every proxy serves on
//! `/stats/prometheus`: one sample per line, `name{label="value",...} value [timestamp]`.
//!
//! Only what the dashboard reads is kept: the sample's name, labels and value. Comment lines
//! (`# HELP`, `# TYPE`) and lines that do not parse are skipped (a proxy of another version must
//! not break the page).

use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, or `""`.
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// Every sample of the page whose metric name starts with `prefix`.
pub fn parse(text: &str, prefix: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && l.starts_with(prefix))
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(body) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(body)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_ascii_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}` (after the opening brace); returns the labels and the text after `}`.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.insert(key, value);
        s = &s[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_and_values() {
        let text = "# HELP istio_requests_total Total requests.\n\
                    # TYPE istio_requests_total counter\n\
                    istio_requests_total{reporter=\"source\",response_code=\"200\"} 7\n\
                    istio_request_duration_milliseconds_bucket{le=\"+Inf\",app=\"a\\\"b\"} 3 1700000000\n\
                    process_cpu_seconds_total 1.5\n";
        let samples = parse(text, "istio_");
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].name, "istio_requests_total");
        assert_eq!(samples[0].label("reporter"), "source");
        assert_eq!(samples[0].label("response_code"), "200");
        assert_eq!(samples[0].value, 7.0);
        assert_eq!(samples[1].label("le"), "+Inf");
        assert_eq!(samples[1].label("app"), "a\"b");
        assert_eq!(samples[1].value, 3.0);
        assert_eq!(samples[1].label("missing"), "");
    }

    #[test]
    fn skips_lines_that_do_not_parse() {
        let text = "istio_x{a=\"unterminated} 1\nistio_y notanumber\nistio_z{} 2\n";
        let samples = parse(text, "istio_");
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].name, "istio_z");
        assert_eq!(samples[0].value, 2.0);
    }
}
