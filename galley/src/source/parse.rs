//! Parsing the text of a YAML or JSON file into documents (untyped JSON values).

use serde_json::Value;

use super::split::split_documents;
use super::yaml_fast::read_document;

/// One parsed document, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub file: String,
    /// 1-based line of the document's first content line.
    pub line: usize,
    pub value: Value,
}

/// A document that is not well-formed YAML or JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// The largest text (file or apply body) read: larger ones are refused whole. Kubernetes itself
/// refuses requests over 3 MiB.
pub const MAX_TEXT_BYTES: usize = 8 << 20;
/// The deepest nesting of mappings and sequences accepted in one document. Real Istio and
/// Kubernetes documents stay under 30 (Istio's own CRD schemas: 28); the bound keeps the
/// recursive readers well inside a thread's stack, even in debug builds.
pub const MAX_DEPTH: usize = 50;
/// Alias (`*ref`) uses accepted in one document: with the bounds on nodes and replayed events
/// below, a "billion laughs" document fails fast instead of expanding.
const MAX_ALIASES: usize = 1_000;
/// Nodes (mappings, sequences, scalars) in one document.
const MAX_NODES: usize = 250_000;
/// Events replayed for aliases in one document.
const MAX_ANCHOR_EVENTS: usize = 100_000;

/// The YAML reading rules: YAML 1.2 core schema (only `true`/`false` are booleans, no legacy
/// octals, no sexagesimal numbers), so values like `001:db8::` or `on` stay strings; bounded
/// depth, aliases and size (see the constants above).
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        legacy_octal_numbers: false,
        emit_comments: false,
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            max_aliases: MAX_ALIASES,
            max_nodes: MAX_NODES,
            max_recorded_anchor_events: MAX_ANCHOR_EVENTS,
            max_total_scalar_bytes: MAX_TEXT_BYTES,
        },
    }
}

/// The nesting depth of a JSON text (brackets outside strings), counted before parsing so a
/// deeply nested text is refused without recursing into it.
fn json_depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Parses one document's YAML text; `first_line` is where the text starts in its file. Plain
/// documents take the fast reader; the general reader decides everything else.
fn parse_yaml(file: &str, first_line: usize, text: &str) -> Result<Value, ParseError> {
    let mut value = match read_document(text, MAX_DEPTH - 2, MAX_NODES / 2) {
        Some(v) => v,
        None => parse_yaml_general(file, first_line, text)?,
    };
    unsplit_colon_scalars(&mut value);
    Ok(value)
}

/// Parses one document's YAML text with the general reader (`serde_saphyr`).
fn parse_yaml_general(file: &str, first_line: usize, text: &str) -> Result<Value, ParseError> {
    serde_saphyr::from_str_with_options::<Value>(text, yaml_options()).map_err(|e| {
        let line = e
            .location()
            .map(|l| first_line + usize::try_from(l.line()).unwrap_or(1).max(1) - 1)
            .unwrap_or(first_line);
        ParseError {
            file: file.to_string(),
            line,
            message: e.without_snippet().to_string(),
        }
    })
}

/// Go's YAML reader (and so Istio) reads a flow-sequence item like `001:db8::` (an IPv6 address
/// ending in `::`) as a string; a strict YAML 1.2 reader sees a one-entry mapping
/// `{"001:db8:": null}`. Such items are turned back into the string.
fn unsplit_colon_scalars(value: &mut Value) {
    match value {
        Value::Array(items) => {
            for item in items {
                let joined = match item.as_object() {
                    Some(m) if m.len() == 1 => m
                        .iter()
                        .next()
                        .filter(|(k, v)| v.is_null() && k.ends_with(':') && !k.contains(' '))
                        .map(|(k, _)| format!("{k}:")),
                    _ => None,
                };
                match joined {
                    Some(s) => *item = Value::String(s),
                    None => unsplit_colon_scalars(item),
                }
            }
        }
        Value::Object(map) => map.values_mut().for_each(unsplit_colon_scalars),
        _ => {}
    }
}

/// Parses a JSON text: one object, an array of objects, or both as a Kubernetes `List`
/// (expanded by [`expand_lists`]).
fn parse_json(file: &str, text: &str) -> Result<Value, ParseError> {
    let depth = json_depth(text);
    if depth > MAX_DEPTH {
        return Err(ParseError {
            file: file.to_string(),
            line: 1,
            message: format!("nested {depth} levels deep; at most {MAX_DEPTH} levels are accepted"),
        });
    }
    serde_json::from_str::<Value>(text).map_err(|e| ParseError {
        file: file.to_string(),
        line: e.line().max(1),
        message: e.to_string(),
    })
}

/// A JSON array or a `kind: List` object stands for its items.
fn expand_lists(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.into_iter().flat_map(expand_lists).collect(),
        Value::Object(mut map)
            if map.get("kind").and_then(Value::as_str) == Some("List")
                && map.get("items").is_some_and(Value::is_array) =>
        {
            match map.remove("items") {
                Some(items) => expand_lists(items),
                None => Vec::new(),
            }
        }
        other => vec![other],
    }
}

/// Parses every document of a file's text. Each document fails or succeeds on its own; empty
/// documents (only comments, or `null`) are dropped.
pub fn parse_text(file: &str, text: &str) -> Vec<Result<Document, ParseError>> {
    let mut out = Vec::new();
    if text.len() > MAX_TEXT_BYTES {
        out.push(Err(ParseError {
            file: file.to_string(),
            line: 1,
            message: format!(
                "text is {} bytes; at most {MAX_TEXT_BYTES} bytes are accepted",
                text.len()
            ),
        }));
        return out;
    }
    let looks_json = text.trim_start().starts_with(['{', '[']);
    if looks_json {
        let line = text
            .lines()
            .position(|l| !l.trim().is_empty())
            .map_or(1, |i| i + 1);
        match parse_json(file, text) {
            Ok(v) => out.extend(expand_lists(v).into_iter().map(|value| {
                Ok(Document {
                    file: file.to_string(),
                    line,
                    value,
                })
            })),
            Err(e) => out.push(Err(e)),
        }
        return out;
    }
    for raw in split_documents(text) {
        match parse_yaml(file, raw.first_line, &raw.text) {
            Ok(Value::Null) => {}
            Ok(v) => out.extend(expand_lists(v).into_iter().map(|value| {
                Ok(Document {
                    file: file.to_string(),
                    line: raw.line,
                    value,
                })
            })),
            Err(e) => out.push(Err(e)),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_documents_keep_their_lines() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n# comment\napiVersion: v1\nkind: Pod\n";
        let docs: Vec<_> = parse_text("f.yaml", text)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].line, 1);
        assert_eq!(docs[0].value["metadata"]["name"], "a");
        assert_eq!(docs[1].line, 6);
        assert_eq!(docs[1].value["kind"], "Pod");
    }

    #[test]
    fn yaml_1_2_scalars() {
        let text = "a: 001:db8::1\nb: on\nc: yes\nd: 0755\ne: true\nf: 12\ng: 1:20\nh: 1.5\ni: [\"001:db8::\", 2001:db8::1]\n";
        let docs = parse_text("f.yaml", text);
        let v = &docs[0].as_ref().unwrap().value;
        assert_eq!(v["a"], json!("001:db8::1"));
        assert_eq!(v["i"], json!(["001:db8::", "2001:db8::1"]));
        assert_eq!(v["b"], json!("on"));
        assert_eq!(v["c"], json!("yes"));
        assert_eq!(v["d"].as_f64(), Some(755.0), "decimal, not octal");
        assert_eq!(v["e"], json!(true));
        assert_eq!(v["f"], json!(12));
        assert_eq!(v["g"], json!("1:20"));
        assert_eq!(v["h"], json!(1.5));
        let docs = parse_text("f.yaml", "addresses: [1.2.3.4, 001:db8::]\nm: [{a: 1}]\n");
        let v = &docs[0].as_ref().unwrap().value;
        assert_eq!(v["addresses"], json!(["1.2.3.4", "001:db8::"]));
        assert_eq!(v["m"], json!([{"a": 1}]));
    }

    #[test]
    fn a_broken_document_fails_alone_with_its_line() {
        let text = "kind: A\n---\nkind: B\nspec:\n  hosts: [a, b\n  x: 1\n---\nkind: C\n";
        let docs = parse_text("bad.yaml", text);
        assert_eq!(docs.len(), 3);
        assert!(docs[0].is_ok());
        let err = docs[1].as_ref().unwrap_err();
        assert_eq!(err.file, "bad.yaml");
        assert!(
            (3..=7).contains(&err.line),
            "error line {} should be inside the second document",
            err.line
        );
        assert!(!err.message.is_empty());
        assert_eq!(docs[2].as_ref().unwrap().value["kind"], "C");
        assert_eq!(docs[2].as_ref().unwrap().line, 8);
    }

    /// The fast reader answers for most real documents, and always as the general reader does.
    #[test]
    fn fast_reader_agrees_with_the_general_reader_on_the_corpus() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                    out.push(p);
                }
            }
        }
        let root =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance");
        let mut files = Vec::new();
        walk(&root, &mut files);
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts"),
            &mut files,
        );
        let (mut fast, mut total) = (0, 0);
        for f in files {
            let Ok(text) = std::fs::read_to_string(&f) else {
                continue;
            };
            for raw in split_documents(&text) {
                total += 1;
                let general = parse_yaml_general("f", raw.first_line, &raw.text);
                if let Some(v) = read_document(&raw.text, MAX_DEPTH - 2, MAX_NODES / 2) {
                    fast += 1;
                    assert_eq!(
                        general.as_ref().ok(),
                        Some(&v),
                        "{}:{}: the readers disagree",
                        f.display(),
                        raw.line
                    );
                }
            }
        }
        if total > 0 {
            assert!(
                fast * 10 >= total * 7,
                "fast reader used for {fast} of {total}"
            );
        }
    }

    #[test]
    fn json_objects_arrays_and_lists() {
        let docs = parse_text(
            "f.json",
            "{\"kind\":\"List\",\"items\":[{\"kind\":\"A\"},{\"kind\":\"B\"}]}",
        );
        assert_eq!(docs.len(), 2);
        let docs = parse_text("f.json", "\n[{\"kind\":\"A\"}]");
        assert_eq!(docs[0].as_ref().unwrap().line, 2);
        let docs = parse_text("f.json", "{\"kind\": }");
        assert!(docs[0].is_err());
    }
}
