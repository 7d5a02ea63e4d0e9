//! The `at1` command line: argument parsing (clap) and printing. No logic of
//! its own — every command calls the gate, the reader, the store or the
//! query engine.

mod inspect;
mod mount;
mod recall;
mod sql;

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use at1::format::{Backend, CodecChoice};
use at1::gate::{self, GateConfig};
use at1::reader::{self, AccessCost, Object, Reader};

#[derive(Parser, Debug)]
#[command(name = "at1", version, about = "Verified, queryable, compressed .at1 objects and the at1fs filesystem")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Compress IN into a verified .at1 object OUT ("-" = stdin/stdout).
    Compress(CompressArgs),
    /// Restore the exact original bytes of an object ("-" = stdin/stdout).
    Decompress { input: PathBuf, output: PathBuf },
    /// Print an object's original bytes, or a byte range of them.
    Cat {
        file: PathBuf,
        /// Bytes START-END (END exclusive; "START-" reads to the end).
        #[arg(long)]
        range: Option<String>,
    },
    /// Check every block checksum, decode everything, check the SHA-256.
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show codec, sizes, ratio, blocks, row groups, columns and zone maps.
    Inspect {
        file: PathBuf,
        #[arg(long)]
        json: bool,
        /// Also list every row group with its zone maps (text output).
        #[arg(long)]
        row_groups: bool,
    },
    /// Mount a store: every file kept as a verified .at1 object.
    Mount(mount::MountArgs),
    /// Unmount a mount and wait for its daemon to finish.
    Unmount {
        mountpoint: PathBuf,
        /// Seconds to wait for the daemon to exit.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Run a SQL query on a store, a mounted directory, or one .at1/CSV file.
    Sql {
        /// A store directory, an at1fs mount point, or a single file.
        root: PathBuf,
        query: String,
        /// Output format when the query has no FORMAT clause.
        #[arg(long, value_enum, default_value_t = sql::FormatArg::Json)]
        format: sql::FormatArg,
    },
    /// Bytes at rest and bytes materialized per access shape, beside
    /// whole-file xz.
    RecallCost {
        file: PathBuf,
        #[arg(long)]
        json: bool,
        /// xz preset of the whole-file comparison (6 is `xz`'s default).
        #[arg(long, default_value_t = 6)]
        xz_level: u32,
    },
}

#[derive(clap::Args, Debug)]
pub struct CompressArgs {
    pub input: PathBuf,
    pub output: PathBuf,
    #[arg(long, value_enum, default_value_t = CodecArg::Auto)]
    pub codec: CodecArg,
    #[arg(long, value_enum, default_value_t = BackendArg::Zstd)]
    pub backend: BackendArg,
    /// Backend level for every block (zstd 1-22, xz 0-9 with 10 = -9e).
    /// Default: zstd 19 for raw frames and 5 for columns; xz 9.
    #[arg(long)]
    pub level: Option<i32>,
    /// Lines read per chunk of input (the unit of streaming).
    #[arg(long, default_value_t = 500_000)]
    pub chunk_lines: usize,
    /// Keep every row group columnar (SQL-prunable) even where raw is smaller.
    #[arg(long)]
    pub keep_queryable: bool,
    #[command(flatten)]
    pub layout: LayoutArgs,
}

/// Layout knobs shared by `compress` and `mount`.
#[derive(clap::Args, Debug, Clone)]
pub struct LayoutArgs {
    /// Original bytes per raw frame.
    #[arg(long, default_value_t = 128 << 10)]
    pub frame_size: usize,
    /// Rows per row group at most.
    #[arg(long, default_value_t = 65_536)]
    pub row_group_rows: usize,
    /// Original bytes per row group at most.
    #[arg(long, default_value_t = 128 << 10)]
    pub row_group_bytes: usize,
    /// Encoder threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Do not keep per-file dictionaries (the zstd dictionary of raw frames,
    /// the string dictionaries of table columns): every block then decodes
    /// on its own.
    #[arg(long)]
    pub no_dictionary: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodecArg {
    Auto,
    Columnar,
    Raw,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendArg {
    Zstd,
    Xz,
}

impl BackendArg {
    pub fn backend(self) -> Backend {
        match self {
            BackendArg::Zstd => Backend::Zstd,
            BackendArg::Xz => Backend::Xz,
        }
    }
}

impl LayoutArgs {
    pub fn apply(&self, cfg: &mut GateConfig) {
        cfg.frame_size = self.frame_size.max(1);
        cfg.row_group_rows = self.row_group_rows.max(1);
        cfg.row_group_bytes = self.row_group_bytes.max(1);
        cfg.dictionary = !self.no_dictionary;
        if let Some(t) = self.threads {
            cfg.threads = t.max(1);
        }
    }
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Compress(args) => compress(&args),
        Command::Decompress { input, output } => decompress(&input, &output),
        Command::Cat { file, range } => cat(&file, range.as_deref()),
        Command::Verify { files } => verify(&files),
        Command::Inspect { file, json, row_groups } => inspect::run(&*open_object(&file)?, json, row_groups),
        Command::RecallCost { file, json, xz_level } => recall::run(&file, json, xz_level),
        Command::Mount(args) => mount::mount(&args),
        Command::Sql { root, query, format } => sql::run(&root, &query, format),
        Command::Unmount { mountpoint, timeout } => mount::unmount(&mountpoint, std::time::Duration::from_secs(timeout)),
    }
}

fn is_dash(p: &Path) -> bool {
    p.as_os_str() == "-"
}

/// A progress bar on stderr when it is a terminal; hidden otherwise.
fn progress_bar(total: Option<u64>) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::new_spinner(),
    };
    let style = ProgressStyle::with_template("{spinner} {bytes}/{total_bytes} {binary_bytes_per_sec} {wide_bar} {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

fn compress(args: &CompressArgs) -> Result<()> {
    let mut cfg = GateConfig {
        codec: match args.codec {
            CodecArg::Auto => CodecChoice::Auto,
            CodecArg::Columnar => CodecChoice::Columnar,
            CodecArg::Raw => CodecChoice::Raw,
        },
        chunk_lines: args.chunk_lines.max(1),
        keep_queryable: args.keep_queryable,
        ..GateConfig::default().with_backend(args.backend.backend())
    };
    if let Some(level) = args.level {
        cfg = cfg.with_level(level);
    }
    args.layout.apply(&mut cfg);
    let total = if is_dash(&args.input) { None } else { std::fs::metadata(&args.input).ok().map(|m| m.len()) };
    let bar = progress_bar(total);
    let progress = |n: u64| bar.set_position(n);
    let input: Box<dyn Read + Send> = if is_dash(&args.input) {
        Box::new(io::stdin())
    } else {
        Box::new(File::open(&args.input).with_context(|| format!("cannot open {}", args.input.display()))?)
    };
    let report = if is_dash(&args.output) {
        gate::compress_to_writer(input, &mut io::stdout().lock(), &cfg, &progress)?
    } else {
        gate::compress_to_path(input, &args.output, &cfg, &progress)?
    };
    bar.finish_and_clear();
    if !is_dash(&args.output) {
        eprintln!(
            "{} -> {}: {} -> {} bytes ({:.2}x), {} blocks, {} row groups ({} raw), verified",
            args.input.display(),
            args.output.display(),
            report.original_len,
            report.stored_len,
            ratio(report.original_len, report.stored_len),
            report.blocks,
            report.row_groups,
            report.raw_row_groups
        );
    }
    Ok(())
}

pub fn ratio(original: u64, stored: u64) -> f64 {
    if stored == 0 {
        0.0
    } else {
        original as f64 / stored as f64
    }
}

/// Opens an object from a path, or from stdin spooled to a temp file.
fn open_object(path: &Path) -> Result<Arc<Object>> {
    let object = if is_dash(path) {
        let mut spool = tempfile::tempfile()?;
        io::copy(&mut io::stdin().lock(), &mut spool)?;
        let mut bytes = Vec::new();
        use std::io::Seek;
        spool.seek(io::SeekFrom::Start(0))?;
        spool.read_to_end(&mut bytes)?;
        Object::from_vec(bytes)
    } else {
        Object::open(path)
    };
    Ok(Arc::new(object.with_context(|| format!("{}", path.display()))?))
}

fn decompress(input: &Path, output: &Path) -> Result<()> {
    let object = open_object(input)?;
    let bar = progress_bar(Some(object.original_len()));
    let reader = Reader::new(object, None);
    let mut done = 0u64;
    let progress = |n: u64| {
        done += n;
        bar.set_position(done);
    };
    if is_dash(output) {
        let stdout = io::stdout();
        let mut out = io::BufWriter::new(stdout.lock());
        reader.extract(&mut out, progress).with_context(|| format!("{}", input.display()))?;
        out.flush()?;
    } else {
        gate::atomic_write_with(output, |file| -> Result<()> {
            let mut out = io::BufWriter::new(file);
            reader.extract(&mut out, progress).with_context(|| format!("{}", input.display()))?;
            out.flush()?;
            Ok(())
        })?;
    }
    bar.finish_and_clear();
    Ok(())
}

fn parse_range(spec: &str, len: u64) -> Result<(u64, u64)> {
    let (a, b) = spec.split_once('-').context("range must be START-END")?;
    let start: u64 = a.trim().parse().context("range start")?;
    let end: u64 = if b.trim().is_empty() { len } else { b.trim().parse().context("range end")? };
    if end < start {
        bail!("range end {end} is before its start {start}");
    }
    Ok((start, end.min(len)))
}

fn cat(path: &Path, range: Option<&str>) -> Result<()> {
    let object = open_object(path)?;
    let len = object.original_len();
    let (start, end) = match range {
        Some(r) => parse_range(r, len)?,
        None => (0, len),
    };
    let reader = Reader::new(object, None);
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut cost = AccessCost::default();
    let mut pos = start;
    while pos < end {
        let n = ((end - pos) as usize).min(1 << 20);
        let bytes = reader.read_at(pos, n, &mut cost).with_context(|| format!("{}", path.display()))?;
        if bytes.is_empty() {
            break;
        }
        out.write_all(&bytes)?;
        pos += bytes.len() as u64;
    }
    out.flush()?;
    Ok(())
}

/// Raised by `verify` so that `main` exits with the verification code.
#[derive(Debug, thiserror::Error)]
#[error("{0} of {1} objects failed verification")]
pub struct VerifyFailed(pub usize, pub usize);

fn verify(files: &[PathBuf]) -> Result<()> {
    let mut failed = 0;
    for f in files {
        let outcome = Object::open(f).map(Arc::new).and_then(reader::verify);
        match outcome {
            Ok(_) => println!("{}: OK", f.display()),
            Err(e) => {
                failed += 1;
                println!("{}: FAILED: {e}", f.display());
            }
        }
    }
    if failed > 0 {
        return Err(VerifyFailed(failed, files.len()).into());
    }
    Ok(())
}
