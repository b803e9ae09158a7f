//! A fast reader for the plain YAML that configuration is almost always written in: the parser's
//! events are turned straight into a JSON value, without the general deserializer's layers.
//!
//! It only answers when it is sure to read the document exactly as the general reader
//! (`serde_saphyr` with the options of [`super::parse`]) would: anything else (anchors, aliases,
//! tags, merge keys, duplicate keys, non-string keys, numbers other than short decimal integers,
//! unusual null/boolean spellings, deep or large documents, any syntax error) makes it answer
//! `None`, and the caller reads the document with the general reader, which also produces the
//! error messages. `source::parse`'s tests compare both readers over the conformance corpus.

use granit_parser::{Event, Parser, ScalarStyle};
use serde_json::{Map, Number, Value};

/// One open collection.
enum Frame {
    Seq(Vec<Value>),
    /// A mapping and, between a key and its value, the key.
    Map(Map<String, Value>, Option<String>),
}

/// What a plain (unquoted) scalar reads as, when the answer is certain.
fn plain_value(s: &str) -> Option<Value> {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        "true" | "True" | "TRUE" => return Some(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Value::Bool(false)),
        _ => {}
    }
    let first = *s.as_bytes().first()?;
    if first.is_ascii_alphabetic() {
        // Words the float reader may take (`inf`, `NaN`, `Infinity`) go the general way.
        let lower = s.len() <= 8 && {
            let l = s.to_ascii_lowercase();
            matches!(l.as_str(), "inf" | "infinity" | "nan")
        };
        return (!lower).then(|| Value::String(s.to_string()));
    }
    // Short decimal integers without a leading zero or `+`; anything else numeric-looking
    // (floats, octal, hex, underscores, `1:20`) is left to the general reader.
    let (negative, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    let simple = !digits.is_empty()
        && digits.len() <= 18
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" && !negative || !digits.starts_with('0'));
    if !simple {
        return None;
    }
    let n: i64 = s.parse().ok()?;
    Some(Value::Number(if negative {
        Number::from(n)
    } else {
        Number::from(n.unsigned_abs())
    }))
}

/// Whether a plain mapping key certainly reads as its own text.
fn plain_key_is_text(s: &str) -> bool {
    s.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
        && plain_value(s).is_some_and(|v| v.is_string())
        && s != "<<"
}

/// Reads one document's text, or `None` when the general reader must decide. `max_depth` and
/// `max_nodes` bound what is read here (the general reader reports breaches).
pub(super) fn read_document(text: &str, max_depth: usize, max_nodes: usize) -> Option<Value> {
    let mut options = granit_parser::Options::default();
    options.emit_comments = false;
    let parser = Parser::new_from_str_with_options(text, options);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Value> = None;
    let (mut documents, mut nodes) = (0usize, 0usize);
    for item in parser {
        let (event, _span) = item.ok()?;
        let value = match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => continue,
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    return None;
                }
                continue;
            }
            Event::Scalar(text, style, anchor, tag) => {
                if anchor != 0 || tag.is_some() {
                    return None;
                }
                nodes += 1;
                // A key: a scalar in a mapping that waits for one.
                if let Some(Frame::Map(map, pending @ None)) = stack.last_mut() {
                    let key = text.into_owned();
                    let text_key = !matches!(style, ScalarStyle::Plain) || plain_key_is_text(&key);
                    if !text_key || map.contains_key(&key) {
                        return None;
                    }
                    *pending = Some(key);
                    continue;
                }
                if matches!(style, ScalarStyle::Plain) {
                    plain_value(&text)?
                } else {
                    Value::String(text.into_owned())
                }
            }
            Event::SequenceStart(_, anchor, ref tag) | Event::MappingStart(_, anchor, ref tag) => {
                if anchor != 0 || tag.is_some() {
                    return None;
                }
                if let Some(Frame::Map(_, None)) = stack.last() {
                    return None; // a collection as a key
                }
                nodes += 1;
                if stack.len() + 1 > max_depth || nodes > max_nodes {
                    return None;
                }
                stack.push(if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq(Vec::new())
                } else {
                    Frame::Map(Map::new(), None)
                });
                continue;
            }
            Event::SequenceEnd => match stack.pop()? {
                Frame::Seq(items) => Value::Array(items),
                Frame::Map(..) => return None,
            },
            Event::MappingEnd => match stack.pop()? {
                Frame::Map(map, None) => Value::Object(map),
                _ => return None,
            },
            _ => return None,
        };
        if nodes > max_nodes {
            return None;
        }
        match stack.last_mut() {
            None if root.is_none() => root = Some(value),
            None => return None,
            Some(Frame::Seq(items)) => items.push(value),
            Some(Frame::Map(map, pending)) => {
                let key = pending.take()?;
                map.insert(key, value);
            }
        }
    }
    if !stack.is_empty() {
        return None;
    }
    Some(root.unwrap_or(Value::Null))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_documents_are_read() {
        let v = read_document(
            "# c\nkind: A\nspec:\n  n: 12\n  neg: -3\n  hosts: [a, 'b']\n  m: {x: ~, y: true}\n  s: |\n    text\n",
            50,
            1000,
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"kind": "A", "spec": {"n": 12, "neg": -3, "hosts": ["a", "b"], "m": {"x": null, "y": true}, "s": "text\n"}})
        );
        assert_eq!(read_document("", 50, 1000), Some(Value::Null));
    }

    #[test]
    fn anything_unusual_is_left_to_the_general_reader() {
        for text in [
            "a: &x 1\nb: *x\n",
            "a: !!str 1\n",
            "a: 1.5\n",
            "a: 0755\n",
            "a: 1_000\n",
            "a: .inf\n",
            "a: nan\n",
            "a: 1\na: 2\n",
            "<<: {a: 1}\n",
            "1: a\n",
            "true: a\n",
            "? [a]\n: b\n",
            "a: [b\n",
            "a: 1\n---\nb: 2\n",
            "a: 99999999999999999999\n",
        ] {
            assert_eq!(read_document(text, 50, 1000), None, "{text:?}");
        }
        assert_eq!(read_document("a: {b: {c: 1}}\n", 2, 1000), None);
        assert!(read_document("a: {b: {c: 1}}\n", 3, 1000).is_some());
        assert_eq!(read_document("a: [1, 2, 3]\n", 50, 4), None);
    }
}
