//! Attributes: what `stat` shows, and `setattr` (chmod, chown, utimens,
//! truncate).
//!
//! A managed file shows its stub's mode, owner, times and inode number; its
//! size is the original size of its object (from the object's trailer: `ls
//! -l` decodes nothing), or the staging size while it is being written; its
//! block count is the object's stored size, so `du` shows what the file
//! really costs; `nlink` leaves out the hidden `inodes/` link.

use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo, Request, TimeOrNow};

use super::error::{errno, FsResult};
use super::inode::{NodeKind, CONTROL_DIR, SQL_FILE, STATS_FILE};
use super::At1Fs;
use crate::store::RegularKind;

/// Identity of an object file for the size cache: (dev, ino, len, ctime
/// seconds, ctime nanoseconds).
pub type ObjectFileKey = (u64, u64, u64, i64, i64);

/// A setattr request.
pub struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeOrNow>,
    pub mtime: Option<TimeOrNow>,
    pub fh: Option<u64>,
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nsecs as u64)
    }
}

pub fn file_type_of(t: &std::fs::FileType) -> FileType {
    if t.is_dir() {
        FileType::Directory
    } else if t.is_symlink() {
        FileType::Symlink
    } else if t.is_fifo() {
        FileType::NamedPipe
    } else if t.is_socket() {
        FileType::Socket
    } else if t.is_char_device() {
        FileType::CharDevice
    } else if t.is_block_device() {
        FileType::BlockDevice
    } else {
        FileType::RegularFile
    }
}

/// The attributes of a backing entry, before any override.
pub fn attr_of_meta(meta: &Metadata) -> FileAttr {
    FileAttr {
        ino: INodeNo(meta.ino()),
        size: meta.size(),
        blocks: meta.blocks(),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: file_type_of(&meta.file_type()),
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev() as u32,
        blksize: 4096,
        flags: 0,
    }
}

fn virtual_attr(ino: u64, kind: FileType, perm: u16, started: SystemTime) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: started,
        mtime: started,
        ctime: started,
        crtime: started,
        kind,
        perm,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn timespec(t: Option<TimeOrNow>) -> libc::timespec {
    match t {
        None => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        Some(TimeOrNow::Now) => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_NOW },
        Some(TimeOrNow::SpecificTime(st)) => match st.duration_since(UNIX_EPOCH) {
            Ok(d) => libc::timespec { tv_sec: d.as_secs() as i64, tv_nsec: i64::from(d.subsec_nanos()) },
            Err(e) => {
                let d = e.duration();
                let (mut s, mut ns) = (-(d.as_secs() as i64), -i64::from(d.subsec_nanos()));
                if ns < 0 {
                    s -= 1;
                    ns += 1_000_000_000;
                }
                libc::timespec { tv_sec: s, tv_nsec: ns }
            }
        },
    }
}

pub fn set_path_times(path: &Path, atime: Option<TimeOrNow>, mtime: Option<TimeOrNow>) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let ts = [timespec(atime), timespec(mtime)];
    // SAFETY: a valid C path and two timespecs.
    if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl At1Fs {
    /// Attributes of node `ino`.
    pub(super) fn attr(&self, ino: u64) -> FsResult<FileAttr> {
        let started = SystemTime::now() - self.started.elapsed();
        match ino {
            CONTROL_DIR => return Ok(virtual_attr(ino, FileType::Directory, 0o555, started)),
            STATS_FILE => return Ok(virtual_attr(ino, FileType::RegularFile, 0o444, started)),
            SQL_FILE => return Ok(virtual_attr(ino, FileType::RegularFile, 0o666, started)),
            _ => {}
        }
        let (kind, state) = {
            let table = self.table();
            let node = table.get(ino).ok_or_else(|| errno(libc::ENOENT))?;
            (node.kind.clone(), node.file.clone())
        };
        let path = self.meta_path(ino)?;
        let meta = std::fs::symlink_metadata(&path)?;
        let mut attr = attr_of_meta(&meta);
        attr.ino = INodeNo(ino);
        if let NodeKind::Regular(rk) = &kind {
            let (original, stored) = self.content_size(rk, ino, &meta)?;
            attr.size = state.staged_len().unwrap_or(original);
            if let Some(t) = state.staged_mtime() {
                // An uncommitted change: it changed both times already.
                attr.mtime = t;
                attr.ctime = attr.ctime.max(t);
            }
            attr.blocks = stored.div_ceil(512);
            if matches!(rk, RegularKind::Managed(_)) {
                attr.nlink = attr.nlink.saturating_sub(1);
            }
        }
        Ok(attr)
    }

    /// (original size, stored size) of a regular file's committed content.
    pub(super) fn content_size(&self, kind: &RegularKind, ino: u64, meta: &Metadata) -> FsResult<(u64, u64)> {
        match kind {
            RegularKind::Managed(id) => match std::fs::metadata(self.store.object_path(id)) {
                Ok(m) => Ok((self.original_len(&self.store.object_path(id), &m)?, m.len())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((0, 0)),
                Err(e) => Err(e.into()),
            },
            RegularKind::Bare => Ok((self.original_len(&self.tree_path(ino)?, meta)?, meta.len())),
            RegularKind::Plain => Ok((meta.len(), meta.blocks() * 512)),
        }
    }

    /// The original length recorded in an object's trailer, cached by the
    /// object file's identity. Objects never change in place, but a deleted
    /// object's inode number is reused by later ones — possibly with the
    /// same length — so the key has the change time to the nanosecond too.
    fn original_len(&self, path: &Path, meta: &Metadata) -> FsResult<u64> {
        let key = (meta.dev(), meta.ino(), meta.len(), meta.ctime(), meta.ctime_nsec());
        if let Some(&n) = self.sizes.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(n);
        }
        let trailer = crate::reader::read_trailer(path)?;
        let mut sizes = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
        if sizes.len() > 100_000 {
            sizes.clear();
        }
        sizes.insert(key, trailer.original_len);
        Ok(trailer.original_len)
    }

    pub(super) fn set_attr(&self, _req: &Request, ino: u64, c: AttrChange) -> FsResult<FileAttr> {
        if ino == SQL_FILE && c.mode.is_none() && c.uid.is_none() && c.gid.is_none() {
            // `echo q > .at1/sql` truncates first; there is nothing to cut.
            return self.attr(ino);
        }
        if super::inode::is_control(ino) {
            return Err(errno(libc::EPERM));
        }
        if c.mode.is_some() || c.uid.is_some() || c.gid.is_some() || c.size.is_some() || c.atime.is_some() || c.mtime.is_some() {
            self.check_writable()?;
        }
        let path = self.meta_path(ino)?;
        if let Some(size) = c.size {
            self.truncate(ino, size, c.fh)?;
        }
        if c.uid.is_some() || c.gid.is_some() {
            std::os::unix::fs::lchown(&path, c.uid, c.gid)?;
        }
        if let Some(mode) = c.mode {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))?;
        }
        if c.atime.is_some() || c.mtime.is_some() {
            set_path_times(&path, c.atime, c.mtime)?;
            if let Some(m) = c.mtime {
                self.note_explicit_mtime(ino, m);
            }
        }
        self.attr(ino)
    }

    pub(super) fn statfs_store(&self) -> FsResult<libc::statvfs> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(self.store.root().as_os_str().as_bytes()).map_err(|_| errno(libc::EINVAL))?;
        // SAFETY: zeroed statvfs is a valid out-parameter.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid path and out pointer.
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(s)
    }
}
