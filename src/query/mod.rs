//! SQL over `.at1` tables: `sqlparser` for the text, zone maps and roll-ups
//! for pruning, the one reader for the bytes.
//!
//! - [`plan`]: parse (a bare `FROM data/x.csv` path is allowed) and resolve
//!   names and literal types against the table;
//! - [`expr`]: predicates with SQL NULL semantics and their verdict over a
//!   row group's zone map;
//! - [`exec`]: the scan — prune, decode only needed columns, fold roll-ups,
//!   stop at LIMIT;
//! - [`output`]: JSON (the seed's shape) or CSV, streamed.
//!
//! Supported: SELECT of columns, `*` and aliases; WHERE with comparisons,
//! BETWEEN, IN, LIKE, IS [NOT] NULL, AND/OR/NOT; COUNT(*), COUNT, SUM, MIN,
//! MAX, AVG; GROUP BY columns; ORDER BY (NULLs last unless asked); LIMIT and
//! OFFSET. Anything else is refused with an error naming the construct.

pub mod exec;
pub mod expr;
pub mod output;
pub mod plan;

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

pub use exec::QueryStats;
pub use plan::OutputFormat;

use crate::gate::{self, GateConfig};
use crate::reader::{BlockCache, Object, ReadError, Reader};
use crate::store::{self, Resolved};
use output::{CsvWriter, JsonWriter, ResultWriter};

#[derive(Debug, Error)]
pub enum QueryError {
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Plan(String),
    #[error("bad path {0:?}: paths are relative to the root, without '..'")]
    Path(String),
    #[error("{0}: {1}")]
    NotFound(String, String),
    #[error("{0} is not a table: it was not stored as CSV/TSV")]
    NotATable(String),
    #[error("reading {0}: {1}")]
    Read(String, String),
    #[error("writing the result: {0}")]
    Io(String),
}

impl QueryError {
    fn read(path: &str, e: ReadError) -> Self {
        QueryError::Read(path.to_string(), e.to_string())
    }
}

impl From<ReadError> for QueryError {
    fn from(e: ReadError) -> Self {
        QueryError::Read(String::new(), e.to_string())
    }
}

/// Where `FROM` paths are found.
pub trait Source {
    fn open(&self, path: &str) -> Result<Arc<Object>, QueryError>;
}

/// Checks that a FROM path stays inside the root.
pub fn checked_path(path: &str) -> Result<PathBuf, QueryError> {
    let p = Path::new(path.trim_start_matches("./"));
    if p.as_os_str().is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(QueryError::Path(path.to_string()));
    }
    Ok(p.to_path_buf())
}

/// A store directory (mounted or not): paths are the mount's logical paths.
pub struct StoreSource {
    pub root: PathBuf,
}

impl Source for StoreSource {
    fn open(&self, path: &str) -> Result<Arc<Object>, QueryError> {
        let rel = checked_path(path)?;
        match store::resolve(&self.root, &rel) {
            Ok(Resolved::Object(p)) => Object::open(&p).map(Arc::new).map_err(|e| QueryError::read(path, e)),
            Ok(Resolved::Plain(p)) => encode_plain(&p, path),
            Ok(Resolved::Empty) => Err(QueryError::NotATable(path.to_string())),
            Ok(Resolved::NotAFile) => Err(QueryError::NotFound(path.to_string(), "not a regular file".into())),
            Err(e) => Err(QueryError::NotFound(path.to_string(), e.to_string())),
        }
    }
}

/// One file: an `.at1` object or a CSV. The FROM path is not checked
/// against its name.
pub struct FileSource {
    pub path: PathBuf,
}

impl Source for FileSource {
    fn open(&self, _path: &str) -> Result<Arc<Object>, QueryError> {
        let name = self.path.display().to_string();
        match store::classify(&self.path) {
            Ok(store::RegularKind::Bare) => Object::open(&self.path).map(Arc::new).map_err(|e| QueryError::read(&name, e)),
            Ok(_) => encode_plain(&self.path, &name),
            Err(e) => Err(QueryError::NotFound(name, e.to_string())),
        }
    }
}

/// A raw CSV is encoded (through the gate, columnar) into an unnamed object
/// for the query; it is mapped, then its temp file is removed.
fn encode_plain(path: &Path, name: &str) -> Result<Arc<Object>, QueryError> {
    let input = std::fs::File::open(path).map_err(|e| QueryError::NotFound(name.to_string(), e.to_string()))?;
    let dir = tempfile::tempdir().map_err(|e| QueryError::Io(e.to_string()))?;
    let temp = dir.path().join("q.at1");
    let cfg = GateConfig { keep_queryable: true, ..GateConfig::default() }.with_level(3);
    gate::compress_to_path(input, &temp, &cfg, &|_| {}).map_err(|e| QueryError::Read(name.to_string(), e.to_string()))?;
    Object::open(&temp).map(Arc::new).map_err(|e| QueryError::read(name, e))
}

/// Parses, plans and runs `sql`, writing the result to `out` in the query's
/// format (or `default_format`).
pub fn execute(
    sql: &str,
    source: &dyn Source,
    cache: Option<Arc<BlockCache>>,
    default_format: OutputFormat,
    out: &mut dyn Write,
) -> Result<QueryStats, QueryError> {
    let parsed = plan::parse(sql)?;
    let object = source.open(&parsed.path)?;
    let path = parsed.path.clone();
    let table = object.table().ok_or_else(|| QueryError::NotATable(path.clone()))?;
    let mut plan = plan::plan(parsed, table)?;
    if plan_format_is_default(sql) {
        plan.format = default_format;
    }
    let reader = Reader::new(object.clone(), cache);
    let mut writer: Box<dyn ResultWriter + '_> = match plan.format {
        OutputFormat::Json => Box::new(JsonWriter::new(out)),
        OutputFormat::Csv => Box::new(CsvWriter::new(out)),
    };
    writer.begin(&plan.names[..plan.visible])?;
    let stats = exec::run(&plan, &reader, &mut *writer).map_err(|e| match e {
        QueryError::Read(p, m) if p.is_empty() => QueryError::Read(path.clone(), m),
        other => other,
    })?;
    writer.finish(&stats)?;
    Ok(stats)
}

/// True when the query text has no FORMAT clause of its own.
fn plan_format_is_default(sql: &str) -> bool {
    plan::parse(sql).map(|p| p.format.is_none()).unwrap_or(true)
}
