//! `at1 sql ROOT "QUERY"`: the engine the mount's `.at1/sql` runs, on a
//! store, a mount point (its store is found from the mount table) or one
//! file.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::ValueEnum;

use at1::query::{self, FileSource, OutputFormat, QueryError, Source, StoreSource};
use at1::reader::Object;
use at1::store::OBJECT_SUFFIX;

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
    let meta = std::fs::metadata(root).with_context(|| format!("{}", root.display()))?;
    let source: Box<dyn Source> = if meta.is_dir() {
        Box::new(StoreSource { root: super::mount::store_of_mount(root).unwrap_or_else(|| root.to_path_buf()) })
    } else {
        Box::new(OneFile { given: root.to_path_buf(), file: FileSource { path: root.to_path_buf() } })
    };
    let format = match format {
        FormatArg::Json => OutputFormat::Json,
        FormatArg::Csv => OutputFormat::Csv,
    };
    // Built aside first: an error never leaves half a result on stdout.
    let mut spool = tempfile::SpooledTempFile::new(16 << 20);
    query::execute(sql, &*source, None, format, &mut spool)?;
    spool.rewind()?;
    let mut stdout = std::io::stdout().lock();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = spool.read(&mut buf)?;
        if n == 0 {
            break;
        }
        stdout.write_all(&buf[..n]).context("stdout")?;
    }
    stdout.flush().context("stdout")?;
    Ok(())
}
