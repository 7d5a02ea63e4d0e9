//! The store: the backing directory a mount serves, and how logical files
//! map onto it (docs/ARCHITECTURE.md, "Store layout").
//!
//! ```text
//! STORE/
//!   <tree>                 the logical namespace, as itself: directories,
//!                          symlinks, fifos, sockets and device nodes are real;
//!                          a regular file is a small *stub* naming an inode id
//!   .at1/                  work area (the logical root's `.at1` is virtual)
//!     inodes/<id>          a hidden hard link of every stub
//!     objects/<id>.at1     the content of inode <id> (absent = empty file)
//!     tmp/                 stubs being made (cleaned at mount)
//!     staging/             write staging (anonymous O_TMPFILE files)
//! ```
//!
//! Why stubs: the content of a file changes by atomic rename of a new
//! object, which gives the object a new inode; the stub's inode never
//! changes. So hard links are real hard links of the stub — every name sees
//! each committed write, `nlink` and `st_ino` are the stub's — and mode,
//! owner, times and xattrs live on the stub, shared by all names, kept by
//! the backing filesystem with its own POSIX semantics. This is the
//! inode-indirection of metadata engines (JuiceFS), with the backing
//! filesystem as the metadata engine.
//!
//! The hidden `inodes/<id>` link lets the store find, after a crash, the
//! inodes that lost their last name (link count 1) and collect their
//! objects, without walking the tree.
//!
//! Regular files in the tree that are not stubs are served too: an `.at1`
//! object dropped into the store (by `at1 compress`) appears as its original
//! — under its name without `.at1` — and any other file as its raw bytes. The
//! first committed write turns either into a stub.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::format::MAGIC;

mod lookup;
pub use lookup::{resolve_as, ResolveError, Resolved};

/// Name of the work directory at the store root (and of the virtual control
/// directory at the mount root).
pub const WORK_DIR: &str = ".at1";
/// First bytes of a stub.
pub const STUB_MAGIC: &[u8; 9] = b"AT1STUB1\n";
const ID_HEX: usize = 32;
/// A stub is exactly the magic, the id in hex, and a newline.
pub const STUB_LEN: usize = STUB_MAGIC.len() + ID_HEX + 1;
/// Suffix of `.at1` objects dropped into the tree.
pub const OBJECT_SUFFIX: &str = ".at1";
const LAYOUT_VERSION: &str = "at1fs store layout 1\n";

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store {0} does not exist or is not a directory")]
    NotADirectory(PathBuf),
    #[error("store {0} is not writable: {1}")]
    NotWritable(PathBuf, io::Error),
    #[error("store {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// An inode id: 128 random bits, in hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InodeId(String);

impl InodeId {
    pub fn new() -> io::Result<Self> {
        let mut bytes = [0u8; 16];
        // SAFETY: getrandom writes at most `len` bytes into the buffer.
        let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        if n != bytes.len() as isize {
            return Err(io::Error::last_os_error());
        }
        Ok(Self(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    fn parse(hex: &[u8]) -> Option<Self> {
        (hex.len() == ID_HEX && hex.iter().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())).then(|| Self(String::from_utf8_lossy(hex).into_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a regular file of the tree holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegularKind {
    /// A stub: the content is `objects/<id>.at1`.
    Managed(InodeId),
    /// The file is itself an `.at1` object (dropped in).
    Bare,
    /// The file is raw bytes (put there by hand).
    Plain,
}

/// The backing directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    work: PathBuf,
    staging: PathBuf,
}

/// What recovery found and removed at mount.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub staging_files: usize,
    pub temp_files: usize,
    pub orphan_inodes: usize,
    pub orphan_objects: usize,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

impl Store {
    /// Opens (and on first use lays out) the store at `root`. Staging files
    /// go to `staging` if given.
    pub fn open(root: &Path, staging: Option<&Path>) -> Result<Store, StoreError> {
        let meta = fs::metadata(root).map_err(|_| StoreError::NotADirectory(root.to_path_buf()))?;
        if !meta.is_dir() {
            return Err(StoreError::NotADirectory(root.to_path_buf()));
        }
        let root = fs::canonicalize(root).map_err(io_at(root))?;
        let work = root.join(WORK_DIR);
        let probe = tempfile::tempfile_in(&root);
        if let Err(e) = probe {
            return Err(StoreError::NotWritable(root, e));
        }
        for dir in ["", "inodes", "objects", "tmp", "staging"] {
            let d = work.join(dir);
            match fs::create_dir(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StoreError::Io { path: d, source: e }),
            }
        }
        // Only the daemon reads the work area: objects must not leak past
        // the permissions of the files they hold.
        fs::set_permissions(&work, fs::Permissions::from_mode(0o700)).map_err(io_at(&work))?;
        let version = work.join("VERSION");
        if !version.exists() {
            fs::write(&version, LAYOUT_VERSION).map_err(io_at(&version))?;
        }
        let staging = staging.map_or_else(|| work.join("staging"), Path::to_path_buf);
        fs::create_dir_all(&staging).map_err(io_at(&staging))?;
        Ok(Store { root, work, staging })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where staging files go (and the mount's other scratch files).
    pub fn staging_dir(&self) -> &Path {
        &self.staging
    }

    pub fn objects_dir(&self) -> PathBuf {
        self.work.join("objects")
    }

    pub fn object_path(&self, id: &InodeId) -> PathBuf {
        object_path_in(&self.root, id)
    }

    pub fn inode_path(&self, id: &InodeId) -> PathBuf {
        self.work.join("inodes").join(&id.0)
    }

    /// An anonymous staging file: it has no name, so a crash leaves nothing
    /// behind.
    pub fn new_staging_file(&self) -> io::Result<File> {
        tempfile::tempfile_in(&self.staging)
    }

    /// Whether `name` in directory `dir` (a tree path) is the work area.
    pub fn is_work_dir(&self, dir: &Path, name: &OsStr) -> bool {
        dir == self.root && name == WORK_DIR
    }

    /// Writes a stub for inode `id` in `tmp/` with `mode` (permission bits)
    /// and owner `uid:gid`; returns its path.
    fn write_stub(&self, id: &InodeId, mode: u32, uid: u32, gid: u32) -> io::Result<PathBuf> {
        let tmp = self.work.join("tmp").join(&id.0);
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        let mut content = Vec::with_capacity(STUB_LEN);
        content.extend_from_slice(STUB_MAGIC);
        content.extend_from_slice(id.0.as_bytes());
        content.push(b'\n');
        f.write_all(&content)?;
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        // After chown: chown clears set-id bits.
        f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
        Ok(tmp)
    }

    /// Makes a new inode: a stub linked as `inodes/<id>`, returned with its
    /// path in `tmp/` (the caller links it into the tree, then removes it).
    fn make_stub(&self, mode: u32, uid: u32, gid: u32) -> io::Result<(InodeId, PathBuf)> {
        let id = InodeId::new()?;
        let tmp = self.write_stub(&id, mode, uid, gid)?;
        fs::hard_link(&tmp, self.inode_path(&id))?;
        Ok((id, tmp))
    }

    /// Creates an empty regular file at `tree_path` (fails with EEXIST if
    /// the name is taken).
    pub fn create_file(&self, tree_path: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<InodeId> {
        let (id, tmp) = self.make_stub(mode, uid, gid)?;
        let linked = fs::hard_link(&tmp, tree_path);
        let _ = fs::remove_file(&tmp);
        if let Err(e) = linked {
            let _ = fs::remove_file(self.inode_path(&id));
            return Err(e);
        }
        Ok(id)
    }

    /// Turns a bare object or plain file at `tree_path` into a stub whose
    /// content is the already committed `objects/<id>.at1`, keeping the
    /// file's mode, owner, times and xattrs. The replace is one rename.
    pub fn adopt(&self, tree_path: &Path, id: &InodeId) -> io::Result<()> {
        let meta = fs::symlink_metadata(tree_path)?;
        let tmp = self.write_stub(id, meta.mode(), meta.uid(), meta.gid())?;
        for name in xattr_names(tree_path)? {
            if let Some(value) = get_xattr(tree_path, &name)? {
                set_xattr(&tmp, &name, &value, 0)?;
            }
        }
        set_times(&tmp, meta.atime(), meta.atime_nsec(), meta.mtime(), meta.mtime_nsec())?;
        fs::hard_link(&tmp, self.inode_path(id))?;
        fs::rename(&tmp, tree_path)
    }

    /// Collects inode `id` if no tree name links it any more: removes its
    /// object, then its hidden link. Returns whether it was collected.
    pub fn collect_if_unlinked(&self, id: &InodeId) -> io::Result<bool> {
        let inode = self.inode_path(id);
        match fs::symlink_metadata(&inode) {
            Ok(m) if m.nlink() <= 1 => {
                remove_if_exists(&self.object_path(id))?;
                remove_if_exists(&inode)?;
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Cleans what a crash can leave: staging and temp files, inodes that
    /// lost their last name, objects without an inode.
    pub fn recover(&self) -> io::Result<Recovery> {
        let mut r = Recovery { staging_files: clear_dir(&self.staging)?, temp_files: clear_dir(&self.work.join("tmp"))?, ..Recovery::default() };
        for entry in fs::read_dir(self.objects_dir())? {
            let entry = entry?;
            let name = entry.file_name();
            let bytes = name.as_bytes();
            if bytes.starts_with(crate::gate::TEMP_PREFIX.as_bytes()) {
                fs::remove_file(entry.path())?;
                r.temp_files += 1;
                continue;
            }
            let id = bytes.strip_suffix(OBJECT_SUFFIX.as_bytes()).and_then(InodeId::parse);
            if id.as_ref().is_none_or(|id| !self.inode_path(id).exists()) {
                fs::remove_file(entry.path())?;
                r.orphan_objects += 1;
            }
        }
        for entry in fs::read_dir(self.work.join("inodes"))? {
            let entry = entry?;
            if let Some(id) = InodeId::parse(entry.file_name().as_bytes()) {
                if self.collect_if_unlinked(&id)? {
                    r.orphan_inodes += 1;
                }
            }
        }
        Ok(r)
    }
}

/// Classifies a regular file of a store tree by its first bytes: a stub, an
/// `.at1` object, or plain bytes.
pub fn classify(path: &Path) -> io::Result<RegularKind> {
    classify_file(&mut File::open(path)?)
}

/// [`classify`] for an open file (read from its current position).
pub fn classify_file(f: &mut File) -> io::Result<RegularKind> {
    let mut head = [0u8; STUB_LEN + 1];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let head = &head[..n];
    if n == STUB_LEN && head.starts_with(STUB_MAGIC) && head[STUB_LEN - 1] == b'\n' {
        if let Some(id) = InodeId::parse(&head[STUB_MAGIC.len()..STUB_LEN - 1]) {
            return Ok(RegularKind::Managed(id));
        }
    }
    if head.starts_with(&MAGIC) {
        return Ok(RegularKind::Bare);
    }
    Ok(RegularKind::Plain)
}

fn clear_dir(dir: &Path) -> io::Result<usize> {
    let mut n = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(entry.path())?;
        } else {
            fs::remove_file(entry.path())?;
        }
        n += 1;
    }
    Ok(n)
}

fn remove_if_exists(p: &Path) -> io::Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Where the object of inode `id` lives in the store rooted at `root`.
pub fn object_path_in(root: &Path, id: &InodeId) -> PathBuf {
    root.join(WORK_DIR).join("objects").join(format!("{}{OBJECT_SUFFIX}", id.0))
}

/// The tree name a logical name maps to in directory `dir`: the name
/// itself, or `name.at1` when that is a bare object and `name` is free.
pub fn tree_name(dir: &Path, name: &OsStr) -> OsString {
    if fs::symlink_metadata(dir.join(name)).is_ok() {
        return name.to_os_string();
    }
    let mut suffixed = name.to_os_string();
    suffixed.push(OBJECT_SUFFIX);
    let candidate = dir.join(&suffixed);
    match fs::symlink_metadata(&candidate) {
        Ok(m) if m.is_file() && classify(&candidate).ok() == Some(RegularKind::Bare) => suffixed,
        _ => name.to_os_string(),
    }
}

/// The logical name of tree entry `name` in `dir` (a regular file):
/// `x.at1` is shown as `x` when it is a bare object and `x` is free.
pub fn logical_name(dir: &Path, name: &OsStr) -> OsString {
    let bytes = name.as_bytes();
    if let Some(stem) = bytes.strip_suffix(OBJECT_SUFFIX.as_bytes()).filter(|s| !s.is_empty()) {
        let stem = OsStr::from_bytes(stem);
        if fs::symlink_metadata(dir.join(stem)).is_err() && classify(&dir.join(name)).ok() == Some(RegularKind::Bare) {
            return stem.to_os_string();
        }
    }
    name.to_os_string()
}

// ---------------------------------------------------------------- xattrs

fn cpath(p: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn cname(n: &OsStr) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(n.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Names of the extended attributes of `path` (not following symlinks).
pub fn xattr_names(path: &Path) -> io::Result<Vec<OsString>> {
    let p = cpath(path)?;
    loop {
        // SAFETY: a null buffer of size 0 asks for the size only.
        let size = unsafe { libc::llistxattr(p.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; size as usize];
        // SAFETY: buf has `size` bytes.
        let n = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue; // grew in between
            }
            return Err(e);
        }
        buf.truncate(n as usize);
        return Ok(buf.split(|&b| b == 0).filter(|s| !s.is_empty()).map(|s| OsStr::from_bytes(s).to_os_string()).collect());
    }
}

/// The value of xattr `name` of `path`, `None` if it has none.
pub fn get_xattr(path: &Path, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
    let (p, n) = (cpath(path)?, cname(name)?);
    loop {
        // SAFETY: size query with a null buffer.
        let size = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::ENODATA) { Ok(None) } else { Err(e) };
        }
        let mut buf = vec![0u8; size as usize];
        // SAFETY: buf has `size` bytes.
        let got = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return if e.raw_os_error() == Some(libc::ENODATA) { Ok(None) } else { Err(e) };
        }
        buf.truncate(got as usize);
        return Ok(Some(buf));
    }
}

pub fn set_xattr(path: &Path, name: &OsStr, value: &[u8], flags: i32) -> io::Result<()> {
    let (p, n) = (cpath(path)?, cname(name)?);
    // SAFETY: pointers valid for the given lengths.
    let r = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), flags) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn remove_xattr(path: &Path, name: &OsStr) -> io::Result<()> {
    let (p, n) = (cpath(path)?, cname(name)?);
    // SAFETY: valid C strings.
    if unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets atime and mtime of `path` (not following symlinks).
pub fn set_times(path: &Path, atime: i64, atime_ns: i64, mtime: i64, mtime_ns: i64) -> io::Result<()> {
    let p = cpath(path)?;
    let ts = [libc::timespec { tv_sec: atime, tv_nsec: atime_ns }, libc::timespec { tv_sec: mtime, tv_nsec: mtime_ns }];
    // SAFETY: two valid timespecs.
    if unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_classify_and_collect() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).unwrap();
        let file = dir.path().join("a.txt");
        let id = store.create_file(&file, 0o640, 0, 0).unwrap();
        assert_eq!(classify(&file).unwrap(), RegularKind::Managed(id.clone()));
        assert_eq!(fs::metadata(&file).unwrap().nlink(), 2);
        assert!(store.create_file(&file, 0o640, 0, 0).is_err(), "EEXIST");
        fs::write(store.object_path(&id), b"x").unwrap();
        assert!(!store.collect_if_unlinked(&id).unwrap());
        fs::remove_file(&file).unwrap();
        assert!(store.collect_if_unlinked(&id).unwrap());
        assert!(!store.object_path(&id).exists());
    }

    #[test]
    fn recovery_collects_orphans_and_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).unwrap();
        let kept = store.create_file(&dir.path().join("kept"), 0o644, 0, 0).unwrap();
        fs::write(store.object_path(&kept), b"k").unwrap();
        let lost = store.create_file(&dir.path().join("lost"), 0o644, 0, 0).unwrap();
        fs::write(store.object_path(&lost), b"l").unwrap();
        fs::remove_file(dir.path().join("lost")).unwrap(); // crash before collection
        fs::write(store.objects_dir().join(".at1-tmp-xyz"), b"partial").unwrap();
        fs::write(store.objects_dir().join(format!("{}.at1", InodeId::new().unwrap().0)), b"o").unwrap();
        let r = store.recover().unwrap();
        assert_eq!(r, Recovery { staging_files: 0, temp_files: 1, orphan_inodes: 1, orphan_objects: 1 });
        assert!(store.object_path(&kept).exists());
        assert!(!store.object_path(&lost).exists());
    }
}

/// A path in the store, made short enough for any system call. A logical
/// path may be up to PATH_MAX long, and the store's root adds its own
/// length; such a path's parent directory is opened component by component
/// (`O_PATH`) and the path becomes `/proc/self/fd/N/name`, valid while this
/// value lives.
#[derive(Debug)]
pub struct Anchored {
    path: PathBuf,
    _dir: Option<std::os::fd::OwnedFd>,
}

/// Paths longer than this are anchored (PATH_MAX is 4096, and callers may
/// append a name of up to 255 bytes).
const ANCHOR_AT: usize = 3000;

impl Anchored {
    pub fn new(path: PathBuf) -> io::Result<Anchored> {
        if path.as_os_str().len() < ANCHOR_AT {
            return Ok(Anchored { path, _dir: None });
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Ok(Anchored { path, _dir: None });
        };
        let dir = open_dir_by_components(parent)?;
        use std::os::fd::AsRawFd;
        let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
        Ok(Anchored { path: short, _dir: Some(dir) })
    }
}

impl std::ops::Deref for Anchored {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for Anchored {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// Opens a directory one component at a time, so its path may exceed
/// PATH_MAX. Components are never followed if they are symlinks.
fn open_dir_by_components(path: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let open_at = |dir: libc::c_int, name: &OsStr| -> io::Result<OwnedFd> {
        let c = std::ffi::CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a valid dirfd (or AT_FDCWD) and C string.
        let fd = unsafe { libc::openat(dir, c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let mut cur = open_at(libc::AT_FDCWD, OsStr::new("/"))?;
    for comp in path.components() {
        if let std::path::Component::Normal(name) = comp {
            cur = open_at(cur.as_raw_fd(), name)?;
        }
    }
    Ok(cur)
}
