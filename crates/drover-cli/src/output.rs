//! How results are printed: human tables and `key: value` blocks, or `-o json` (a list prints a
//! JSON array of the API's objects, a single object prints that object). Nothing here talks to
//! the server.

use crate::CliError;
use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
}

pub fn print_json(value: &impl Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|error| {
        CliError::local(
            "output_error",
            format!("cannot encode the answer as JSON: {error}"),
            "report this as a bug",
        )
    })?;
    println!("{text}");
    Ok(())
}

/// Left-aligned columns, two spaces apart, headers in capitals.
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            format!("{}\n", padded.join("  ").trim_end())
        };
        let mut text = line(self.headers.clone());
        for row in &self.rows {
            text.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        text
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// `key: value` lines with the values aligned.
pub fn print_fields(fields: &[(&str, String)]) {
    let width = fields.iter().map(|(key, _)| key.len()).max().unwrap_or(0) + 1;
    for (key, value) in fields {
        println!("{:<width$} {value}", format!("{key}:"));
    }
}

/// A timestamp as people read it, in UTC to the second.
pub fn time(at: &chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let mut table = Table::new(&["NAME", "STATE"]);
        table.row(vec!["web-server-1".to_owned(), "Running".to_owned()]);
        table.row(vec!["db".to_owned(), "Stopped".to_owned()]);
        assert_eq!(
            table.render(),
            "NAME          STATE\nweb-server-1  Running\ndb            Stopped\n"
        );
    }
}
