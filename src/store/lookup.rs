//! Resolving a logical path of the store *as a caller*, the way the mount
//! would: for queries, which name their table by path and run in the
//! daemon (as root).
//!
//! The walk never hands a user-chosen path to the host: it holds a
//! directory descriptor and looks one name up in it at a time
//! (`fstatat`/`openat` with `O_NOFOLLOW`), so a symlink is never followed
//! by the kernel. A symlink's target is read and resolved here, inside the
//! store, like any other path: an absolute target, or `..` above the root,
//! is refused without looking at anything outside. So a query can reach
//! nothing but the mount's own files — never the host's, never the mount
//! point itself (which would make the daemon call into its own mount and
//! wait for itself). Every directory on the way needs search permission and
//! the file read permission, for the caller ([`crate::access`]).

use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use thiserror::Error;

use super::{classify_file, object_path_in, RegularKind, OBJECT_SUFFIX, WORK_DIR};
use crate::access::{Caller, Want};

/// Symlinks followed in one resolution at most (the kernel's limit).
const MAX_SYMLINKS: usize = 40;

/// What a logical path names, opened.
#[derive(Debug)]
pub enum Resolved {
    /// A regular file whose content is this `.at1` object.
    Object(File),
    /// A managed regular file never written: empty.
    Empty,
    /// A regular file of raw bytes (not an object).
    Plain(File),
}

/// Why a path does not resolve. Messages name the path as the caller gave
/// it and say nothing of what lies outside the store.
#[derive(Debug, Error)]
pub enum ResolveError {
    #[error("no such file")]
    NotFound,
    #[error("permission denied")]
    PermissionDenied,
    #[error("a symlink on the path leads outside the mount")]
    LeavesStore,
    #[error("not a regular file")]
    NotAFile,
    #[error("a component of the path is not a directory")]
    NotADirectory,
    #[error("too many levels of symbolic links")]
    Loop,
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl ResolveError {
    /// The errno an `open` of the path would have failed with.
    pub fn errno(&self) -> i32 {
        match self {
            ResolveError::NotFound | ResolveError::LeavesStore => libc::ENOENT,
            ResolveError::PermissionDenied => libc::EACCES,
            ResolveError::NotAFile => libc::EINVAL,
            ResolveError::NotADirectory => libc::ENOTDIR,
            ResolveError::Loop => libc::ELOOP,
            ResolveError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

/// The attributes of one directory entry, as `fstatat` gives them.
struct Entry {
    mode: u32,
    uid: u32,
    gid: u32,
    dev: u64,
    ino: u64,
}

impl Entry {
    fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }

    fn of(meta: &std::fs::Metadata) -> Entry {
        Entry { mode: meta.mode(), uid: meta.uid(), gid: meta.gid(), dev: meta.dev(), ino: meta.ino() }
    }
}

fn cname(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::ENOENT))
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; `None` when there is no such
/// entry.
fn stat_at(dir: &OwnedFd, name: &OsStr) -> io::Result<Option<Entry>> {
    let c = cname(name)?;
    // SAFETY: a zeroed stat is a valid out-buffer for fstatat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid dirfd, C string and out pointer.
    if unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENAMETOOLONG) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(Entry { mode: st.st_mode, uid: st.st_uid, gid: st.st_gid, dev: st.st_dev, ino: st.st_ino }))
}

fn open_at(dir: &OwnedFd, name: &OsStr, flags: i32) -> io::Result<OwnedFd> {
    let c = cname(name)?;
    // SAFETY: a valid dirfd and C string.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor, owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn read_link_at(dir: &OwnedFd, name: &OsStr) -> io::Result<Vec<u8>> {
    let c = cname(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: a valid dirfd, C string and buffer of buf.len() bytes.
    let n = unsafe { libc::readlinkat(dir.as_raw_fd(), c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Opens `name` in `dir` and checks that it is still the entry that was
/// judged (a rename between the check and the open must not swap in
/// another file).
fn open_checked(dir: &OwnedFd, name: &OsStr, flags: i32, judged: &Entry) -> Result<OwnedFd, ResolveError> {
    let fd = open_at(dir, name, flags).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => ResolveError::NotFound,
        _ => ResolveError::Io(e),
    })?;
    let meta = File::from(fd.try_clone()?).metadata()?;
    if (meta.dev(), meta.ino()) != (judged.dev, judged.ino) {
        return Err(ResolveError::NotFound);
    }
    Ok(fd)
}

/// The tree name that logical `name` has in `dir`: itself, or `name.at1`
/// when that is an object dropped into the store and `name` is free (the
/// mount's rule, `super::tree_name`). A dropped-in `x.at1` shown as `x` is
/// not reachable as `x.at1`.
fn tree_name_at(dir: &OwnedFd, name: &OsStr) -> io::Result<Option<(OsString, Entry)>> {
    let is_bare = |n: &OsStr, e: &Entry| -> bool {
        e.kind() == libc::S_IFREG
            && open_at(dir, n, libc::O_RDONLY | libc::O_NONBLOCK)
                .ok()
                .map(File::from)
                .is_some_and(|mut f| classify_file(&mut f).ok() == Some(RegularKind::Bare))
    };
    if let Some(entry) = stat_at(dir, name)? {
        if let Some(stem) = name.as_bytes().strip_suffix(OBJECT_SUFFIX.as_bytes()).filter(|s| !s.is_empty()) {
            if stat_at(dir, OsStr::from_bytes(stem))?.is_none() && is_bare(name, &entry) {
                return Ok(None); // shown as its stem, not under this name
            }
        }
        return Ok(Some((name.to_os_string(), entry)));
    }
    let mut suffixed = name.to_os_string();
    suffixed.push(OBJECT_SUFFIX);
    match stat_at(dir, &suffixed)? {
        Some(entry) if is_bare(&suffixed, &entry) => Ok(Some((suffixed, entry))),
        _ => Ok(None),
    }
}

fn components(path: &[u8]) -> impl Iterator<Item = OsString> + '_ {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".").map(|c| OsString::from_vec(c.to_vec()))
}

/// Resolves `logical` (relative to the root of the store at `root`) for
/// `caller`, judging permissions as `open(O_RDONLY)` through the mount
/// would, and opens what it names.
pub fn resolve_as(root: &Path, logical: &str, caller: &Caller) -> Result<Resolved, ResolveError> {
    let root_fd = File::open(root)?;
    let root_entry = Entry::of(&root_fd.metadata()?);
    if root_entry.kind() != libc::S_IFDIR {
        return Err(ResolveError::NotADirectory);
    }
    if !caller.may(Want::Search, root_entry.mode, root_entry.uid, root_entry.gid) {
        return Err(ResolveError::PermissionDenied);
    }
    // The directories walked so far, the root first: `..` pops one.
    let mut dirs: Vec<OwnedFd> = vec![OwnedFd::from(root_fd)];
    let mut pending: VecDeque<OsString> = components(logical.as_bytes()).collect();
    let mut symlinks = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            if dirs.len() == 1 {
                return Err(ResolveError::LeavesStore);
            }
            dirs.pop();
            continue;
        }
        let dir = dirs.last().ok_or(ResolveError::NotFound)?;
        if dirs.len() == 1 && name == WORK_DIR {
            return Err(ResolveError::NotFound); // the control directory holds no tables
        }
        let Some((tname, entry)) = tree_name_at(dir, &name)? else { return Err(ResolveError::NotFound) };
        if entry.dev != root_entry.dev {
            // Another filesystem mounted inside the store is not the store.
            return Err(ResolveError::NotFound);
        }
        match entry.kind() {
            libc::S_IFLNK => {
                symlinks += 1;
                if symlinks > MAX_SYMLINKS {
                    return Err(ResolveError::Loop);
                }
                let target = read_link_at(dir, &tname)?;
                if target.first() == Some(&b'/') {
                    return Err(ResolveError::LeavesStore);
                }
                for c in components(&target).collect::<Vec<_>>().into_iter().rev() {
                    pending.push_front(c);
                }
            }
            libc::S_IFDIR => {
                if !caller.may(Want::Search, entry.mode, entry.uid, entry.gid) {
                    return Err(ResolveError::PermissionDenied);
                }
                let fd = open_checked(dir, &tname, libc::O_PATH | libc::O_DIRECTORY, &entry)?;
                dirs.push(fd);
            }
            _ if !pending.is_empty() => return Err(ResolveError::NotADirectory),
            libc::S_IFREG => {
                if !caller.may(Want::Read, entry.mode, entry.uid, entry.gid) {
                    return Err(ResolveError::PermissionDenied);
                }
                let file = File::from(open_checked(dir, &tname, libc::O_RDONLY | libc::O_NONBLOCK, &entry)?);
                return open_content(root, file);
            }
            _ => return Err(ResolveError::NotAFile),
        }
    }
    Err(ResolveError::NotAFile) // the path names a directory
}

/// The content of an opened regular file of the tree.
fn open_content(root: &Path, mut file: File) -> Result<Resolved, ResolveError> {
    use std::io::Seek;
    let kind = classify_file(&mut file)?;
    file.rewind()?;
    Ok(match kind {
        RegularKind::Managed(id) => match File::open(object_path_in(root, &id)) {
            Ok(object) => Resolved::Object(object),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Resolved::Empty,
            Err(e) => return Err(e.into()),
        },
        RegularKind::Bare => Resolved::Object(file),
        RegularKind::Plain => Resolved::Plain(file),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn user() -> Caller {
        Caller { uid: 4242, gid: 4242, groups: Vec::new() }
    }

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn permissions_are_judged_for_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        chmod(root, 0o755);
        std::fs::write(root.join("open.csv"), "a\n1\n").unwrap();
        chmod(&root.join("open.csv"), 0o644);
        std::fs::write(root.join("secret.csv"), "a\n1\n").unwrap();
        chmod(&root.join("secret.csv"), 0o600);
        std::fs::create_dir(root.join("closed")).unwrap();
        std::fs::write(root.join("closed/x.csv"), "a\n1\n").unwrap();
        chmod(&root.join("closed/x.csv"), 0o644);
        chmod(&root.join("closed"), 0o700);
        assert!(matches!(resolve_as(root, "open.csv", &user()), Ok(Resolved::Plain(_))));
        assert!(matches!(resolve_as(root, "secret.csv", &user()), Err(ResolveError::PermissionDenied)));
        assert!(matches!(resolve_as(root, "closed/x.csv", &user()), Err(ResolveError::PermissionDenied)));
        assert!(matches!(resolve_as(root, "closed/x.csv", &Caller::root()), Ok(Resolved::Plain(_))));
        assert!(matches!(resolve_as(root, "missing.csv", &user()), Err(ResolveError::NotFound)));
        assert!(matches!(resolve_as(root, "open.csv/x", &user()), Err(ResolveError::NotADirectory)));
        assert!(matches!(resolve_as(root, "closed", &Caller::root()), Err(ResolveError::NotAFile)));
    }

    #[test]
    fn symlinks_are_followed_inside_the_store_only() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("store");
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::write(root.join("d/e/t.csv"), "a\n1\n").unwrap();
        std::fs::write(outer.path().join("outside.csv"), "a\n1\n").unwrap();
        std::os::unix::fs::symlink("e/t.csv", root.join("d/rel")).unwrap();
        std::os::unix::fs::symlink("../d/e", root.join("d/up")).unwrap();
        std::os::unix::fs::symlink("../outside.csv", root.join("leave")).unwrap();
        std::os::unix::fs::symlink("../nothing.csv", root.join("leave_missing")).unwrap();
        std::os::unix::fs::symlink(outer.path().join("outside.csv"), root.join("abs")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        let root_caller = Caller::root();
        assert!(matches!(resolve_as(&root, "d/rel", &root_caller), Ok(Resolved::Plain(_))));
        assert!(matches!(resolve_as(&root, "d/up/t.csv", &root_caller), Ok(Resolved::Plain(_))));
        for refused in ["leave", "leave_missing", "abs", "abs/x", "d/../../outside.csv"] {
            let e = resolve_as(&root, refused, &root_caller).unwrap_err();
            assert!(matches!(e, ResolveError::LeavesStore), "{refused}: {e}");
        }
        assert!(matches!(resolve_as(&root, "loop", &root_caller), Err(ResolveError::Loop)));
        assert!(matches!(resolve_as(&root, ".at1/objects", &root_caller), Err(ResolveError::NotFound)));
    }
}
