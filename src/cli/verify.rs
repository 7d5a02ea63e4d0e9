//! `at1 verify`: objects, and every object of a store.
//!
//! A directory is walked as the mount would show it: the object of each
//! managed file (`.at1/objects/<id>.at1`, reported under the file's name,
//! once however many hard links it has), each `.at1` object dropped into the
//! tree (under its logical name), and objects no file names any more
//! (reported under their own path).

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};

use at1::reader::{self, Object, ReadError};
use at1::store::{self, RegularKind, OBJECT_SUFFIX, WORK_DIR};

pub const AFTER_HELP: &str = "\
A PATH that is a directory is a store: every object in it is checked, the
objects of its files (STORE/.at1/objects) and .at1 objects dropped into its
tree, each reported under the name the mount shows. An at1fs mount point
stands for its store. One line per object on stdout: NAME: OK, or NAME:
FAILED: why.

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
            Ok(m) if m.is_dir() => match store_targets(path) {
                Ok((targets, walk_errors)) => {
                    if targets.is_empty() && walk_errors.is_empty() && !is_store(path) {
                        tally.errors.push(anyhow!("{}: not a store, and holds no .at1 objects", path.display()));
                    }
                    tally.errors.extend(walk_errors);
                    for t in targets {
                        check(&t, args.quiet, &mut tally)?;
                    }
                }
                Err(e) => tally.errors.push(e),
            },
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

fn is_store(dir: &Path) -> bool {
    dir.join(WORK_DIR).join("VERSION").is_file()
}

/// Every object of the store (or mount point) `given`, and the errors met
/// walking it.
fn store_targets(given: &Path) -> Result<(Vec<Target>, Vec<anyhow::Error>)> {
    let root = super::mount::store_of_mount(given).unwrap_or_else(|| given.to_path_buf());
    let root = fs::canonicalize(&root).with_context(|| format!("{}", root.display()))?;
    let mut walk = Walk { root: root.clone(), given: given.to_path_buf(), targets: Vec::new(), errors: Vec::new(), ids: HashSet::new() };
    walk.tree();
    walk.unnamed_objects();
    Ok((walk.targets, walk.errors))
}

struct Walk {
    root: PathBuf,
    /// The path the user gave (names are shown under it).
    given: PathBuf,
    targets: Vec<Target>,
    errors: Vec<anyhow::Error>,
    /// Inode ids whose object is listed already (hard links share one).
    ids: HashSet<String>,
}

impl Walk {
    /// Walks the tree without following symlinks, depth first, with an
    /// explicit stack (no recursion depth to bound).
    fn tree(&mut self) {
        let mut dirs = vec![PathBuf::new()];
        while let Some(rel) = dirs.pop() {
            let dir = self.root.join(&rel);
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) => {
                    self.errors.push(anyhow::Error::new(e).context(self.shown(&rel)));
                    continue;
                }
            };
            let mut names: Vec<_> = entries.filter_map(|e| e.map_err(|e| self.errors.push(anyhow::Error::new(e).context(self.shown(&rel)))).ok()).collect();
            names.sort_by_key(|e| e.file_name());
            let mut subdirs = Vec::new();
            for entry in names {
                let name = entry.file_name();
                if rel.as_os_str().is_empty() && name == WORK_DIR {
                    continue;
                }
                match entry.file_type() {
                    Ok(t) if t.is_dir() => subdirs.push(rel.join(&name)),
                    Ok(t) if t.is_file() => self.file(&dir, &rel, &name),
                    Ok(_) => {}
                    Err(e) => self.errors.push(anyhow::Error::new(e).context(self.shown(&rel.join(&name)))),
                }
            }
            // Popped in name order.
            dirs.extend(subdirs.into_iter().rev());
        }
        // Reported in name order (a file of a hard-linked object is the
        // first of its names met, in the same order).
        self.targets.sort_by(|a, b| a.name.cmp(&b.name));
    }

    fn file(&mut self, dir: &Path, rel: &Path, name: &std::ffi::OsStr) {
        let path = dir.join(name);
        match store::classify(&path) {
            Ok(RegularKind::Managed(id)) => {
                let object = store::object_path_in(&self.root, &id);
                // An empty file has no object: nothing to check.
                if self.ids.insert(id.as_str().to_string()) && object.exists() {
                    self.targets.push(Target { name: self.shown(&rel.join(name)), path: object, listed: true });
                }
            }
            Ok(RegularKind::Bare) => {
                let logical = store::logical_name(dir, name);
                self.targets.push(Target { name: self.shown(&rel.join(logical)), path, listed: true });
            }
            Ok(RegularKind::Plain) => {}
            Err(e) => self.errors.push(anyhow::Error::new(e).context(self.shown(&rel.join(name)))),
        }
    }

    /// Objects in `.at1/objects` that no file names (left for recovery to
    /// collect): checked too, under their own path.
    fn unnamed_objects(&mut self) {
        let objects = self.root.join(WORK_DIR).join("objects");
        let Ok(entries) = fs::read_dir(&objects) else { return };
        let mut unnamed = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(OBJECT_SUFFIX) else { continue };
            if !self.ids.contains(id) && !name.starts_with(at1::gate::TEMP_PREFIX) {
                let rel = Path::new(WORK_DIR).join("objects").join(&name);
                unnamed.push(Target { name: format!("{} (no file names it)", self.shown(&rel)), path: entry.path(), listed: true });
            }
        }
        unnamed.sort_by(|a, b| a.name.cmp(&b.name));
        self.targets.extend(unnamed);
    }

    fn shown(&self, rel: &Path) -> String {
        self.given.join(rel).display().to_string()
    }
}
