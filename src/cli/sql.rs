//! `at1 sql ROOT "QUERY"`: the engine the mount's `.at1/sql` runs, on a
//! store, a mount point (its store is found from the mount table) or one
//! file.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::ValueEnum;

use at1::query::{self, FileSource, OutputFormat, Source, StoreSource};

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum FormatArg {
    Json,
    Csv,
}

/// The store behind an at1fs mount point, from /proc/self/mountinfo.
fn store_of_mount(dir: &Path) -> Option<PathBuf> {
    let dir = std::fs::canonicalize(dir).ok()?;
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let dash = fields.iter().position(|f| *f == "-")?;
        (Path::new(fields.get(4)?) == dir).then(|| fields.get(dash + 2)?.strip_prefix("at1fs:").map(PathBuf::from))?
    })
}

pub fn run(root: &Path, sql: &str, format: FormatArg) -> Result<()> {
    let source: Box<dyn Source> = if root.is_file() {
        Box::new(FileSource { path: root.to_path_buf() })
    } else {
        Box::new(StoreSource { root: store_of_mount(root).unwrap_or_else(|| root.to_path_buf()) })
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
        stdout.write_all(&buf[..n])?;
    }
    stdout.flush()?;
    Ok(())
}
