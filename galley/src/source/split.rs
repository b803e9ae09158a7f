//! Splitting a multi-document YAML text on `---` lines, keeping where each document starts.

/// One document of a file: its text and the 1-based line numbers that locate it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDocument {
    /// Line (1-based) of the first line of `text` in the file.
    pub first_line: usize,
    /// Line (1-based) of the document's first line that is neither blank nor a comment: where
    /// errors about the document as a whole point.
    pub line: usize,
    pub text: String,
}

/// Whether `line` is a document separator (`---`, optionally followed by whitespace or a
/// comment) or a document end marker (`...`).
fn is_separator(line: &str) -> bool {
    let line = line.trim_end();
    for marker in ["---", "..."] {
        if let Some(rest) = line.strip_prefix(marker)
            && (rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t'))
        {
            return true;
        }
    }
    false
}

fn is_content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#') && !t.starts_with('%')
}

/// Splits `text` into documents. Documents holding only blanks, comments or directives are
/// dropped. Content after `---` on the separator line itself (`--- {a: 1}`) is not supported
/// and is treated as a comment.
pub fn split_documents(text: &str) -> Vec<RawDocument> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut first_line = 1;
    let mut content_line = None;
    let mut flush = |current: &mut String, first_line: usize, content_line: &mut Option<usize>| {
        if let Some(line) = content_line.take() {
            docs.push(RawDocument {
                first_line,
                line,
                text: std::mem::take(current),
            });
        } else {
            current.clear();
        }
    };
    for (idx, line) in text.lines().enumerate() {
        let n = idx + 1;
        if is_separator(line) {
            flush(&mut current, first_line, &mut content_line);
            first_line = n + 1;
            continue;
        }
        if content_line.is_none() && is_content(line) {
            content_line = Some(n);
        }
        current.push_str(line);
        current.push('\n');
    }
    flush(&mut current, first_line, &mut content_line);
    docs
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_numbers_lines() {
        let text = "# leading comment\napiVersion: v1\nkind: Service\n---\n\n# c\nkind: Pod\n---   # sep with comment\n---\n...\nkind: Endpoints\nx: 1\n";
        let docs = split_documents(text);
        assert_eq!(docs.len(), 3);
        assert_eq!((docs[0].first_line, docs[0].line), (1, 2));
        assert!(
            docs[0]
                .text
                .starts_with("# leading comment\napiVersion: v1\n")
        );
        assert_eq!((docs[1].first_line, docs[1].line), (5, 7));
        assert_eq!(docs[1].text, "\n# c\nkind: Pod\n");
        assert_eq!((docs[2].first_line, docs[2].line), (11, 11));
        assert_eq!(docs[2].text, "kind: Endpoints\nx: 1\n");
    }

    #[test]
    fn dashes_inside_values_do_not_split() {
        let text = "a: |\n  ---x\nb: '--- no'\n----\n";
        let docs = split_documents(text);
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].text, text);
    }

    #[test]
    fn empty_text_has_no_documents() {
        assert!(split_documents("").is_empty());
        assert!(split_documents("---\n# only a comment\n---\n").is_empty());
    }
}
