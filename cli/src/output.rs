//! Printing: aligned tables for people, YAML or JSON for programs.

use serde::Serialize;

use crate::args::Output;

/// Prints `value` as YAML or JSON; returns false for the table format, which the caller prints.
pub fn structured<T: Serialize>(output: Output, value: &T) -> anyhow::Result<bool> {
    match output {
        Output::Table => Ok(false),
        Output::Yaml => {
            print!("{}", serde_yaml::to_string(value)?);
            Ok(true)
        }
        Output::Json => {
            println!("{}", serde_json::to_string_pretty(value)?);
            Ok(true)
        }
    }
}

/// A table with upper-case headers and columns two spaces apart, as kubectl prints them.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these headers.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            rows: vec![headers.iter().map(|h| h.to_uppercase()).collect()],
        }
    }

    /// Adds a row; missing values print as `-`.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(
            cells
                .into_iter()
                .map(|c| if c.is_empty() { "-".into() } else { c })
                .collect(),
        );
    }

    /// The table as text.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let last = row.len().saturating_sub(1);
            for (i, cell) in row.iter().enumerate() {
                out.push_str(cell);
                if i < last {
                    out.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
                }
            }
            out.push('\n');
        }
        out
    }

    /// Prints the table, or a note when it has no rows.
    pub fn print_or(&self, empty: &str) {
        if self.rows.len() == 1 {
            eprintln!("{empty}");
        } else {
            print!("{}", self.render());
        }
    }
}

/// A duration as kubectl's AGE column shows it: `45s`, `12m`, `5h`, `3d`.
pub fn age(seconds: i64) -> String {
    match seconds.max(0) {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_fill_gaps() {
        let mut t = Table::new(&["name", "phase"]);
        t.row(vec!["hello".into(), "RUNNING".into()]);
        t.row(vec!["a-longer-name".into(), String::new()]);
        assert_eq!(
            t.render(),
            "NAME           PHASE\nhello          RUNNING\na-longer-name  -\n"
        );
        assert_eq!(
            (age(5), age(600), age(7300), age(200_000)),
            ("5s".into(), "10m".into(), "2h".into(), "2d".into())
        );
    }
}
