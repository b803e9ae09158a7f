//! Column-aligned text tables (three spaces between columns, as istioctl prints them).

use std::fmt::Write as _;

/// A table being built: a header row, then rows of the same width.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            rows: vec![headers.iter().map(|h| (*h).to_string()).collect()],
        }
    }

    /// Adds a row (cells beyond the header's width are kept; missing ones are empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The text, one line per row, trailing spaces trimmed.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for r in &self.rows {
            let mut line = String::new();
            for (c, width) in widths.iter().enumerate() {
                let cell = r.get(c).map_or("", String::as_str);
                let _ = write!(line, "{cell:<width$}   ");
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let mut t = Table::new(&["NAME", "CDS"]);
        t.row(vec!["productpage-v1.default".into(), "SYNCED".into()]);
        t.row(vec!["a".into(), "NOT SENT".into()]);
        assert_eq!(
            t.render(),
            "NAME                     CDS\n\
             productpage-v1.default   SYNCED\n\
             a                        NOT SENT\n"
        );
    }
}
