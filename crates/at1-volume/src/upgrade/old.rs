//! A layout-1 store, read as its mount showed it (the release before the
//! volume engine; its `src/store/mod.rs`, `src/fs/names.rs`, `attr.rs` and
//! `xattr.rs` are the reference):
//!
//! - the store directory *is* the namespace: directories, symlinks, fifos,
//!   sockets and device nodes are themselves, with their own mode, owner,
//!   times and xattrs; `STORE/.at1/` is the work area, not shown;
//! - a regular file is one of three things, told apart by its first bytes:
//!   a 42-byte *stub* `AT1STUB1\n<32 hex id>\n` whose content is
//!   `.at1/objects/<id>.at1` (none: an empty file), with `.at1/inodes/<id>`
//!   one more hidden hard link of it (so the mount showed `nlink - 1`); an
//!   `.at1` object dropped in by hand (shown decoded, under its name
//!   without `.at1` when that name is free); or raw bytes (shown as they
//!   are);
//! - `user.at1.*` attributes were computed, never stored.
//!
//! Nothing here changes the tree, nor an access time: every file and
//! directory is opened with `O_NOATIME` where the caller may (its owner or
//! root); a symlink whose atime reading it changed gets it back. Directories are opened from their parent's descriptor and their
//! entries reached through `/proc/self/fd`, so a tree deeper than PATH_MAX
//! (which the old release allowed) reads as well as a shallow one.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::{self, Metadata};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use at1_core::format::MAGIC;
use at1_core::reader::{Object, Reader};
use at1_store::{Kind, Nanos};
use nix::dir::Dir;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use sha2::Digest as _;

use crate::import::open_noatime;

/// The work area at the root of a layout-1 store (not part of its
/// namespace).
pub(crate) const WORK_DIR: &str = ".at1";
const STUB_MAGIC: &[u8] = b"AT1STUB1\n";
const ID_HEX: usize = 32;
/// A stub is exactly the magic, the id in hex, and a newline.
const STUB_LEN: usize = STUB_MAGIC.len() + ID_HEX + 1;
const OBJECT_SUFFIX: &[u8] = b".at1";
/// Attributes the old mount computed; one stored under such a name (by
/// hand) was never shown.
const VIRTUAL_PREFIX: &[u8] = b"user.at1.";

/// What a regular file of the tree holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Content {
    /// A stub: its content is this object, or nothing (never written).
    Stub(Option<PathBuf>),
    /// The file is itself an `.at1` object, dropped in by hand.
    Bare,
    /// Raw bytes, put in by hand.
    Plain,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum What {
    Dir,
    Symlink(Vec<u8>),
    /// A fifo, socket or device node.
    Special(Kind),
    File(Content),
}

impl What {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            What::Dir => Kind::Dir,
            What::Symlink(_) => Kind::Symlink,
            What::Special(k) => *k,
            What::File(_) => Kind::File,
        }
    }
}

/// One name of a directory, as the old mount showed it.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The name the mount showed.
    pub name: Vec<u8>,
    /// The name in the tree (differs for a dropped-in object).
    pub tree_name: Vec<u8>,
    /// Where it is, valid while its directory is open.
    pub path: PathBuf,
    /// Its `lstat`, taken before anything read it.
    pub meta: Metadata,
    pub what: What,
}

impl Entry {
    /// The link count the mount showed: a stub's hidden `inodes/` link
    /// was not counted.
    pub(crate) fn shown_nlink(&self) -> u64 {
        match self.what {
            What::File(Content::Stub(_)) => self.meta.nlink().saturating_sub(1),
            _ => self.meta.nlink(),
        }
    }

    /// The key of the tree inode, shared by hard links.
    pub(crate) fn inode_key(&self) -> (u64, u64) {
        (self.meta.dev(), self.meta.ino())
    }
}

/// The access and modification times of `meta`, in nanoseconds, or why
/// the volume cannot keep them (beyond 1677-2262).
pub(crate) fn times(meta: &Metadata) -> Result<(Nanos, Nanos), String> {
    let ns = |s: i64, n: i64| s.checked_mul(1_000_000_000).and_then(|t| t.checked_add(n));
    match (ns(meta.atime(), meta.atime_nsec()), ns(meta.mtime(), meta.mtime_nsec())) {
        (Some(a), Some(m)) => Ok((a, m)),
        _ => Err(format!("its times ({} and {} s since 1970) are beyond what a volume keeps (years 1677 to 2262)", meta.atime(), meta.mtime())),
    }
}

/// An open directory of the tree.
pub(crate) struct OldDir {
    dir: Dir,
    /// Its path as the mount showed it, for messages.
    pub shown: Vec<u8>,
}

impl OldDir {
    /// The path of entry `tree_name` of this directory, usable while it is
    /// open whatever its depth.
    fn entry_path(&self, tree_name: &[u8]) -> PathBuf {
        let mut p = format!("/proc/self/fd/{}/", self.dir.as_raw_fd()).into_bytes();
        p.extend_from_slice(tree_name);
        PathBuf::from(std::ffi::OsStr::from_bytes(&p))
    }

    /// The path of entry `name` (as shown) for messages.
    pub(crate) fn shown_child(&self, name: &[u8]) -> Vec<u8> {
        let mut p = self.shown.clone();
        if p != b"/" {
            p.push(b'/');
        }
        p.extend_from_slice(name);
        p
    }

    /// The names in the directory (not `.` and `..`).
    fn names(&mut self) -> io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for entry in self.dir.iter() {
            let name = entry?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                out.push(name);
            }
        }
        Ok(out)
    }
}

/// `path` escaped for a message: bytes that are not printable ASCII as
/// `\xHH`.
pub(crate) fn show(path: &[u8]) -> String {
    let mut out = String::with_capacity(path.len());
    for &b in path {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Opens a directory (`at` a parent's descriptor, or by path) without
/// changing its access time where that is allowed.
fn open_dir(at: Option<&Dir>, path: &Path) -> io::Result<Dir> {
    let open = |flags: OFlag| match at {
        Some(parent) => Dir::openat(parent, path, flags, Mode::empty()),
        None => Dir::open(path, flags, Mode::empty()),
    };
    match open(dir_flags() | OFlag::O_NOATIME) {
        Err(nix::errno::Errno::EPERM) => open(dir_flags()),
        other => other,
    }
    .map_err(io::Error::from)
}

/// A directory still to walk: the root, or a directory entry of an open
/// directory (opened only when its turn comes, so a walk holds one
/// descriptor per level, not one per directory waiting).
pub(crate) enum Pending {
    Root,
    Child { parent: std::rc::Rc<OldDir>, entry: Box<Entry> },
}

impl Pending {
    /// Its path as the mount showed it.
    pub(crate) fn shown(&self) -> Vec<u8> {
        match self {
            Pending::Root => b"/".to_vec(),
            Pending::Child { parent, entry } => parent.shown_child(&entry.name),
        }
    }
}

/// A layout-1 store directory.
pub(crate) struct OldStore {
    pub root: PathBuf,
}

impl OldStore {
    pub(crate) fn new(root: &Path) -> OldStore {
        OldStore { root: root.to_path_buf() }
    }

    /// Opens a directory to walk.
    pub(crate) fn open(&self, pending: &Pending) -> io::Result<OldDir> {
        match pending {
            Pending::Root => Ok(OldDir { dir: open_dir(None, &self.root)?, shown: b"/".to_vec() }),
            Pending::Child { parent, entry } => {
                let dir = open_dir(Some(&parent.dir), Path::new(std::ffi::OsStr::from_bytes(&entry.tree_name)))?;
                Ok(OldDir { dir, shown: parent.shown_child(&entry.name) })
            }
        }
    }

    /// The root's own attributes.
    pub(crate) fn root_meta(&self) -> io::Result<Metadata> {
        fs::symlink_metadata(&self.root)
    }

    /// The entries of `dir` as the mount listed them, in name order.
    pub(crate) fn list(&self, dir: &mut OldDir) -> io::Result<Vec<Entry>> {
        let is_root = dir.shown == b"/";
        let names: Vec<Vec<u8>> = dir.names()?.into_iter().filter(|n| !(is_root && n == WORK_DIR.as_bytes())).collect();
        let taken: HashSet<&[u8]> = names.iter().map(Vec::as_slice).collect();
        let mut out = Vec::with_capacity(names.len());
        for tree_name in &names {
            let path = dir.entry_path(tree_name);
            let meta = fs::symlink_metadata(&path)?;
            let what = self.what(&path, &meta)?;
            let name = match what {
                What::File(Content::Bare) => shown_name_of_object(tree_name, &taken),
                _ => tree_name.clone(),
            };
            out.push(Entry { name, tree_name: tree_name.clone(), path, meta, what });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn what(&self, path: &Path, meta: &Metadata) -> io::Result<What> {
        let t = meta.file_type();
        Ok(if t.is_dir() {
            What::Dir
        } else if t.is_symlink() {
            What::Symlink(read_link_keeping_atime(path, meta)?)
        } else if t.is_fifo() {
            What::Special(Kind::Fifo)
        } else if t.is_socket() {
            What::Special(Kind::Socket)
        } else if t.is_char_device() {
            What::Special(Kind::CharDevice)
        } else if t.is_block_device() {
            What::Special(Kind::BlockDevice)
        } else {
            What::File(self.classify(path)?)
        })
    }

    /// A regular file by its first bytes, as the old mount classified it.
    fn classify(&self, path: &Path) -> io::Result<Content> {
        let mut head = [0u8; STUB_LEN + 1];
        let mut n = 0;
        let mut f = open_noatime(path)?;
        while n < head.len() {
            match f.read(head.get_mut(n..).unwrap_or_default())? {
                0 => break,
                k => n += k,
            }
        }
        let head = head.get(..n).unwrap_or_default();
        if let Some(id) = stub_id(head) {
            let object = self.root.join(WORK_DIR).join("objects").join(format!("{id}.at1"));
            return match fs::metadata(&object) {
                Ok(_) => Ok(Content::Stub(Some(object))),
                // Never written: an empty file.
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Content::Stub(None)),
                Err(e) => Err(e),
            };
        }
        if head.starts_with(&MAGIC) {
            return Ok(Content::Bare);
        }
        Ok(Content::Plain)
    }
}

/// The id of a stub, if `head` (the file's first bytes, up to one past a
/// stub's length) is one.
fn stub_id(head: &[u8]) -> Option<&str> {
    if head.len() != STUB_LEN || !head.starts_with(STUB_MAGIC) || head.last() != Some(&b'\n') {
        return None;
    }
    let id = head.get(STUB_MAGIC.len()..STUB_LEN - 1)?;
    if id.len() == ID_HEX && id.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)) {
        std::str::from_utf8(id).ok()
    } else {
        None
    }
}

/// A symlink's target. Reading it may update the symlink's atime (no
/// `O_NOATIME` for `readlink`): if it did, the atime is put back as it was
/// (which changes the symlink's ctime, as tar's `--atime-preserve` does).
fn read_link_keeping_atime(path: &Path, meta: &Metadata) -> io::Result<Vec<u8>> {
    let target = fs::read_link(path)?.into_os_string().into_vec();
    let after = fs::symlink_metadata(path)?;
    if (after.atime(), after.atime_nsec()) != (meta.atime(), meta.atime_nsec()) {
        let times = [libc::timespec { tv_sec: meta.atime(), tv_nsec: meta.atime_nsec() }, libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT }];
        let c = cpath(path)?;
        // SAFETY: a valid C path and two timespecs.
        if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(target)
}

/// A dropped-in object `x.at1` was shown as `x` when `x` was free.
fn shown_name_of_object(tree_name: &[u8], taken: &HashSet<&[u8]>) -> Vec<u8> {
    match tree_name.strip_suffix(OBJECT_SUFFIX) {
        Some(stem) if !stem.is_empty() && !taken.contains(stem) => stem.to_vec(),
        _ => tree_name.to_vec(),
    }
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// The stored extended attributes of `path` (not following a symlink),
/// by name; none where the filesystem has none.
pub(crate) fn xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let p = cpath(path)?;
    let list = loop {
        // SAFETY: a null buffer of size 0 asks for the size only.
        let size = unsafe { libc::llistxattr(p.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOTSUP) {
                return Ok(Vec::new());
            }
            return Err(e);
        }
        let mut buf = vec![0u8; size as usize];
        // SAFETY: buf has `buf.len()` bytes.
        let n = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(n as usize);
            break buf;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e); // ERANGE: the list grew in between; ask again
        }
    };
    let mut out = Vec::new();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty() && !n.starts_with(VIRTUAL_PREFIX)) {
        if let Some(value) = xattr_value(&p, name)? {
            out.push((name.to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}

fn xattr_value(path: &CString, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let n = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    loop {
        // SAFETY: a null buffer of size 0 asks for the size only.
        let size = unsafe { libc::lgetxattr(path.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::ENODATA) { Ok(None) } else { Err(e) };
        }
        let mut buf = vec![0u8; size as usize];
        // SAFETY: buf has `buf.len()` bytes.
        let got = unsafe { libc::lgetxattr(path.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(Some(buf));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
    }
}

/// A file's content as the mount showed it: its length and SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Digest {
    pub len: u64,
    pub sha256: [u8; 32],
}

/// Why a file's old content could not be digested.
#[derive(Debug)]
pub(crate) enum DigestError {
    Io(io::Error),
    /// Its object does not decode to what its trailer says.
    Damaged(String),
}

/// A writer that only hashes and counts.
struct Hashing {
    sha: sha2::Sha256,
    len: u64,
}

impl io::Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sha.update(buf);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn finish(h: Hashing) -> Digest {
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(&h.sha.finalize());
    Digest { len: h.len, sha256 }
}

/// The content of regular file `entry` as the mount served it: an
/// object's bytes decoded whole, whose SHA-256 must be the one its
/// trailer records; raw bytes as they are.
pub(crate) fn digest(entry: &Entry) -> Result<Digest, DigestError> {
    let object = match &entry.what {
        What::File(Content::Stub(None)) => return Ok(finish(Hashing { sha: sha2::Sha256::new(), len: 0 })),
        What::File(Content::Stub(Some(object))) => object.as_path(),
        What::File(Content::Bare) => entry.path.as_path(),
        What::File(Content::Plain) => {
            let mut h = Hashing { sha: sha2::Sha256::new(), len: 0 };
            io::copy(&mut open_noatime(&entry.path).map_err(DigestError::Io)?, &mut h).map_err(DigestError::Io)?;
            return Ok(finish(h));
        }
        _ => return Err(DigestError::Io(io::Error::from_raw_os_error(libc::EINVAL))),
    };
    let damaged = |e: at1_core::reader::ReadError| match e {
        at1_core::reader::ReadError::Io(io) => DigestError::Io(io),
        other => DigestError::Damaged(format!("object {}: {other}", object.display())),
    };
    let parsed = Arc::new(Object::open_file(open_noatime(object).map_err(DigestError::Io)?).map_err(damaged)?);
    let (recorded_len, recorded_sha) = (parsed.original_len(), parsed.trailer().original_sha256);
    let mut h = Hashing { sha: sha2::Sha256::new(), len: 0 };
    Reader::new(parsed, None).extract(&mut h, |_| {}).map_err(damaged)?;
    let decoded = finish(h);
    if decoded.len != recorded_len || decoded.sha256 != recorded_sha {
        return Err(DigestError::Damaged(format!("object {}: decodes to other bytes than its trailer records", object.display())));
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stubs_are_told_by_their_exact_form() {
        let id = "0123456789abcdef0123456789abcdef";
        let stub = format!("AT1STUB1\n{id}\n");
        assert_eq!(stub_id(stub.as_bytes()), Some(id));
        assert_eq!(stub_id(format!("{stub}x").as_bytes()), None, "one byte more is a plain file");
        assert_eq!(stub_id(format!("AT1STUB1\n{}\n", id.to_uppercase()).as_bytes()), None);
        assert_eq!(stub_id(b"AT1STUB1\n"), None);
    }

    #[test]
    fn a_dropped_in_object_is_shown_without_its_suffix_when_that_name_is_free() {
        let taken: HashSet<&[u8]> = [b"report".as_slice(), b"report.at1", b"log.at1", b".at1"].into_iter().collect();
        assert_eq!(shown_name_of_object(b"log.at1", &taken), b"log");
        assert_eq!(shown_name_of_object(b"report.at1", &taken), b"report.at1", "`report` is taken");
        assert_eq!(shown_name_of_object(b".at1", &taken), b".at1", "no empty name");
    }

    #[test]
    fn odd_bytes_are_escaped_in_messages() {
        assert_eq!(show(b"/a b/\xff\n\\"), "/a b/\\xff\\x0a\\x5c");
    }
}
