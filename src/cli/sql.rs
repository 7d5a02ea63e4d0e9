//! `at1 sql ROOT "QUERY"`: the engine the mount's `.at1/sql` runs, on a
//! mount point, a store directory, or one file.
//!
//! - A mount point: the query goes through the mount's own `.at1/sql`, so
//!   the daemon runs it with this process's rights, as it would for `echo
//!   ... > .at1/sql`.
//! - A store directory: the query runs here, resolving its table inside the
//!   store with this process's rights (uid, groups), as the mount would.
//! - A file (an `.at1` object or a CSV): the query's FROM must name it.

use std::io::{Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;

use at1::access::Caller;
use at1::query::pool::QUERY_STACK;
use at1::query::{self, FileSource, Limits, OutputFormat, Source, StoreSource};

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum FormatArg {
    Json,
    Csv,
}

/// Whether `dir` is the mount point of an at1fs mount (from
/// /proc/self/mountinfo: type `fuse.at1fs`).
fn is_at1fs_mount(dir: &Path) -> bool {
    let Ok(dir) = std::fs::canonicalize(dir) else { return false };
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = dir.to_string_lossy().replace('\\', "\\134").replace(' ', "\\040").replace('\t', "\\011").replace('\n', "\\012");
    text.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let dash = fields.iter().position(|f| *f == "-");
        fields.get(4) == Some(&want.as_str()) && dash.and_then(|d| fields.get(d + 1)) == Some(&"fuse.at1fs")
    })
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
    if meta.is_dir() && is_at1fs_mount(root) {
        return through_mount(root, sql, format);
    }
    let source: Box<dyn Source> = if meta.is_dir() {
        Box::new(StoreSource { root: root.to_path_buf(), caller: Caller::current_process(), scratch: None })
    } else {
        check_from_names_file(sql, root)?;
        Box::new(FileSource { path: root.to_path_buf() })
    };
    // Built aside first: an error never leaves half a result on stdout.
    let mut spool = tempfile::SpooledTempFile::new(16 << 20);
    query::execute(sql, &*source, None, format, &Limits::default(), &mut spool)?;
    spool.rewind()?;
    copy_to_stdout(&mut spool)
}

/// For a query on one file: its FROM must name that file (by its path as
/// given, or its file name), so a query meant for another table never runs
/// on this one.
fn check_from_names_file(sql: &str, file: &Path) -> Result<()> {
    let from = query::plan::parse(sql)?.path;
    let given = file.to_string_lossy();
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let from_trimmed = from.trim_start_matches("./");
    if from_trimmed != given.trim_start_matches("./") && from_trimmed != name {
        bail!("the query reads {from}, but the file given is {given}: name the file in FROM (e.g. FROM {name}), or give a store or mount point");
    }
    Ok(())
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
        stdout.write_all(&buf[..n])?;
    }
    stdout.flush()?;
    Ok(())
}
