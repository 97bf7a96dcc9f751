//! How commands print: human tables by default, JSON for scripts (`--format json`).
//!
//! Owns: column alignment and the JSON shape of a table (an array of objects keyed by the
//! column names, numbers kept as numbers). Never: decides what a command reports.

use serde_json::{Map, Value};

/// Output format chosen with `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Rows under named columns.
pub struct Table {
    columns: Vec<&'static str>,
    rows: Vec<Vec<Value>>,
}

impl Table {
    pub fn new(columns: &[&'static str]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<Value>) {
        debug_assert_eq!(cells.len(), self.columns.len());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows as JSON objects.
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|r| {
                    let mut m = Map::new();
                    for (c, v) in self.columns.iter().zip(r) {
                        m.insert((*c).to_owned(), v.clone());
                    }
                    Value::Object(m)
                })
                .collect(),
        )
    }

    /// The table as aligned text with an upper-case header line.
    pub fn to_text(&self) -> String {
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| r.iter().map(text_of).collect())
            .collect();
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.len()).collect();
        for r in &cells {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, values: &mut dyn Iterator<Item = String>| {
            let parts: Vec<String> = values
                .zip(&widths)
                .map(|(v, w)| format!("{v:<w$}"))
                .collect();
            out.push_str(parts.join("  ").trim_end());
            out.push('\n');
        };
        line(&mut out, &mut self.columns.iter().map(|c| c.to_uppercase()));
        for r in cells {
            line(&mut out, &mut r.into_iter());
        }
        out
    }
}

/// A cell as text: strings bare, null as `-`, arrays comma-joined.
fn text_of(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text_of).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A report made of named sections as one JSON object (for a command that prints several
/// reports as one array).
fn sections_json(sections: &[(&str, Section)]) -> Value {
    let mut m = Map::new();
    for (name, s) in sections {
        let v = match s {
            Section::Table(t) => t.to_json(),
            Section::Value(v) => v.clone(),
        };
        m.insert((*name).to_owned(), v);
    }
    Value::Object(m)
}

/// Prints a report made of named sections (each a table, or a single value).
pub fn print_sections(format: Format, sections: &[(&str, Section)]) {
    match format {
        Format::Json => println!("{}", sections_json(sections)),
        Format::Text => {
            let mut first = true;
            for (name, s) in sections {
                match s {
                    Section::Value(v) => println!("{name}: {}", text_of(v)),
                    Section::Table(t) => {
                        if !first {
                            println!();
                        }
                        println!("{}", name.to_uppercase());
                        print!("{}", t.to_text());
                    }
                }
                first = false;
            }
        }
    }
}

/// Prints several reports of named sections: a JSON array of objects, or the reports one
/// after the other with a blank line between them.
pub fn print_reports(format: Format, reports: &[Vec<(&str, Section)>]) {
    match format {
        Format::Json => {
            let out: Vec<Value> = reports.iter().map(|r| sections_json(r)).collect();
            println!("{}", Value::Array(out));
        }
        Format::Text => {
            for (i, r) in reports.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print_sections(format, r);
            }
        }
    }
}

/// Prints one table (a JSON array in JSON format).
pub fn print_table(format: Format, table: &Table) {
    match format {
        Format::Json => println!("{}", table.to_json()),
        Format::Text => print!("{}", table.to_text()),
    }
}

pub enum Section {
    Table(Table),
    Value(Value),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_aligns_columns_and_json_keeps_types() {
        let mut t = Table::new(&["name", "partitions", "replicas"]);
        t.row(vec![json!("orders"), json!(12), json!([1, 2, 3])]);
        t.row(vec![json!("a"), json!(1), Value::Null]);
        assert_eq!(
            t.to_text(),
            "NAME    PARTITIONS  REPLICAS\norders  12          1,2,3\na       1           -\n"
        );
        assert_eq!(
            t.to_json(),
            json!([
                {"name": "orders", "partitions": 12, "replicas": [1, 2, 3]},
                {"name": "a", "partitions": 1, "replicas": null}
            ])
        );
    }
}
