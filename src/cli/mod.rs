//! The `at1` command line: argument parsing (clap) and printing. No logic of
//! its own — every command calls the gate, the reader, the store or the
//! query engine.

mod admin;
pub mod args;
mod files;
mod inspect;
mod mount;
mod output;
mod recall;
mod sql;
mod store;
mod verify;

use std::io::{self, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use at1::format::Backend;
use at1::gate::GateConfig;
use at1::reader::Object;

pub use admin::DamageFound;
pub use verify::VerifyFailed;

/// The exit codes, shown under every `--help`.
const EXIT_STATUS: &str = "\
Exit status:
  0  success
  1  error: I/O, a missing or unreadable file, a file that is not an .at1 object
  2  usage error: unknown or bad arguments and options
  3  verification failed: the gate rejected an encoding (nothing was written),
     or verify found a bad object
A closed output pipe (at1 cat x.at1 | head) ends the command quietly, by
SIGPIPE, as it ends cat and zstd.";

#[derive(Parser, Debug)]
#[command(
    name = "at1",
    version,
    about = "Verified, queryable, compressed .at1 objects and the at1fs filesystem",
    after_help = EXIT_STATUS
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Compress a file into a verified .at1 object (the input is kept).
    #[command(after_help = files::COMPRESS_AFTER_HELP)]
    Compress(files::CompressArgs),
    /// Restore the exact original bytes of an object (the input is kept).
    #[command(after_help = files::DECOMPRESS_AFTER_HELP)]
    Decompress(files::DecompressArgs),
    /// Print an object's original bytes, or a byte range of them.
    #[command(after_help = EXIT_STATUS)]
    Cat {
        /// The .at1 object to read ("-" reads it from stdin).
        file: PathBuf,
        /// Print only bytes START-END of the original (END exclusive;
        /// "START-" reads to the end; an END past the end stops there).
        #[arg(long, value_name = "START-END")]
        range: Option<String>,
    },
    /// Check objects: every block checksum, every byte decoded, the SHA-256.
    #[command(after_help = verify::AFTER_HELP)]
    Verify(verify::VerifyArgs),
    /// Print a store's journal: every committed change, hash-chained.
    #[command(after_help = admin::LOG_AFTER_HELP)]
    Log(admin::LogArgs),
    /// Check a store's namespace, contents, objects and journal; --repair
    /// fixes what can be proved (the store must not be mounted).
    #[command(after_help = admin::FSCK_AFTER_HELP)]
    Fsck(admin::FsckArgs),
    /// Show codec, sizes, ratio, blocks, row groups, columns and zone maps.
    #[command(after_help = EXIT_STATUS)]
    Inspect {
        /// The .at1 object to describe ("-" reads it from stdin).
        file: PathBuf,
        /// Print JSON (the same facts, for programs) instead of text.
        #[arg(long)]
        json: bool,
        /// Also list every row group with its zone maps (text output).
        #[arg(long)]
        row_groups: bool,
    },
    /// Mount a store: every file kept as a verified .at1 object.
    #[command(after_help = mount::AFTER_HELP)]
    Mount(mount::MountArgs),
    /// Unmount an at1fs mount and wait for its daemon to finish.
    #[command(after_help = EXIT_STATUS)]
    Unmount {
        /// The mount point of an at1fs mount.
        mountpoint: PathBuf,
        /// Seconds to wait for the daemon to exit after the unmount.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Run a SQL query on a store, a mounted directory, or one .at1/CSV file.
    #[command(after_help = EXIT_STATUS)]
    Sql {
        /// A store directory, an at1fs mount point, or a single .at1 or CSV
        /// file.
        root: PathBuf,
        /// The query: SELECT ... FROM PATH, PATH relative to ROOT (a
        /// directory), or the file's own name when ROOT is a file.
        query: String,
        /// Output format when the query has no FORMAT clause.
        #[arg(long, value_enum, default_value_t = sql::FormatArg::Json)]
        format: sql::FormatArg,
    },
    /// Bring a verified .at1 object into a store as a file, not re-encoded
    /// (the store must not be mounted).
    #[command(after_help = EXIT_STATUS)]
    Import {
        /// The store (laid out if it is a new empty directory).
        store: PathBuf,
        /// The .at1 object (made by `at1 compress`); it is kept.
        object: PathBuf,
        /// The file's path in the store, relative to its root; its
        /// directory must exist.
        path: String,
        /// The file's permission bits, in octal.
        #[arg(long, default_value = "644", value_name = "OCTAL")]
        mode: String,
    },
    /// Convert a store made by an earlier at1 (layout 1) in place, proving
    /// every file identical first (the store must not be mounted).
    #[command(after_help = store::UPGRADE_AFTER_HELP)]
    Upgrade {
        /// The store directory (the source given to `at1 mount`).
        store: PathBuf,
    },
    /// Bytes at rest and bytes materialized per access shape, beside
    /// whole-file xz.
    #[command(after_help = EXIT_STATUS)]
    RecallCost {
        /// The .at1 object to measure.
        file: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// xz preset of the whole-file comparison (6 is `xz`'s default).
        #[arg(long, default_value_t = 6)]
        xz_level: u32,
    },
}

/// A bad combination of arguments or option values that clap cannot see
/// (exit code 2, as clap's own).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Layout knobs shared by `compress` and `mount`.
#[derive(clap::Args, Debug, Clone)]
pub struct LayoutArgs {
    /// Original bytes per raw frame (the unit a read decodes).
    #[arg(long, default_value_t = 128 << 10, value_name = "BYTES")]
    pub frame_size: usize,
    /// Rows per row group at most.
    #[arg(long, default_value_t = 65_536, value_name = "ROWS")]
    pub row_group_rows: usize,
    /// Original bytes per row group at most.
    #[arg(long, default_value_t = 128 << 10, value_name = "BYTES")]
    pub row_group_bytes: usize,
    /// Encoder threads (default: all cores).
    #[arg(short = 'T', long, value_name = "N")]
    pub threads: Option<usize>,
    /// Do not keep per-file dictionaries (the zstd dictionary of raw frames,
    /// the string dictionaries of table columns): every block then decodes
    /// on its own.
    #[arg(long)]
    pub no_dictionary: bool,
}

/// The backend and level of every block, shared by `compress` and `mount`.
#[derive(clap::Args, Debug, Clone)]
pub struct BackendArgs {
    /// The compressor of every block: zstd (fast to read) or xz (smaller,
    /// slower to read and write).
    #[arg(long, value_enum, default_value_t = BackendArg::Zstd)]
    pub backend: BackendArg,
    /// Backend level for every block: zstd 1-22, xz 0-9 (10 = xz -9e); also
    /// written -N, as in zstd and xz (-19, -3). Default: zstd 19 for raw
    /// frames and 5 for columns; xz 9.
    #[arg(long, value_name = "N")]
    pub level: Option<i32>,
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

impl BackendArgs {
    /// The gate's configuration for these, or a usage error for a level
    /// the backend does not have.
    pub fn gate_config(&self) -> Result<GateConfig> {
        let cfg = GateConfig::default().with_backend(self.backend.backend());
        let Some(level) = self.level else { return Ok(cfg) };
        let range = match self.backend {
            BackendArg::Zstd => 1..=22,
            BackendArg::Xz => 0..=10,
        };
        if !range.contains(&level) {
            let name = self.backend.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default();
            return Err(UsageError(format!("level {level} is not a {name} level ({}-{})", range.start(), range.end())).into());
        }
        Ok(cfg.with_level(level))
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
        Command::Compress(args) => files::compress(&args),
        Command::Decompress(args) => files::decompress(&args),
        Command::Cat { file, range } => files::cat(&file, range.as_deref()),
        Command::Verify(args) => verify::run(&args),
        Command::Log(args) => admin::log(&args),
        Command::Fsck(args) => admin::fsck(&args),
        Command::Inspect { file, json, row_groups } => inspect::run(&open_object(&file)?, json, row_groups).with_context(|| format!("{}", file.display())),
        Command::RecallCost { file, json, xz_level } => recall::run(&file, json, xz_level),
        Command::Mount(args) => mount::mount(&args),
        Command::Sql { root, query, format } => sql::run(&root, &query, format),
        Command::Import { store, object, path, mode } => {
            let mode = u32::from_str_radix(&mode, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| UsageError(format!("--mode {mode}: not an octal mode (0 to 7777)")))?;
            store::import(&store, &object, &path, mode)
        }
        Command::Upgrade { store } => store::upgrade(&store),
        Command::Unmount { mountpoint, timeout } => mount::unmount(&mountpoint, std::time::Duration::from_secs(timeout)),
    }
}

fn is_dash(p: &Path) -> bool {
    p.as_os_str() == "-"
}

/// A progress bar on stderr when it is a terminal and `shown`; hidden
/// otherwise.
fn progress_bar(total: Option<u64>, shown: bool) -> ProgressBar {
    if !shown || !io::stderr().is_terminal() {
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

pub fn ratio(original: u64, stored: u64) -> f64 {
    if stored == 0 {
        0.0
    } else {
        original as f64 / stored as f64
    }
}

/// Opens an object from a path, or from stdin spooled to a temp file. The
/// error names the path.
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
        check_not_a_directory(path)?;
        Object::open(path)
    };
    Ok(Arc::new(object.with_context(|| format!("{}", path.display()))?))
}

/// A directory opens like a file but cannot be mapped ("No such device"):
/// say what it is instead.
fn check_not_a_directory(path: &Path) -> Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(io::Error::from_raw_os_error(libc::EISDIR)).with_context(|| format!("{}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// clap checks its definitions (a name used twice, say) only in debug
    /// builds; this runs the check in every build.
    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_argument_and_option_is_described() {
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            assert!(sub.get_about().is_some(), "{} has no description", sub.get_name());
            for arg in sub.get_arguments() {
                if arg.is_hide_set() || ["help", "version"].contains(&arg.get_id().as_str()) {
                    continue;
                }
                assert!(arg.get_help().is_some(), "{} {} has no description", sub.get_name(), arg.get_id());
            }
        }
    }
}
