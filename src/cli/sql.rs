//! `at1 sql ROOT "QUERY"`: the engine the mount's `.at1/sql` runs, on a
//! mount point, a store directory, or one file.
//!
//! - A mount point: the query goes through the mount's own `.at1/sql`, so
//!   the daemon runs it with this process's rights, as it would for `echo
//!   ... > .at1/sql`.
//! - A store directory: the query runs here, beside any daemon serving the
//!   store, resolving its table in the volume with this process's rights
//!   (uid, groups), as the mount would; reading the store at all needs the
//!   rights of its owner.
//! - A file (an `.at1` object or a CSV): the query's FROM must name it.

use std::io::{Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;

use at1::query::pool::QUERY_STACK;
use at1::query::{self, FileSource, Limits, OutputFormat, QueryError, Source, VolumeSource};
use at1::reader::Object;
use at1::volume::access::Caller;
use at1::volume::Volume;

use super::files::OBJECT_SUFFIX;

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum FormatArg {
    Json,
    Csv,
}

/// One file given as ROOT: the query's FROM must name it (its path as
/// given, its file name, or either without `.at1`), so that a query meant
/// for another file is refused rather than run on this one.
struct OneFile {
    given: PathBuf,
    file: FileSource,
}

impl OneFile {
    fn names(&self) -> Vec<String> {
        let given = self.given.display().to_string();
        let file_name = self.given.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut names = vec![given, file_name];
        for n in names.clone() {
            if let Some(stem) = n.strip_suffix(OBJECT_SUFFIX).filter(|s| !s.is_empty()) {
                names.push(stem.to_string());
            }
        }
        names
    }
}

impl Source for OneFile {
    fn open(&self, path: &str) -> Result<Arc<Object>, QueryError> {
        let from = path.trim_start_matches("./");
        if !self.names().iter().any(|n| n.trim_start_matches("./") == from) {
            return Err(QueryError::Plan(format!(
                "FROM {path} does not name {}, the one file this query runs on (use FROM {})",
                self.given.display(),
                self.given.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
            )));
        }
        self.file.open(path)
    }
}

pub fn run(root: &Path, sql: &str, format: FormatArg) -> Result<()> {
    let format = match format {
        FormatArg::Json => OutputFormat::Json,
        FormatArg::Csv => OutputFormat::Csv,
    };
    if sql.len() > query::MAX_QUERY_BYTES {
        return Err(query::QueryError::TooLong(sql.len()).into());
    }
    let (root, sql) = (root.to_path_buf(), sql.to_string());
    // A long operator chain parses into a tree as deep as the chain: the
    // query runs on a thread with the query pool's stack.
    let worker = std::thread::Builder::new().stack_size(QUERY_STACK).spawn(move || run_here(&root, &sql, format))?;
    worker.join().unwrap_or_else(|_| bail!("the query failed unexpectedly"))
}

fn run_here(root: &Path, sql: &str, format: OutputFormat) -> Result<()> {
    let meta = std::fs::metadata(root).with_context(|| format!("{}", root.display()))?;
    if meta.is_dir() && super::mount::store_of_mount(root).is_some() {
        return through_mount(root, sql, format);
    }
    let source: Box<dyn Source> = if meta.is_dir() {
        let volume = Volume::open_read_only(root).map_err(|e| anyhow::anyhow!("{}: {e}", root.display()))?;
        Box::new(VolumeSource { volume, caller: Caller::current_process() })
    } else {
        Box::new(OneFile { given: root.to_path_buf(), file: FileSource { path: root.to_path_buf() } })
    };
    // Built aside first: an error never leaves half a result on stdout.
    let mut spool = tempfile::SpooledTempFile::new(16 << 20);
    query::execute(sql, &*source, None, format, &Limits::default(), &mut spool)?;
    spool.rewind()?;
    copy_to_stdout(&mut spool)
}

/// Runs the query through the mount's `.at1/sql`.
fn through_mount(mountpoint: &Path, sql: &str, format: OutputFormat) -> Result<()> {
    let control = mountpoint.join(".at1/sql");
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&control).with_context(|| format!("{}", control.display()))?;
    let mut text = sql.trim_end().trim_end_matches(';').to_string();
    if format == OutputFormat::Csv && query::plan::parse(&text).is_ok_and(|p| p.format.is_none()) {
        text.push_str(" FORMAT CSV");
    }
    text.push('\n');
    if let Err(e) = (&file).write_all(text.as_bytes()) {
        // The refusal's reason is the handle's result.
        let mut answer = String::new();
        let _ = (&file).take(64 << 10).read_to_string(&mut answer);
        let reason = serde_json::from_str::<serde_json::Value>(&answer).ok().and_then(|v| v["error"].as_str().map(str::to_string));
        match reason {
            Some(r) => bail!("{r}"),
            None => bail!("query refused by the mount: {e}"),
        }
    }
    copy_to_stdout(&mut ResultReader { file, offset: 0 })
}

/// Reads a result from offset 0 of the handle that ran it (positional
/// reads: the handle's own offset is past the query text).
struct ResultReader {
    file: std::fs::File,
    offset: u64,
}

impl Read for ResultReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

fn copy_to_stdout(from: &mut dyn Read) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        stdout.write_all(&buf[..n]).context("stdout")?;
    }
    stdout.flush().context("stdout")?;
    Ok(())
}
