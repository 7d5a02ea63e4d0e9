//! `at1 compress`, `at1 decompress` and `at1 cat`: files in, files out, with
//! the conventions of zstd and xz (default names, `-c`, `-f`, `-q`, `-v`,
//! `-T`, `-N` levels, the input always kept; output rules in
//! [`super::output`]).

use std::fs::{File, Metadata};
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use at1::format::CodecChoice;
use at1::gate::{self, CommitReport, GateError};
use at1::reader::{AccessCost, ReadError, Reader};

/// The suffix of an `.at1` object's file name.
pub const OBJECT_SUFFIX: &str = ".at1";

use super::output::{self, Destination};
use super::{is_dash, open_object, progress_bar, ratio, BackendArgs, LayoutArgs};

pub const COMPRESS_AFTER_HELP: &str = "\
The input is never deleted or changed. A new output takes the input's mode
and times. An output that is a regular file (or a new name) is written
atomically: a temp file beside it, fsync, rename; a symlink is followed and
its target replaced. A device, FIFO or socket is written in place. An
existing output is not overwritten without -f.

Exit status:
  0  success
  1  error: I/O, a missing or unreadable file, an output that exists
  2  usage error: unknown or bad arguments and options
  3  verification failed: the encoding did not decode back to the input;
     nothing was written";

pub const DECOMPRESS_AFTER_HELP: &str = "\
The input is never deleted or changed. A new output takes the input's mode
and times. An output that is a regular file (or a new name) is written
atomically: a temp file beside it, fsync, rename; a symlink is followed and
its target replaced. A device, FIFO or socket is written in place. An
existing output is not overwritten without -f. Every byte is checked (block
and segment checksums, then the SHA-256 of the whole) before the output is
renamed into place.

Exit status:
  0  success
  1  error: I/O, a missing file, an object that is corrupt or not an .at1
     object, an output that exists
  2  usage error: unknown or bad arguments and options";

/// Output choices shared by `compress` and `decompress`.
#[derive(clap::Args, Debug)]
pub struct OutputArgs {
    /// Write to OUTPUT (the same as the second argument).
    #[arg(short = 'o', long = "output", value_name = "OUTPUT", conflicts_with = "output")]
    pub output_opt: Option<PathBuf>,
    /// Write to stdout (the same as OUTPUT "-").
    #[arg(short = 'c', long, conflicts_with_all = ["output", "output_opt"])]
    pub stdout: bool,
    /// Overwrite an existing output file (and let compress write to a
    /// terminal).
    #[arg(short, long)]
    pub force: bool,
    /// Keep the input. Always the case: accepted for zstd and xz habits.
    #[arg(short, long)]
    pub keep: bool,
    /// Print nothing but errors: no summary, no progress bar.
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Also print the time taken and the speed, and the summary when the
    /// output is stdout.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(clap::Args, Debug)]
pub struct CompressArgs {
    /// The file to compress ("-" reads stdin). It is kept as it is.
    pub input: PathBuf,
    /// The object to write ("-" is stdout) [default: INPUT.at1, or stdout
    /// when INPUT is "-"].
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub out: OutputArgs,
    /// How to encode: auto (a table where the input is CSV/TSV, byte
    /// frames otherwise, per row group whichever is smaller), columnar (a
    /// table, or fail), raw (byte frames only).
    #[arg(long, value_enum, default_value_t = CodecArg::Auto)]
    pub codec: CodecArg,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Lines read per chunk of input (the unit of streaming).
    #[arg(long, default_value_t = 500_000, value_name = "LINES")]
    pub chunk_lines: usize,
    /// Keep every row group columnar (SQL-prunable) even where raw is smaller.
    #[arg(long)]
    pub keep_queryable: bool,
    #[command(flatten)]
    pub layout: LayoutArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodecArg {
    Auto,
    Columnar,
    Raw,
}

#[derive(clap::Args, Debug)]
pub struct DecompressArgs {
    /// The .at1 object to restore ("-" reads stdin). It is kept as it is.
    pub input: PathBuf,
    /// Where to write the original bytes ("-" is stdout) [default: INPUT
    /// without ".at1", or stdout when INPUT is "-"].
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub out: OutputArgs,
    /// Decoder threads (default: all cores, at most 8).
    #[arg(short = 'T', long, value_name = "N")]
    pub threads: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

impl OutputArgs {
    fn verbosity(&self) -> Verbosity {
        match (self.quiet, self.verbose) {
            (true, _) => Verbosity::Quiet,
            (_, true) => Verbosity::Verbose,
            _ => Verbosity::Normal,
        }
    }

    /// The output the user named, if any ("-" for stdout).
    fn explicit(&self, positional: &Option<PathBuf>) -> Option<PathBuf> {
        if self.stdout {
            return Some(PathBuf::from("-"));
        }
        positional.clone().or_else(|| self.output_opt.clone())
    }
}

/// What a path names in messages: stdin and stdout by name.
fn shown(path: &Path, dash: &str) -> String {
    if is_dash(path) {
        dash.to_string()
    } else {
        path.display().to_string()
    }
}

/// The input's metadata, refusing a directory.
fn input_metadata(input: &Path) -> Result<Metadata> {
    let meta = std::fs::metadata(input).with_context(|| format!("{}", input.display()))?;
    if meta.is_dir() {
        return Err(io::Error::from_raw_os_error(libc::EISDIR)).with_context(|| format!("{}", input.display()));
    }
    Ok(meta)
}

/// An error reading the input, naming it: the gate's errors cannot tell
/// a failed read from a failed write.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {source}")]
struct InputError {
    name: String,
    source: io::Error,
}

struct NamedInput<R> {
    inner: R,
    name: String,
}

impl<R: Read> Read for NamedInput<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| io::Error::new(e.kind(), InputError { name: self.name.clone(), source: e }))
    }
}

/// A gate error, named after the file it concerns: the input's read
/// errors name the input already; other I/O errors are the output's; a
/// rejection or a refusal concerns the input.
fn gate_error(e: GateError, input: &str, output: &str) -> anyhow::Error {
    match &e {
        GateError::Io(io) if io.get_ref().is_some_and(|inner| inner.is::<InputError>()) => e.into(),
        GateError::Io(_) => anyhow::Error::new(e).context(output.to_string()),
        _ => anyhow::Error::new(e).context(input.to_string()),
    }
}

pub fn compress(args: &CompressArgs) -> Result<()> {
    let mut cfg = args.backend.gate_config()?;
    cfg.codec = match args.codec {
        CodecArg::Auto => CodecChoice::Auto,
        CodecArg::Columnar => CodecChoice::Columnar,
        CodecArg::Raw => CodecChoice::Raw,
    };
    cfg.chunk_lines = args.chunk_lines.max(1);
    cfg.keep_queryable = args.keep_queryable;
    args.layout.apply(&mut cfg);
    let verbosity = args.out.verbosity();
    let input_meta = if is_dash(&args.input) { None } else { Some(input_metadata(&args.input)?) };
    let output = match args.out.explicit(&args.output) {
        Some(o) => o,
        None if is_dash(&args.input) => PathBuf::from("-"),
        None => default_compressed_name(&args.input)?,
    };
    let dest = output::destination(&output, args.out.force, input_meta.as_ref())?;
    if matches!(dest, Destination::Stdout) && io::stdout().is_terminal() && !args.out.force {
        bail!("stdout is a terminal: refusing to write an object to it (redirect it, or use -f)");
    }
    let (input_name, output_name) = (shown(&args.input, "stdin"), shown(&output, "stdout"));
    let input: Box<dyn Read + Send> = match &input_meta {
        None => Box::new(io::stdin()),
        Some(_) => Box::new(File::open(&args.input).with_context(|| input_name.clone())?),
    };
    let input = NamedInput { inner: input, name: input_name.clone() };
    let bar = progress_bar(input_meta.as_ref().map(Metadata::len), verbosity > Verbosity::Quiet);
    let progress = |n: u64| bar.set_position(n);
    let started = Instant::now();
    let report = match &dest {
        Destination::Stdout => gate::compress_to_writer(input, &mut io::stdout().lock(), &cfg, &progress),
        Destination::Special(path) => {
            let mut out = output::open_special(path).with_context(|| output_name.clone())?;
            gate::compress_to_writer(input, &mut out, &cfg, &progress)
        }
        Destination::File { target } => gate::compress_to_path_with(input, target, &cfg, &progress, |f| finish_output(f, input_meta.as_ref())),
    }
    .map_err(|e| gate_error(e, &input_name, &output_name))?;
    bar.finish_and_clear();
    let to_stdout = matches!(dest, Destination::Stdout);
    if verbosity == Verbosity::Verbose || (verbosity == Verbosity::Normal && !to_stdout) {
        eprintln!("{}", compress_summary(&input_name, &output_name, &report));
    }
    if verbosity == Verbosity::Verbose {
        eprintln!("{}", speed(report.original_len, started));
        eprintln!("backend {}, level {} (columns {}), {} threads", cfg.backend.name(), cfg.level, cfg.column_level, cfg.threads);
    }
    Ok(())
}

/// `data.csv` -> `data.csv.at1`; an input named `*.at1` is refused, as zstd
/// refuses `*.zst` (it is most likely compressed already).
fn default_compressed_name(input: &Path) -> Result<PathBuf> {
    if input.as_os_str().as_encoded_bytes().ends_with(OBJECT_SUFFIX.as_bytes()) {
        bail!("{} already ends in {OBJECT_SUFFIX}: give an output name, or -c for stdout", input.display());
    }
    let mut name = input.as_os_str().to_os_string();
    name.push(OBJECT_SUFFIX);
    Ok(PathBuf::from(name))
}

/// `data.csv.at1` -> `data.csv`; any other name is refused, as zstd refuses
/// an unknown suffix.
fn default_decompressed_name(input: &Path) -> Result<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let stem = input.as_os_str().as_bytes().strip_suffix(OBJECT_SUFFIX.as_bytes()).filter(|s| !s.is_empty() && !s.ends_with(b"/"));
    match stem {
        Some(stem) => Ok(PathBuf::from(std::ffi::OsStr::from_bytes(stem))),
        None => bail!("{}: not named *{OBJECT_SUFFIX}, so there is no default output name: give one, or -c for stdout", input.display()),
    }
}

/// The last step before a new output file is renamed into place: the
/// input's mode and times, made durable.
fn finish_output(file: &File, input: Option<&Metadata>) -> io::Result<()> {
    match input {
        Some(meta) if meta.is_file() => {
            output::copy_input_metadata(file, meta)?;
            file.sync_all()
        }
        _ => Ok(()),
    }
}

fn compress_summary(input: &str, output: &str, r: &CommitReport) -> String {
    format!(
        "{input} -> {output}: {} -> {} bytes ({:.2}x), {} blocks, {} row groups ({} raw), verified",
        r.original_len,
        r.stored_len,
        ratio(r.original_len, r.stored_len),
        r.blocks,
        r.row_groups,
        r.raw_row_groups
    )
}

fn speed(bytes: u64, started: Instant) -> String {
    let secs = started.elapsed().as_secs_f64();
    format!("{secs:.2} s, {:.1} MB/s", bytes as f64 / 1e6 / secs.max(1e-9))
}

/// Why a decompression failed, kept apart from the errors of the atomic
/// write around it (which concern the output).
enum Failed {
    /// Already named.
    Named(anyhow::Error),
    Output(io::Error),
}

impl From<io::Error> for Failed {
    fn from(e: io::Error) -> Self {
        Failed::Output(e)
    }
}

pub fn decompress(args: &DecompressArgs) -> Result<()> {
    let verbosity = args.out.verbosity();
    let input_meta = if is_dash(&args.input) { None } else { Some(input_metadata(&args.input)?) };
    let output = match args.out.explicit(&args.output) {
        Some(o) => o,
        None if is_dash(&args.input) => PathBuf::from("-"),
        None => default_decompressed_name(&args.input)?,
    };
    let dest = output::destination(&output, args.out.force, input_meta.as_ref())?;
    let object = open_object(&args.input)?;
    let (input_name, output_name) = (shown(&args.input, "stdin"), shown(&output, "stdout"));
    let original_len = object.original_len();
    let reader = Reader::new(object, None);
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |t| t.get()).min(8)).max(1);
    let bar = progress_bar(Some(original_len), verbosity > Verbosity::Quiet);
    let mut done = 0u64;
    let started = Instant::now();
    let mut extract = |out: &mut dyn Write| -> Result<(), Failed> {
        let mut out = BufWriter::with_capacity(1 << 20, out);
        let progress = |n: u64| {
            done += n;
            bar.set_position(done);
        };
        match reader.extract_with_threads(&mut out, threads, progress) {
            Ok(_) => Ok(out.flush()?),
            // The object is mapped: its reads do not fail with I/O errors,
            // so these are the output's.
            Err(ReadError::Io(e)) => Err(Failed::Output(e)),
            Err(e) => Err(Failed::Named(anyhow::Error::new(e).context(input_name.clone()))),
        }
    };
    let written = match &dest {
        Destination::Stdout => extract(&mut io::stdout().lock()),
        Destination::Special(path) => output::open_special(path).map_err(Failed::Output).and_then(|mut out| extract(&mut out)),
        Destination::File { target } => gate::atomic_write_with(target, |file: &mut File| {
            extract(file)?;
            Ok(finish_output(file, input_meta.as_ref())?)
        }),
    };
    match written {
        Ok(()) => {}
        Err(Failed::Named(e)) => return Err(e),
        Err(Failed::Output(e)) => return Err(anyhow::Error::new(e).context(output_name)),
    }
    bar.finish_and_clear();
    let to_stdout = matches!(dest, Destination::Stdout);
    if verbosity == Verbosity::Verbose || (verbosity == Verbosity::Normal && !to_stdout) {
        eprintln!("{input_name} -> {output_name}: {original_len} bytes, SHA-256 verified");
    }
    if verbosity == Verbosity::Verbose {
        eprintln!("{}, {threads} decoder threads", speed(original_len, started));
    }
    Ok(())
}

/// `START-END` (END exclusive, may be empty for "to the end") over an
/// original of `len` bytes.
fn parse_range(spec: &str, len: u64) -> Result<(u64, u64)> {
    let (a, b) = spec.split_once('-').context("a range is START-END or START-")?;
    let start: u64 = a.trim().parse().with_context(|| format!("range start {:?} is not a number", a.trim()))?;
    let end: u64 = if b.trim().is_empty() { len } else { b.trim().parse().with_context(|| format!("range end {:?} is not a number", b.trim()))? };
    if start > len {
        bail!("range start {start} is past the end of the original ({len} bytes)");
    }
    if end < start {
        bail!("range end {end} is before its start {start}");
    }
    Ok((start, end.min(len)))
}

pub fn cat(path: &Path, range: Option<&str>) -> Result<()> {
    let object = open_object(path)?;
    let len = object.original_len();
    let (start, end) = match range {
        Some(r) => parse_range(r, len)?,
        None => (0, len),
    };
    let reader = Reader::new(object, None);
    let mut out = BufWriter::new(io::stdout().lock());
    let mut cost = AccessCost::default();
    let mut pos = start;
    while pos < end {
        let n = ((end - pos) as usize).min(1 << 20);
        let bytes = reader.read_at(pos, n, &mut cost).with_context(|| format!("{}", path.display()))?;
        if bytes.is_empty() {
            break;
        }
        out.write_all(&bytes).context("stdout")?;
        pos += bytes.len() as u64;
    }
    out.flush().context("stdout")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_add_and_strip_the_suffix() {
        assert_eq!(default_compressed_name(Path::new("d/data.csv")).unwrap(), Path::new("d/data.csv.at1"));
        assert!(default_compressed_name(Path::new("data.csv.at1")).is_err());
        assert_eq!(default_decompressed_name(Path::new("d/data.csv.at1")).unwrap(), Path::new("d/data.csv"));
        assert!(default_decompressed_name(Path::new("data.csv")).is_err());
        assert!(default_decompressed_name(Path::new(".at1")).is_err());
        assert!(default_decompressed_name(Path::new("d/.at1")).is_err());
    }

    #[test]
    fn ranges_past_the_end_say_so() {
        assert_eq!(parse_range("10-", 100).unwrap(), (10, 100));
        assert_eq!(parse_range("10-1000", 100).unwrap(), (10, 100));
        assert_eq!(parse_range("100-", 100).unwrap(), (100, 100));
        let err = parse_range("99999999-", 2294215).unwrap_err().to_string();
        assert_eq!(err, "range start 99999999 is past the end of the original (2294215 bytes)");
        assert!(parse_range("20-10", 100).unwrap_err().to_string().contains("before its start"));
    }
}
