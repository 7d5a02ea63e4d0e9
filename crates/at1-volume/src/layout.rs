//! The store directory (layout 2):
//!
//! ```text
//! STORE/                 mode 0700: only the daemon reads what is here
//!   VERSION              "at1fs store layout 2"
//!   lock                 held (flock) by the one process that may change the store
//!   meta.db (+ -wal, -shm)   the metadata engine (SQLite)
//!   objects/ab/cdef….at1     the object store: immutable objects by id
//!   tmp/                 objects being written (removed at open)
//!   staging/             write staging of open files (unnamed files)
//!   quarantine/          objects set aside by `at1 fsck --repair`
//!   daemon.pid, mount.log    the mount daemon's
//! ```
//!
//! No name in here is chosen by a user: the host filesystem sees only ids,
//! so no race on host paths can be steered from the mount.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{VResult, VolumeError};

pub const VERSION_FILE: &str = "VERSION";
pub const LAYOUT: &str = "at1fs store layout 2\n";
/// Where a layout-1 store (stubs in the tree) kept its version.
const LAYOUT1_VERSION: &str = ".at1/VERSION";

/// An opened store directory; the lock is held while this lives (when
/// opened for writing).
#[derive(Debug)]
pub struct StoreDir {
    pub root: PathBuf,
    /// The held lock, if opened for writing.
    _lock: Option<File>,
}

impl StoreDir {
    pub fn meta_db(&self) -> PathBuf {
        self.root.join("meta.db")
    }

    pub fn staging(&self) -> PathBuf {
        self.root.join("staging")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.root.join("daemon.pid")
    }

    pub fn log_file(&self) -> PathBuf {
        self.root.join("mount.log")
    }

    /// Whether this process holds the store's lock.
    pub fn is_locked(&self) -> bool {
        self._lock.is_some()
    }
}

/// Whether `root` is a layout-1 store (made by at1 before the volume
/// engine).
pub fn is_layout1(root: &Path) -> bool {
    fs::read_to_string(root.join(LAYOUT1_VERSION)).is_ok_and(|v| v.starts_with("at1fs store layout 1"))
}

fn store_error(root: &Path, what: impl std::fmt::Display) -> VolumeError {
    VolumeError::Store(format!("store {}: {what}", root.display()))
}

/// Opens the store at `root`: lays it out if the directory is new and
/// empty, refuses an old layout or a directory that is not a store, and
/// (with `lock`) takes the store's lock so no second process changes it.
pub fn open(root: &Path, lock: bool) -> VResult<StoreDir> {
    let meta = fs::metadata(root).map_err(|_| store_error(root, "does not exist or is not a directory"))?;
    if !meta.is_dir() {
        return Err(store_error(root, "is not a directory"));
    }
    let root = fs::canonicalize(root)?;
    if is_layout1(&root) {
        if fs::read_to_string(root.join(VERSION_FILE)).is_ok_and(|v| v == LAYOUT) {
            return Err(VolumeError::Store(format!("store {0}: its upgrade to layout 2 did not finish: run `at1 upgrade {0}` to finish it", root.display())));
        }
        return Err(VolumeError::Store(format!(
            "store {0} was made by an earlier at1 (layout 1): run `at1 upgrade {0}` to convert it in place",
            root.display()
        )));
    }
    match fs::read_to_string(root.join(VERSION_FILE)) {
        Ok(v) if v == LAYOUT => {}
        Ok(v) => return Err(store_error(&root, format_args!("unknown layout {:?}", v.trim()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !lock {
                return Err(store_error(&root, "is not an at1fs store"));
            }
            lay_out(&root)?;
        }
        Err(e) => return Err(store_error(&root, e)),
    }
    let lock = if lock { Some(take_lock(&root)?) } else { None };
    Ok(StoreDir { root, _lock: lock })
}

/// Makes a new store in the empty directory `root`.
fn lay_out(root: &Path) -> VResult<()> {
    let mut entries = fs::read_dir(root)?.flatten().filter(|e| e.file_name() != "lost+found");
    if entries.next().is_some() {
        return Err(store_error(
            root,
            "is not an at1fs store and is not empty: give an empty directory (or an existing store); `at1 import` brings objects in",
        ));
    }
    if tempfile::tempfile_in(root).is_err() {
        return Err(store_error(root, "is not writable"));
    }
    // The store holds every user's data: only the daemon reads it.
    fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
    for dir in ["objects", "tmp", "staging", "quarantine"] {
        match fs::create_dir(root.join(dir)) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e.into()),
            _ => {}
        }
    }
    // The version last: a store half laid out by a crash is still empty.
    let version = root.join(VERSION_FILE);
    let tmp = root.join("VERSION.tmp");
    fs::write(&tmp, LAYOUT)?;
    File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, &version)?;
    File::open(root)?.sync_all()?;
    Ok(())
}

fn take_lock(root: &Path) -> VResult<File> {
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(root.join("lock"))?;
    // SAFETY: a valid descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut pid = String::new();
            let _ = File::open(root.join("daemon.pid")).and_then(|mut f| f.read_to_string(&mut pid));
            let by = match pid.trim() {
                "" => String::new(),
                p => format!(" (pid {p})"),
            };
            return Err(store_error(root, format_args!("is in use by another at1 process{by}; one process serves a store at a time")));
        }
        return Err(e.into());
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_store_is_laid_out_and_locked_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), true).unwrap();
        assert_eq!(fs::read_to_string(dir.path().join(VERSION_FILE)).unwrap(), LAYOUT);
        let second = open(dir.path(), true).unwrap_err().to_string();
        assert!(second.contains("in use by another at1 process"), "{second}");
        drop(store);
        open(dir.path(), true).unwrap();
        open(dir.path(), false).unwrap();
    }

    #[test]
    fn a_directory_with_files_or_an_old_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let e = open(dir.path(), true).unwrap_err().to_string();
        assert!(e.contains("is not an at1fs store and is not empty"), "{e}");
        let old = tempfile::tempdir().unwrap();
        fs::create_dir(old.path().join(".at1")).unwrap();
        fs::write(old.path().join(".at1/VERSION"), "at1fs store layout 1\n").unwrap();
        let e = open(old.path(), true).unwrap_err().to_string();
        assert!(e.contains("at1 upgrade"), "{e}");
    }
}
