//! Output: aligned tables for people, `--format json` for scripts.

use std::io::Write;

use serde_json::{Map, Value};

use crate::CtlError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Rows as `columns` of `items`; each column is read from the item by `field`.
pub(crate) fn print(
    out: &mut dyn Write,
    format: Format,
    columns: &[String],
    items: &[Value],
    field: impl Fn(&Value, &str) -> Value,
) -> Result<(), CtlError> {
    let rows: Vec<Vec<Value>> = items
        .iter()
        .map(|item| columns.iter().map(|c| field(item, c)).collect())
        .collect();
    match format {
        Format::Json => {
            let objects: Vec<Value> = rows
                .into_iter()
                .map(|row| {
                    let map: Map<String, Value> = columns.iter().cloned().zip(row).collect();
                    Value::Object(map)
                })
                .collect();
            writeln!(out, "{}", Value::Array(objects))?;
        }
        Format::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|row| row.iter().map(cell).collect())
                .collect();
            let widths: Vec<usize> = columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    cells
                        .iter()
                        .map(|r| r[i].chars().count())
                        .chain([c.len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            line(out, columns, &widths)?;
            for row in &cells {
                line(out, row, &widths)?;
            }
        }
    }
    Ok(())
}

fn line(out: &mut dyn Write, cells: &[String], widths: &[usize]) -> Result<(), CtlError> {
    let padded: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(c, w)| format!("{c:<w$}"))
        .collect();
    writeln!(out, "{}", padded.join("  ").trim_end())?;
    Ok(())
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A field by dotted path.
pub(crate) fn lookup(item: &Value, path: &str) -> Value {
    path.split('.')
        .try_fold(item, |v, key| v.get(key))
        .cloned()
        .unwrap_or(Value::Null)
}
