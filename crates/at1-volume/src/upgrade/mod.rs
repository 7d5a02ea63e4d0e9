//! `at1 upgrade STORE`: converts a layout-1 store (made by the release
//! before the volume engine: the store directory is the namespace, a
//! regular file is a stub naming its object; see [`old`]) into a layout-2
//! store in place, and proves every entry identical before it switches.
//!
//! The steps, and what a crash at any point leaves:
//!
//! 1. **Build** ([`build`]): a new volume is made in `STORE/.at1/upgrade/new`
//!    (inside the old work area, which the old mount never showed) from a
//!    walk of the old tree. Objects are hard-linked in, not copied, nor
//!    re-encoded.
//! 2. **Prove** ([`prove`]): the old tree is walked again and every entry
//!    compared with the new volume, contents read back whole. Any
//!    difference: the new volume is removed, the old store was never
//!    touched, and the command fails (exit 3) saying what differs. Then
//!    `STORE/.at1/upgrade/PROVEN` (with the summary) is written and synced.
//! 3. **Switch**: the old tree's top-level entries move into
//!    `.at1/upgrade/old` (then `OLD_OUT` is written), the new layout's
//!    entries move up into `STORE`, and its `VERSION` last: that rename is
//!    the switch.
//! 4. **Finish**: `STORE` becomes mode 0700, the old mount log is kept as
//!    `mount.log`, and `STORE/.at1` (the old tree, the old objects'
//!    other links) is removed, its `VERSION` last but one.
//!
//! A crash before `PROVEN` leaves the old store intact (a new mount
//! refuses it, naming `at1 upgrade`); rerunning **restarts**: the partial
//! new volume is discarded and built again. A crash after `PROVEN` leaves
//! a complete, proven new store (part of it perhaps still beside the old
//! tree); rerunning **resumes** the switch and the finish from where they
//! stopped, and a mount refuses the store until then. A crash while the
//! old tree is being removed leaves a working layout-2 store with
//! leftovers in `.at1`, which a rerun removes.
//!
//! ctime cannot be kept: no interface sets it. Everything else the old
//! mount showed is, and is compared.

mod build;
mod old;
mod prove;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FchmodatFlags, Mode};
use nix::unistd::UnlinkatFlags;
use serde_json::json;
use thiserror::Error;

use crate::layout::{self, LAYOUT, VERSION_FILE};
use crate::volume::{Volume, VolumeConfig};

/// The upgrade's own directory, in the old work area.
const WORK: &str = "upgrade";
/// Written (with the summary) once the new volume is proven identical.
const PROVEN: &str = "PROVEN";
/// Written once every top-level entry of the old tree is moved aside.
const OLD_OUT: &str = "OLD_OUT";

/// What an upgrade made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Regular files (inodes, not names).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Directories (not counting the root).
    pub dirs: u64,
    /// Names beyond the first of hard-linked files.
    pub hard_links: u64,
    pub symlinks: u64,
    /// Fifos, sockets and device nodes.
    pub specials: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} files ({} bytes), {} directories, {} hard links, {} symlinks, {} special files",
            self.files, self.bytes, self.dirs, self.hard_links, self.symlinks, self.specials
        )
    }
}

impl Summary {
    fn to_json(&self) -> String {
        json!({"files": self.files, "bytes": self.bytes, "dirs": self.dirs, "hard_links": self.hard_links, "symlinks": self.symlinks, "specials": self.specials})
            .to_string()
    }

    fn from_json(text: &str) -> Option<Summary> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
        Some(Summary {
            files: n("files")?,
            bytes: n("bytes")?,
            dirs: n("dirs")?,
            hard_links: n("hard_links")?,
            symlinks: n("symlinks")?,
            specials: n("specials")?,
        })
    }
}

/// What `upgrade` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Converted and proven identical.
    Upgraded(Summary),
    /// An upgrade interrupted after its proof was finished (its summary,
    /// if still on record).
    Resumed(Option<Summary>),
    /// The store is at layout 2 already: nothing was done.
    Current,
}

#[derive(Debug, Error)]
pub enum UpgradeError {
    /// Not a store this command knows.
    #[error("{0}")]
    NotAStore(String),
    /// Mounted, served, or being upgraded by another process.
    #[error("{0}")]
    InUse(String),
    /// An object of the old store does not verify (or the gate refused a
    /// file's raw bytes): nothing was changed.
    #[error("{0}")]
    Damaged(String),
    /// The new volume is not identical to the old tree: nothing was
    /// changed. `shown` lists the first differences.
    #[error("store {store}: the converted store differs from the old one in {count} place(s) (first: {}); {KEPT}", shown.first().map_or("", String::as_str))]
    NotIdentical { store: String, count: u64, shown: Vec<String> },
    #[error("{0}")]
    Failed(String),
}

/// What a failure before the proof leaves.
const KEPT: &str = "nothing was changed: the old store is as it was";

impl UpgradeError {
    /// A failure of verification (exit 3 on the command line).
    pub fn is_verification_failure(&self) -> bool {
        matches!(self, UpgradeError::Damaged(_) | UpgradeError::NotIdentical { .. })
    }

    /// The message with the store named and what it is left as.
    fn context(self, root: &Path, left: &str) -> UpgradeError {
        let say = |what: String| format!("store {}: {what}; {left}", root.display());
        match self {
            UpgradeError::Damaged(w) => UpgradeError::Damaged(say(w)),
            UpgradeError::Failed(w) => UpgradeError::Failed(say(w)),
            other => other,
        }
    }
}

impl From<io::Error> for UpgradeError {
    fn from(e: io::Error) -> Self {
        UpgradeError::Failed(e.to_string())
    }
}

impl From<crate::VolumeError> for UpgradeError {
    fn from(e: crate::VolumeError) -> Self {
        UpgradeError::Failed(e.to_string())
    }
}

/// Test-only crash points (feature `fault-injection`): with
/// `AT1_UPGRADE_CRASH_AT=POINT` or `POINT:N` in the environment, the
/// process aborts there (at the Nth time), as a crash would stop it.
/// Points: `build:N` (after N entries), `proven`, `old-out:N`, `new-in:N`,
/// `switched`, `cleanup`.
pub mod fault_injection {
    pub const ENV: &str = "AT1_UPGRADE_CRASH_AT";
}

pub(crate) fn crash_point(point: &str, n: u64) {
    if !cfg!(feature = "fault-injection") {
        return;
    }
    if let Ok(want) = std::env::var(fault_injection::ENV) {
        if want == point || want == format!("{point}:{n}") {
            eprintln!("at1: upgrade: crashing at {want} ({})", fault_injection::ENV);
            std::process::abort();
        }
    }
}

/// Where a store stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Layout 1, no proven upgrade under way: convert.
    Old,
    /// Layout 1 with a proven new volume: switch, then finish.
    Proven,
    /// Layout 2, with what is left of the old tree: finish.
    Switched,
    /// Layout 2: nothing to do.
    Current,
}

fn work_dir(root: &Path) -> PathBuf {
    root.join(old::WORK_DIR).join(WORK)
}

fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

fn state(root: &Path) -> Result<State, UpgradeError> {
    let work = work_dir(root);
    let version = fs::read_to_string(root.join(VERSION_FILE));
    let current = version.as_deref().is_ok_and(|v| v == LAYOUT);
    if layout::is_layout1(root) {
        if !exists(&work.join(PROVEN)) {
            return Ok(State::Old);
        }
        // The new VERSION has left `new/` for the root: switched. (A file
        // named VERSION in an old tree never counts: the old tree is moved
        // aside before anything moves up.)
        let switched = current && exists(&work.join(OLD_OUT)) && !exists(&work.join("new").join(VERSION_FILE));
        return Ok(if switched { State::Switched } else { State::Proven });
    }
    if current {
        return Ok(if exists(&root.join(old::WORK_DIR)) { State::Switched } else { State::Current });
    }
    match version {
        Ok(v) => Err(UpgradeError::NotAStore(format!("store {}: unknown layout {:?}", root.display(), v.trim()))),
        Err(_) => Err(UpgradeError::NotAStore(format!("{} is not an at1fs store (no layout 1 or 2 version file)", root.display()))),
    }
}

/// Upgrades the store at `root` (see the module's documentation).
pub fn upgrade(root: &Path) -> Result<Outcome, UpgradeError> {
    if !fs::metadata(root).is_ok_and(|m| m.is_dir()) {
        return Err(UpgradeError::NotAStore(format!("store {} does not exist or is not a directory", root.display())));
    }
    let root = fs::canonicalize(root)?;
    // Held to the end: one upgrade at a time.
    let _lock = lock_work_area(&root)?;
    match state(&root)? {
        State::Current => Ok(Outcome::Current),
        State::Switched => {
            let summary = recorded_summary(&root);
            finish(&root).map_err(|e| e.context(&root, RERUN))?;
            Ok(Outcome::Resumed(summary))
        }
        State::Proven => {
            check_not_in_use(&root)?;
            let summary = recorded_summary(&root);
            switch(&root).map_err(|e| e.context(&root, RERUN))?;
            finish(&root).map_err(|e| e.context(&root, RERUN))?;
            Ok(Outcome::Resumed(summary))
        }
        State::Old => {
            check_not_in_use(&root)?;
            let summary = convert(&root).map_err(|e| e.context(&root, KEPT))?;
            switch(&root).map_err(|e| e.context(&root, RERUN))?;
            finish(&root).map_err(|e| e.context(&root, RERUN))?;
            Ok(Outcome::Upgraded(summary))
        }
    }
}

/// What a failure after the proof leaves.
const RERUN: &str = "the converted store is complete and proven: run `at1 upgrade` on the store again to finish";

fn recorded_summary(root: &Path) -> Option<Summary> {
    Summary::from_json(&fs::read_to_string(work_dir(root).join(PROVEN)).ok()?)
}

/// Locks the old work area (if there is one) against a second upgrade.
fn lock_work_area(root: &Path) -> Result<Option<File>, UpgradeError> {
    let area = root.join(old::WORK_DIR);
    if !fs::symlink_metadata(&area).is_ok_and(|m| m.is_dir()) {
        return Ok(None);
    }
    let file = File::open(&area)?;
    // SAFETY: a valid descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(UpgradeError::InUse(format!("store {}: another at1 upgrade of it is running", root.display())));
        }
        return Err(e.into());
    }
    Ok(Some(file))
}

/// Refuses a store that a daemon serves: a live at1 process named by the
/// old layout's `daemon.pid`, or a mount whose source is the store.
fn check_not_in_use(root: &Path) -> Result<(), UpgradeError> {
    if let Some(point) = mount_of(root) {
        return Err(UpgradeError::InUse(format!("store {} is mounted at {}: unmount it first", root.display(), point)));
    }
    if let Some(pid) = live_daemon(&root.join(old::WORK_DIR).join("daemon.pid")) {
        return Err(UpgradeError::InUse(format!("store {} is in use by an at1 daemon (pid {pid}): unmount it first", root.display())));
    }
    Ok(())
}

/// The pid a pid file names, if that process lives and is an at1 (not a
/// later process that got a dead daemon's pid).
fn live_daemon(pid_file: &Path) -> Option<i32> {
    let pid: i32 = fs::read_to_string(pid_file).ok()?.trim().parse().ok().filter(|p| *p > 0)?;
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let zombie = stat.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z'));
    let comm = comm.trim();
    (!zombie && (comm == "at1" || comm.starts_with("at1fs") || comm.starts_with("mount.fuse.at1"))).then_some(pid)
}

/// The mount point of a mount served from `root`.
fn mount_of(root: &Path) -> Option<String> {
    mount_in(&fs::read_to_string("/proc/self/mountinfo").ok()?, root.as_os_str().as_bytes())
}

/// The mount point of a mount in mountinfo `text` served from the store
/// `root`: the source of a `fuse.at1fs` mount, or `at1fs:STORE` (the
/// source older daemons gave, whatever the type).
fn mount_in(text: &str, root: &[u8]) -> Option<String> {
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let dash = fields.iter().position(|f| *f == "-")?;
        let (fs_type, source) = (*fields.get(dash + 1)?, unescape(fields.get(dash + 2)?));
        let store = match source.strip_prefix(b"at1fs:") {
            Some(s) => s.to_vec(),
            None if fs_type == "fuse.at1fs" => source,
            None => return None,
        };
        let point = fields.get(4)?;
        (store == root).then(|| String::from_utf8_lossy(&unescape(point)).into_owned())
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let octal = b.get(i + 1..i + 4).filter(|d| c == b'\\' && d.iter().all(|x| (b'0'..=b'7').contains(x)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, x| n.wrapping_mul(8).wrapping_add(x - b'0')));
                i += 4;
            }
            None => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Builds the new volume and proves it identical; records the proof.
fn convert(root: &Path) -> Result<Summary, UpgradeError> {
    let work = work_dir(root);
    if exists(&work) {
        log::warn!("an upgrade of {} stopped before its proof: starting it again", root.display());
        remove_tree(&work)?;
    }
    fs::create_dir(&work)?;
    let new = work.join("new");
    fs::create_dir(&new)?;
    let made = build_and_prove(root, &new);
    if made.is_err() {
        if let Err(e) = remove_tree(&work) {
            log::error!("removing the unfinished new store {}: {e}", work.display());
        }
    }
    let summary = made?;
    write_marker(&work, PROVEN, &summary.to_json())?;
    crash_point("proven", 0);
    Ok(summary)
}

fn build_and_prove(root: &Path, new: &Path) -> Result<Summary, UpgradeError> {
    let store = old::OldStore::new(root);
    let cfg = VolumeConfig { cache_size: 64 << 20, ..VolumeConfig::default() };
    let volume = Volume::open(new, cfg)?;
    let built = build::build(&store, &volume);
    let closed = volume.close();
    drop(volume);
    let summary = built?;
    closed?;
    // The proof reads the new store as a mount will: opened afresh.
    let volume = Volume::open_read_only(new)?;
    let diffs = prove::prove(&store, &volume)?;
    if diffs.count > 0 {
        return Err(UpgradeError::NotIdentical { store: root.display().to_string(), count: diffs.count, shown: diffs.shown });
    }
    Ok(summary)
}

/// Writes `dir/name` durably.
fn write_marker(dir: &Path, name: &str, text: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(dir.join(name))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    let mut out = fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<Vec<_>>>()?;
    out.sort();
    Ok(out)
}

/// `rename` that never replaces.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    let (from_c, to_c) = (c(from)?, c(to)?);
    // SAFETY: valid C strings; renameat2 with AT_FDCWD.
    if unsafe { libc::renameat2(libc::AT_FDCWD, from_c.as_ptr(), libc::AT_FDCWD, to_c.as_ptr(), libc::RENAME_NOREPLACE) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("moving {} to {}: {e}", from.display(), to.display())));
    }
    Ok(())
}

/// Moves the old tree aside and the new layout up; its VERSION last.
fn switch(root: &Path) -> Result<(), UpgradeError> {
    let work = work_dir(root);
    let (old_tree, new) = (work.join("old"), work.join("new"));
    if !exists(&work.join(OLD_OUT)) {
        match fs::create_dir(&old_tree) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e.into()),
            _ => {}
        }
        // Until OLD_OUT, the root holds only old entries (and the work
        // area): a rerun moves the rest.
        for (n, name) in names(root)?.into_iter().filter(|n| n != old::WORK_DIR).enumerate() {
            rename_noreplace(&root.join(&name), &old_tree.join(&name))?;
            crash_point("old-out", n as u64 + 1);
        }
        sync_dir(&old_tree)?;
        sync_dir(root)?;
        write_marker(&work, OLD_OUT, "")?;
    }
    for (n, name) in names(&new)?.into_iter().filter(|n| n != VERSION_FILE).enumerate() {
        rename_noreplace(&new.join(&name), &root.join(&name))?;
        crash_point("new-in", n as u64 + 1);
    }
    sync_dir(root)?;
    let version = new.join(VERSION_FILE);
    if exists(&version) {
        rename_noreplace(&version, &root.join(VERSION_FILE))?;
        sync_dir(&new)?;
        sync_dir(root)?;
    } else if fs::read_to_string(root.join(VERSION_FILE)).ok().as_deref() != Some(LAYOUT) {
        return Err(UpgradeError::Failed(format!("the new layout's {VERSION_FILE} is neither in {} nor in the store", new.display())));
    }
    crash_point("switched", 0);
    Ok(())
}

/// Removes what is left of the old layout; the store is layout 2.
fn finish(root: &Path) -> Result<(), UpgradeError> {
    let area = root.join(old::WORK_DIR);
    fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
    // The old mount's log is the store's history: kept.
    let (old_log, log) = (area.join("mount.log"), root.join("mount.log"));
    if exists(&old_log) && !exists(&log) {
        rename_noreplace(&old_log, &log)?;
    }
    remove_tree(&work_dir(root).join("old"))?;
    crash_point("cleanup", 0);
    if exists(&area) {
        for name in names(&area)?.into_iter().filter(|n| n != VERSION_FILE && n != WORK) {
            remove_tree(&area.join(name))?;
        }
        // Its VERSION gone, the store opens as layout 2 whatever is left.
        match fs::remove_file(area.join(VERSION_FILE)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        sync_dir(&area)?;
        remove_tree(&area)?;
    }
    sync_dir(root)?;
    Ok(())
}

/// One open directory of [`remove_tree`], with its subdirectories still
/// to remove.
struct Level {
    dir: Dir,
    name: Vec<u8>,
    subdirs: Vec<Vec<u8>>,
}

fn open_dir_at(parent: Option<&Dir>, name: &Path) -> nix::Result<Dir> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let open = || match parent {
        Some(p) => Dir::openat(p, name, flags, Mode::empty()),
        None => Dir::open(name, flags, Mode::empty()),
    };
    match open() {
        // A directory its owner made unreadable: it is being removed.
        Err(nix::errno::Errno::EACCES) => {
            match parent {
                Some(p) => nix::sys::stat::fchmodat(p, name, Mode::S_IRWXU, FchmodatFlags::FollowSymlink)?,
                None => nix::sys::stat::fchmodat(nix::fcntl::AT_FDCWD, name, Mode::S_IRWXU, FchmodatFlags::FollowSymlink)?,
            }
            open()
        }
        other => other,
    }
}

/// Removes the files of `dir`; returns its subdirectories.
fn clear_files(dir: &mut Dir) -> nix::Result<Vec<Vec<u8>>> {
    let mut listed = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            listed.push((name, entry.file_type()));
        }
    }
    let mut files = Vec::new();
    let mut subdirs = Vec::new();
    for (name, file_type) in listed {
        let is_dir = match file_type {
            Some(t) => t == nix::dir::Type::Directory,
            None => {
                let st = nix::sys::stat::fstatat(&*dir, Path::new(std::ffi::OsStr::from_bytes(&name)), AtFlags::AT_SYMLINK_NOFOLLOW)?;
                st.st_mode & libc::S_IFMT == libc::S_IFDIR
            }
        };
        if is_dir {
            subdirs.push(name);
        } else {
            files.push(name);
        }
    }
    for name in files {
        let name = Path::new(std::ffi::OsStr::from_bytes(&name));
        match nix::unistd::unlinkat(&*dir, name, UnlinkatFlags::NoRemoveDir) {
            Err(nix::errno::Errno::EACCES) => {
                nix::sys::stat::fchmod(&*dir, Mode::S_IRWXU)?;
                nix::unistd::unlinkat(&*dir, name, UnlinkatFlags::NoRemoveDir)?;
            }
            other => other?,
        }
    }
    Ok(subdirs)
}

/// Removes `path` and everything under it, at any depth (one open
/// descriptor per level, no recursion).
fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => return fs::remove_file(path),
        Ok(_) => {}
    }
    let mut top = open_dir_at(None, path)?;
    let subdirs = clear_files(&mut top)?;
    let mut levels = vec![Level { dir: top, name: Vec::new(), subdirs }];
    while let Some(level) = levels.last_mut() {
        if let Some(name) = level.subdirs.pop() {
            let mut dir = open_dir_at(Some(&level.dir), Path::new(std::ffi::OsStr::from_bytes(&name)))?;
            let subdirs = clear_files(&mut dir)?;
            levels.push(Level { dir, name, subdirs });
            continue;
        }
        let done = levels.pop();
        match (levels.last(), done) {
            (Some(parent), Some(done)) => {
                nix::unistd::unlinkat(&parent.dir, Path::new(std::ffi::OsStr::from_bytes(&done.name)), UnlinkatFlags::RemoveDir)?;
            }
            _ => fs::remove_dir(path)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_reads_back_from_its_record() {
        let s = Summary { files: 3, bytes: 1234, dirs: 2, hard_links: 1, symlinks: 4, specials: 5 };
        assert_eq!(Summary::from_json(&s.to_json()), Some(s));
        assert_eq!(Summary::from_json("{}"), None);
    }

    #[test]
    fn a_mount_of_the_store_is_found_in_either_form() {
        let info = "36 25 0:32 / /mnt/a rw,nosuid - fuse.at1fs /srv/my\\040store rw\n\
                    37 25 0:33 / /mnt/b\\040b rw - fuse at1fs:/srv/old rw\n\
                    38 25 0:34 / /mnt/c rw - ext4 /srv/other rw\n";
        assert_eq!(mount_in(info, b"/srv/my store").as_deref(), Some("/mnt/a"));
        assert_eq!(mount_in(info, b"/srv/old").as_deref(), Some("/mnt/b b"));
        assert_eq!(mount_in(info, b"/srv/other"), None, "not an at1fs mount");
        assert_eq!(mount_in(info, b"/srv"), None);
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/tmp/a\\040b\\134c"), b"/tmp/a b\\c");
        assert_eq!(unescape("\\04"), b"\\04", "a short escape is kept as it is");
    }

    #[test]
    fn a_tree_deeper_than_path_max_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("t");
        // Deeper than PATH_MAX: made one level at a time from the last.
        fs::create_dir(&top).unwrap();
        let mut fd = Dir::open(&top, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let name = "d".repeat(200);
        for _ in 0..40 {
            nix::sys::stat::mkdirat(&fd, name.as_str(), Mode::S_IRWXU).unwrap();
            fd = Dir::openat(&fd, name.as_str(), OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
            let file = nix::fcntl::openat(&fd, "file", OFlag::O_WRONLY | OFlag::O_CREAT, Mode::S_IRUSR).unwrap();
            drop(file);
        }
        fs::create_dir(top.join("locked")).unwrap();
        fs::write(top.join("locked/f"), "x").unwrap();
        fs::set_permissions(top.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
        remove_tree(&top).unwrap();
        assert!(!exists(&top));
        remove_tree(&top).unwrap();
    }
}
