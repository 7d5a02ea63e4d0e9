//! Query results as JSON (the seed's shape) or CSV, written row by row so a
//! large result streams instead of being built whole.
//!
//! ```json
//! {"columns": [...], "rows": [[...], ...], "row_count": N,
//!  "stats": {"bytes_read": B, "total_block_bytes": T, "row_groups_total": G,
//!            "row_groups_scanned": S, "elapsed_ms": E}}
//! ```

use std::io::Write;

use serde_json::{json, Value};

use super::exec::QueryStats;
use super::expr::Datum;
use super::QueryError;
use crate::value::Scalar;

/// Where result rows go.
pub trait RowSink {
    fn row(&mut self, values: &[Datum]) -> Result<(), QueryError>;
}

/// A result writer for one output format.
pub trait ResultWriter: RowSink {
    fn begin(&mut self, columns: &[String]) -> Result<(), QueryError>;
    fn finish(&mut self, stats: &QueryStats) -> Result<(), QueryError>;
}

fn io(e: std::io::Error) -> QueryError {
    QueryError::Io(e.to_string())
}

pub struct JsonWriter<W: Write> {
    out: W,
    rows: u64,
}

impl<W: Write> JsonWriter<W> {
    pub fn new(out: W) -> Self {
        Self { out, rows: 0 }
    }
}

impl<W: Write> RowSink for JsonWriter<W> {
    fn row(&mut self, values: &[Datum]) -> Result<(), QueryError> {
        let row: Vec<Value> = values.iter().map(crate::value::option_to_json).collect();
        let sep = if self.rows == 0 { "\n" } else { ",\n" };
        write!(self.out, "{sep}{}", Value::Array(row)).map_err(io)?;
        self.rows += 1;
        Ok(())
    }
}

impl<W: Write> ResultWriter for JsonWriter<W> {
    fn begin(&mut self, columns: &[String]) -> Result<(), QueryError> {
        write!(self.out, "{{\"columns\": {}, \"rows\": [", json!(columns)).map_err(io)
    }

    fn finish(&mut self, s: &QueryStats) -> Result<(), QueryError> {
        let stats = json!({
            "bytes_read": s.bytes_read,
            "total_block_bytes": s.total_block_bytes,
            "row_groups_total": s.row_groups_total,
            "row_groups_scanned": s.row_groups_scanned,
            "elapsed_ms": (s.elapsed_ms * 1000.0).round() / 1000.0,
        });
        writeln!(self.out, "{}], \"row_count\": {}, \"stats\": {stats}}}", if self.rows == 0 { "" } else { "\n" }, self.rows).map_err(io)?;
        self.out.flush().map_err(io)
    }
}

pub struct CsvWriter<W: Write> {
    out: W,
}

impl<W: Write> CsvWriter<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

/// A CSV field: quoted when it holds a comma, quote, CR or LF.
fn csv_field(text: &[u8], out: &mut Vec<u8>) {
    if text.iter().any(|&b| matches!(b, b',' | b'"' | b'\r' | b'\n')) {
        out.push(b'"');
        for &b in text {
            out.push(b);
            if b == b'"' {
                out.push(b'"');
            }
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(text);
    }
}

impl<W: Write> RowSink for CsvWriter<W> {
    fn row(&mut self, values: &[Datum]) -> Result<(), QueryError> {
        let mut line = Vec::new();
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            match v {
                None => {}
                Some(Scalar::Str(s)) => csv_field(s, &mut line),
                Some(other) => csv_field(other.to_string().as_bytes(), &mut line),
            }
        }
        line.push(b'\n');
        self.out.write_all(&line).map_err(io)
    }
}

impl<W: Write> ResultWriter for CsvWriter<W> {
    fn begin(&mut self, columns: &[String]) -> Result<(), QueryError> {
        let header: Vec<Datum> = columns.iter().map(|c| Some(Scalar::Str(c.as_bytes().to_vec()))).collect();
        self.row(&header)
    }

    fn finish(&mut self, _stats: &QueryStats) -> Result<(), QueryError> {
        self.out.flush().map_err(io)
    }
}

/// The JSON an error reads as.
pub fn error_json(e: &QueryError) -> String {
    format!("{}\n", json!({ "error": e.to_string() }))
}
