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

pub mod budget;
pub mod exec;
pub mod expr;
pub mod output;
pub mod plan;
pub mod pool;
mod spill;

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

pub use budget::Limits;
pub use exec::QueryStats;
pub use plan::OutputFormat;

// The layers below, under the names the modules use for them.
pub(crate) use at1_core::{codec, format, gate, reader, value};

use at1_volume::access::Caller;
use at1_volume::{ResolveError, Resolved, Volume};
use gate::GateConfig;
use output::{CsvWriter, JsonWriter, ResultWriter};
use reader::{BlockCache, Object, ReadError, Reader};

/// The longest query text taken, in bytes.
pub const MAX_QUERY_BYTES: usize = 1 << 20;

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
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("{0} is not a table: it was not stored as CSV/TSV")]
    NotATable(String),
    #[error("reading {0}: {1}")]
    Read(String, String),
    #[error("writing the result: {0}")]
    Io(String),
    #[error("the query text is {0} bytes; the limit is {MAX_QUERY_BYTES} bytes (1 MiB)")]
    TooLong(usize),
    #[error("the query ran longer than its time limit of {0:?} and was stopped (raise --query-timeout)")]
    Timeout(std::time::Duration),
    #[error("{0} needs more than the query memory limit of {1} MiB (narrow it with WHERE or LIMIT, or raise --query-memory)")]
    Memory(&'static str, u64),
    #[error("too many queries are waiting; try again shortly")]
    Busy,
}

impl QueryError {
    fn read(path: &str, e: ReadError) -> Self {
        QueryError::Read(path.to_string(), e.to_string())
    }

    /// The errno a refused `.at1/sql` write fails with (errors met while
    /// a query runs come after its write and show only in its result).
    pub fn errno(&self) -> i32 {
        match self {
            QueryError::PermissionDenied(_) => libc::EACCES,
            QueryError::TooLong(_) => libc::EFBIG,
            QueryError::Timeout(_) => libc::ETIMEDOUT,
            QueryError::Memory(..) => libc::ENOMEM,
            QueryError::Busy => libc::EBUSY,
            _ => libc::EINVAL,
        }
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

/// Tables of a volume: a path is resolved inside the volume for
/// `caller`, who must be allowed to open the file (`Volume::resolve`).
pub struct VolumeSource {
    pub volume: Arc<Volume>,
    pub caller: Caller,
}

impl Source for VolumeSource {
    fn open(&self, path: &str) -> Result<Arc<Object>, QueryError> {
        checked_path(path)?;
        match self.volume.resolve(&self.caller, path) {
            Ok(Resolved { object: Some(o), .. }) => Ok(o),
            Ok(Resolved { object: None, .. }) => Err(QueryError::NotATable(path.to_string())),
            Err(ResolveError::PermissionDenied) => Err(QueryError::PermissionDenied(path.to_string())),
            Err(ResolveError::Volume(e)) => Err(QueryError::Read(path.to_string(), e.to_string())),
            Err(e) => Err(QueryError::NotFound(path.to_string(), e.to_string())),
        }
    }
}

/// One file: an `.at1` object or a CSV, opened by the process itself.
pub struct FileSource {
    pub path: PathBuf,
}

impl Source for FileSource {
    fn open(&self, _path: &str) -> Result<Arc<Object>, QueryError> {
        let name = self.path.display().to_string();
        let not_found = |e: std::io::Error| QueryError::NotFound(name.clone(), e.to_string());
        let mut file = std::fs::File::open(&self.path).map_err(not_found)?;
        if is_object(&mut file).map_err(not_found)? {
            Object::open_file(file).map(Arc::new).map_err(|e| QueryError::read(&name, e))
        } else {
            encode_plain(file, &name, None)
        }
    }
}

/// Whether `file` starts with the `.at1` magic.
fn is_object(file: &mut std::fs::File) -> std::io::Result<bool> {
    use std::io::{Read, Seek};
    let mut head = [0u8; format::MAGIC.len()];
    let n = file.read(&mut head)?;
    file.rewind()?;
    Ok(n == head.len() && head == format::MAGIC)
}

/// A raw CSV is encoded (through the gate, columnar) into an unnamed object
/// for the query, in `scratch` (or the system's temp directory); it is
/// mapped, then its temp file is removed.
fn encode_plain(mut input: std::fs::File, name: &str, scratch: Option<&Path>) -> Result<Arc<Object>, QueryError> {
    use std::io::Seek;
    input.rewind().map_err(|e| QueryError::Read(name.to_string(), e.to_string()))?;
    let dir = match scratch {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .map_err(|e| QueryError::Io(e.to_string()))?;
    let temp = dir.path().join("q.at1");
    let cfg = GateConfig { keep_queryable: true, ..GateConfig::default() }.with_level(3);
    gate::compress_to_path(input, &temp, &cfg, &|_| {}).map_err(|e| QueryError::Read(name.to_string(), e.to_string()))?;
    Object::open(&temp).map(Arc::new).map_err(|e| QueryError::read(name, e))
}

/// A query checked and planned against its table, ready to run: whatever
/// is wrong with the text, the path or the caller's rights has been found
/// by now.
pub struct Prepared {
    plan: plan::Plan,
    reader: Reader,
}

/// Parses `sql`, opens its table through `source` and plans it; the
/// result is written in the query's format (or `default_format`).
pub fn prepare(sql: &str, source: &dyn Source, cache: Option<Arc<BlockCache>>, default_format: OutputFormat) -> Result<Prepared, QueryError> {
    if sql.len() > MAX_QUERY_BYTES {
        return Err(QueryError::TooLong(sql.len()));
    }
    let parsed = plan::parse(sql)?;
    let explicit_format = parsed.format.is_some();
    let object = source.open(&parsed.path)?;
    let table = object.table().ok_or_else(|| QueryError::NotATable(parsed.path.clone()))?;
    let mut plan = plan::plan(parsed, table)?;
    if !explicit_format {
        plan.format = default_format;
    }
    Ok(Prepared { plan, reader: Reader::new(object.clone(), cache) })
}

impl Prepared {
    /// Runs the query within `limits`, writing its result to `out`.
    pub fn run(&self, limits: &Limits, out: &mut dyn Write) -> Result<QueryStats, QueryError> {
        let plan = &self.plan;
        // Values are formatted in many small pieces: buffered, not a system
        // call each.
        let out = std::io::BufWriter::with_capacity(1 << 16, out);
        let mut writer: Box<dyn ResultWriter + '_> = match plan.format {
            OutputFormat::Json => Box::new(JsonWriter::new(out)),
            OutputFormat::Csv => Box::new(CsvWriter::new(out)),
        };
        writer.begin(&plan.names[..plan.visible])?;
        let stats = exec::run(plan, &self.reader, limits, &mut *writer).map_err(|e| match e {
            QueryError::Read(p, m) if p.is_empty() => QueryError::Read(plan.path.clone(), m),
            other => other,
        })?;
        writer.finish(&stats)?;
        Ok(stats)
    }
}

/// Parses, plans and runs `sql` within `limits`, writing the result to
/// `out` in the query's format (or `default_format`).
pub fn execute(
    sql: &str,
    source: &dyn Source,
    cache: Option<Arc<BlockCache>>,
    default_format: OutputFormat,
    limits: &Limits,
    out: &mut dyn Write,
) -> Result<QueryStats, QueryError> {
    prepare(sql, source, cache, default_format)?.run(limits, out)
}
