//! `at1 verify`: objects, a store, or every object in a directory.
//!
//! A store (or an at1fs mount point, standing for its store) is checked
//! through its volume: the journal's hash chain from genesis, and every
//! file's content — its object present, decoding block by block to the
//! recorded SHA-256 — reported under the file's path. Any other directory
//! is walked for `.at1` files.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};

use at1::reader::{self, Object, ReadError};
use at1::volume::{check, layout, Volume};

use super::files::OBJECT_SUFFIX;

pub const AFTER_HELP: &str = "\
A PATH that is a store (or an at1fs mount point) is checked whole: the
journal's hash chain, and every file's content (present, decoding to its
recorded SHA-256); each damaged file is reported under its path. Any other
directory is walked for .at1 files. One line per object on stdout: NAME:
OK, or NAME: FAILED: why.

Exit status:
  0  every object is good
  1  error: a path that is missing or cannot be read (and no object failed)
  2  usage error: unknown or bad arguments and options
  3  verification failed: at least one object is bad";

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Objects to check, or directories (a store, an at1fs mount point, or
    /// any directory holding .at1 objects) whose every object is checked.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Print only the objects that fail.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Raised by `verify` so that `main` exits with the verification code.
#[derive(Debug, thiserror::Error)]
#[error("{0} of {1} objects failed verification")]
pub struct VerifyFailed(pub usize, pub usize);

/// One object to check, under the name it is reported by.
struct Target {
    name: String,
    path: PathBuf,
    /// Found by walking a live store: it may be replaced or removed while
    /// the walk goes on, which is not an error.
    listed: bool,
}

#[derive(Default)]
struct Tally {
    checked: usize,
    failed: usize,
    errors: Vec<anyhow::Error>,
}

pub fn run(args: &VerifyArgs) -> Result<()> {
    let mut tally = Tally::default();
    for path in &args.paths {
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                let root = super::mount::store_of_mount(path).unwrap_or_else(|| path.to_path_buf());
                if is_store(&root) {
                    verify_store(path, &root, args.quiet, &mut tally)?;
                } else if layout::is_layout1(&root) {
                    tally.errors.push(anyhow!("{}: a store made by an earlier at1 (layout 1): run `at1 upgrade {}` first", path.display(), root.display()));
                } else {
                    let (targets, walk_errors) = directory_targets(path);
                    if targets.is_empty() && walk_errors.is_empty() {
                        tally.errors.push(anyhow!("{}: not a store, and holds no .at1 objects", path.display()));
                    }
                    tally.errors.extend(walk_errors);
                    for t in targets {
                        check(&t, args.quiet, &mut tally)?;
                    }
                }
            }
            _ => check(&Target { name: path.display().to_string(), path: path.clone(), listed: false }, args.quiet, &mut tally)?,
        }
    }
    finish(tally)
}

/// The outcome: verification failures first (exit 3), then errors (exit
/// 1). A single error is returned as it is, so that it is one line.
fn finish(mut tally: Tally) -> Result<()> {
    if tally.failed == 0 && tally.errors.len() == 1 && tally.checked <= 1 {
        return Err(tally.errors.remove(0));
    }
    let errors = tally.errors.len();
    for e in tally.errors {
        eprintln!("at1: {}", crate::one_line(&e));
    }
    if tally.failed > 0 {
        return Err(VerifyFailed(tally.failed, tally.checked).into());
    }
    if errors > 0 {
        return Err(anyhow!("{errors} paths could not be checked"));
    }
    Ok(())
}

/// Checks one object: prints `NAME: OK` or `NAME: FAILED: why`; a path
/// that cannot be read is an error, not a failure. Fails only when stdout
/// does.
fn check(target: &Target, quiet: bool, tally: &mut Tally) -> Result<()> {
    let opened = match super::check_not_a_directory(&target.path) {
        Ok(()) => Object::open(&target.path),
        Err(e) => {
            tally.errors.push(e);
            return Ok(());
        }
    };
    let outcome = match opened {
        // Removed from a live store since it was listed.
        Err(ReadError::Io(e)) if target.listed && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(ReadError::Io(e)) => {
            tally.errors.push(anyhow::Error::new(e).context(target.name.clone()));
            return Ok(());
        }
        Ok(object) => reader::verify(Arc::new(object)).map(|_| ()),
        Err(e) => Err(e),
    };
    tally.checked += 1;
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(()) if !quiet => writeln!(out, "{}: OK", target.name).context("stdout")?,
        Ok(()) => {}
        Err(e) => {
            tally.failed += 1;
            writeln!(out, "{}: FAILED: {e}", target.name).context("stdout")?;
        }
    }
    Ok(())
}

/// Whether `dir` is a store (made by this at1: layout 2).
fn is_store(dir: &Path) -> bool {
    dir.join(layout::VERSION_FILE).is_file()
}

/// Verifies the store at `root` (or behind the mount point `given`): the
/// journal's chain and every file's content. One line per damaged file,
/// one for the journal, one summary.
fn verify_store(given: &Path, root: &Path, quiet: bool, tally: &mut Tally) -> Result<()> {
    let volume = match Volume::open_read_only(root) {
        Ok(v) => v,
        Err(e) => {
            tally.errors.push(anyhow!("{}: {e}", given.display()));
            return Ok(());
        }
    };
    let mut out = std::io::stdout().lock();
    let shown = given.display().to_string();
    let report = check::verify(&volume, |p| {
        let _ = writeln!(std::io::stdout().lock(), "{}{}: FAILED: object {}: {}", shown.trim_end_matches('/'), p.path, p.object, p.what);
    })?;
    tally.checked += report.contents as usize + 1;
    tally.failed += report.damaged.len();
    for problem in &report.chain {
        writeln!(out, "{}: FAILED: {problem}", given.display()).context("stdout")?;
    }
    if !report.chain.is_empty() {
        tally.failed += 1;
    }
    if !quiet && report.ok() {
        writeln!(out, "{}: OK ({} files' contents, {} journal events)", given.display(), report.contents, report.events).context("stdout")?;
    }
    Ok(())
}

/// Every `.at1` file under a directory that is not a store, walked without
/// following symlinks (an explicit stack: no recursion depth to bound).
fn directory_targets(root: &Path) -> (Vec<Target>, Vec<anyhow::Error>) {
    let (mut targets, mut errors) = (Vec::new(), Vec::new());
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                errors.push(anyhow::Error::new(e).context(dir.display().to_string()));
                continue;
            }
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for entry in entries {
            match entry.file_type() {
                Ok(t) if t.is_dir() => subdirs.push(entry.path()),
                Ok(t) if t.is_file() && entry.file_name().as_encoded_bytes().ends_with(OBJECT_SUFFIX.as_bytes()) => {
                    targets.push(Target { name: entry.path().display().to_string(), path: entry.path(), listed: true })
                }
                Ok(_) => {}
                Err(e) => errors.push(anyhow::Error::new(e).context(entry.path().display().to_string())),
            }
        }
        dirs.extend(subdirs.into_iter().rev());
    }
    targets.sort_by(|a, b| a.name.cmp(&b.name));
    (targets, errors)
}
