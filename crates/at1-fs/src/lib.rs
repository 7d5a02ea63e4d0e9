//! The FUSE adapter: kernel requests become volume calls, volume errors
//! become errno (`error.rs`), and the mount root gains the virtual `.at1/`
//! directory (`control.rs`: `stats`; `sql.rs`: queries as their caller).
//! No meaning of its own: names, contents, commits and durability are the
//! volume's (`at1-volume`). Promises and refusals are in docs/SEMANTICS.md.

pub mod control;
pub mod error;
mod invalidate;
mod readahead;
pub mod sql;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};

use at1_volume::files::OpenFlags as VolumeOpenFlags;
use at1_volume::stats::Stats;
use at1_volume::Kind;
use at1_volume::{Attr, OpenFile, Owner, RenameMode, SetAttr, TimeSet, Volume};

use control::{is_control, CONTROL_DIR, CONTROL_NAME, SQL_FILE, STATS_FILE};
use error::{errno, FsError, FsResult};

/// How long the kernel may cache attributes and names. Short: a commit
/// changes a file's size and blocks after the writes the kernel saw.
const TTL: Duration = Duration::from_secs(1);
/// The root's inode number (FUSE's and the volume's).
const ROOT: u64 = 1;

/// Settings of a mount beyond the volume's.
#[derive(Debug, Clone)]
pub struct MountConfig {
    pub sql: sql::SqlConfig,
}

/// An entry of a directory listing, taken at `opendir`.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: FileType,
    pub name: Vec<u8>,
}

enum Handle {
    Dir(Vec<DirEntry>),
    /// A control file's bytes, fixed at open.
    Control(Vec<u8>),
    Sql(Arc<sql::SqlHandle>),
    File(Arc<OpenFile>),
}

/// The mounted filesystem.
pub struct At1Fs {
    volume: Arc<Volume>,
    stats: Arc<Stats>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_handle: AtomicU64,
    read_ahead: readahead::ReadAhead,
    sql: Arc<sql::SqlService>,
    started: SystemTime,
    /// Set once the session exists, to drop the kernel's cached pages.
    notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
    /// Those notifications in flight (a close waits for its file's).
    invalidations: Arc<invalidate::Invalidations>,
}

pub fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
    }
}

fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn nanos(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(st) => TimeSet::At(nanos(st)),
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: system_time(a.atime),
        mtime: system_time(a.mtime),
        ctime: system_time(a.ctime),
        crtime: UNIX_EPOCH,
        kind: file_type(a.kind),
        perm: (a.perm & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 4096,
        flags: 0,
    }
}

fn owner(req: &Request) -> Owner {
    Owner { uid: req.uid(), gid: req.gid() }
}

impl At1Fs {
    pub fn new(volume: Arc<Volume>, cfg: &MountConfig) -> Self {
        let stats = volume.stats();
        let cache = volume.cache();
        // Decoding ahead is only worth it where the result can be kept.
        let read_ahead = readahead::ReadAhead::start(cache.capacity() > 0, stats.clone());
        let scratch = volume.store_dir().staging();
        let sql = Arc::new(sql::SqlService::new(volume.clone(), scratch, cache, stats.clone(), &cfg.sql));
        let notifier: Arc<std::sync::OnceLock<fuser::Notifier>> = Arc::new(std::sync::OnceLock::new());
        let invalidations = Arc::new(invalidate::Invalidations::default());
        let (slot, pending) = (notifier.clone(), invalidations.clone());
        volume.set_invalidator(Arc::new(move |ino| pending.send(&slot, ino)));
        Self {
            volume,
            stats,
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            read_ahead,
            sql,
            started: SystemTime::now(),
            notifier,
            invalidations,
        }
    }

    pub fn volume(&self) -> Arc<Volume> {
        self.volume.clone()
    }

    /// Where the session's notifier goes once the session is created.
    pub fn notifier_slot(&self) -> Arc<std::sync::OnceLock<fuser::Notifier>> {
        self.notifier.clone()
    }

    fn new_handle(&self, h: Handle) -> u64 {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().unwrap_or_else(|e| e.into_inner()).insert(fh, Arc::new(h));
        fh
    }

    fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner()).get(&fh).cloned().ok_or_else(|| errno(libc::EBADF))
    }

    fn take_handle(&self, fh: u64) -> Option<Arc<Handle>> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner()).remove(&fh)
    }

    fn file(&self, fh: u64) -> FsResult<Arc<OpenFile>> {
        match &*self.handle(fh)? {
            Handle::File(f) => Ok(f.clone()),
            _ => Err(errno(libc::EBADF)),
        }
    }

    /// The `.at1/sql` handle `fh`, if it is one: its requests are answered
    /// by the query service, not through [`finish`].
    fn sql_handle(&self, fh: u64) -> Option<Arc<sql::SqlHandle>> {
        match &*self.handle(fh).ok()? {
            Handle::Sql(h) => Some(h.clone()),
            _ => None,
        }
    }

    /// `name` in the root is the control directory, which no operation may
    /// create, replace or remove; nothing is made inside it.
    fn refuse_control_name(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        if parent == ROOT && name == CONTROL_NAME {
            return Err(FsError::refused(libc::EPERM, ".at1 is the control directory"));
        }
        if parent == CONTROL_DIR {
            return Err(FsError::refused(libc::EPERM, ".at1 is read-only"));
        }
        Ok(())
    }

    fn attr(&self, ino: u64) -> FsResult<FileAttr> {
        if let Some(a) = control::control_attr(ino, self.started) {
            return Ok(a);
        }
        Ok(file_attr(&self.volume.getattr(ino)?))
    }

    fn lookup_child(&self, parent: u64, name: &OsStr) -> FsResult<FileAttr> {
        fault_injection::maybe_panic(name);
        if parent == CONTROL_DIR {
            return match name.as_bytes() {
                b"stats" => self.attr(STATS_FILE),
                b"sql" => self.attr(SQL_FILE),
                _ => Err(errno(libc::ENOENT)),
            };
        }
        if parent == ROOT && name == CONTROL_NAME {
            return self.attr(CONTROL_DIR);
        }
        Ok(file_attr(&self.volume.lookup(parent, name.as_bytes())?))
    }

    fn set_attr(&self, ino: u64, change: SetAttr) -> FsResult<FileAttr> {
        if ino == SQL_FILE && change.perm.is_none() && change.uid.is_none() && change.gid.is_none() {
            // `echo q > .at1/sql` truncates first; there is nothing to cut.
            return self.attr(ino);
        }
        if is_control(ino) {
            return Err(errno(libc::EPERM));
        }
        Ok(file_attr(&self.volume.setattr(ino, &change)?))
    }

    fn make(&self, parent: u64, name: &OsStr, make: impl FnOnce(&Volume, &[u8]) -> at1_volume::VResult<Attr>) -> FsResult<FileAttr> {
        self.refuse_control_name(parent, name)?;
        Ok(file_attr(&make(&self.volume, name.as_bytes())?))
    }

    fn open_file(&self, ino: u64, flags: i32, req: &Request) -> FsResult<(u64, FopenFlags)> {
        if ino == SQL_FILE {
            let handle = self.sql.open(sql::SessionKey::of(req.pid(), req.uid()));
            return Ok((self.new_handle(Handle::Sql(Arc::new(handle))), FopenFlags::FOPEN_DIRECT_IO));
        }
        if ino == STATS_FILE {
            if flags & libc::O_ACCMODE != libc::O_RDONLY {
                return Err(FsError::refused(libc::EPERM, ".at1/stats is read-only"));
            }
            let bytes = self.stats_json().into_bytes();
            return Ok((self.new_handle(Handle::Control(bytes)), FopenFlags::FOPEN_DIRECT_IO));
        }
        if is_control(ino) {
            return Err(errno(libc::EISDIR));
        }
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let being_written = !write && self.volume.has_writers(ino);
        let handle = self.volume.open_file(ino, VolumeOpenFlags { write, truncate: flags & libc::O_TRUNC != 0 })?;
        // A write is in progress: read the committed version without the
        // page cache, which already holds the writer's pages.
        let fopen = if being_written { FopenFlags::FOPEN_DIRECT_IO } else { FopenFlags::empty() };
        Ok((self.new_handle(Handle::File(handle)), fopen))
    }

    fn read_file(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        match &*self.handle(fh)? {
            Handle::Control(bytes) => {
                let start = (offset as usize).min(bytes.len());
                let end = start.saturating_add(size as usize).min(bytes.len());
                Ok(bytes.get(start..end).unwrap_or_default().to_vec())
            }
            Handle::Dir(_) => Err(errno(libc::EISDIR)),
            Handle::Sql(_) => Err(errno(libc::EBADF)), // answered by the SQL service
            Handle::File(f) => {
                if readahead::ReadAhead::is_sequential(offset, f.last_end.load(Ordering::Relaxed)) {
                    if let Ok(Some((reader, at))) = self.volume.reader_for(f, offset) {
                        self.read_ahead.after(&reader, at);
                    }
                }
                Ok(self.volume.read(f, offset, size)?)
            }
        }
    }

    fn open_dir(&self, ino: u64) -> FsResult<u64> {
        let dot = |name: &str, ino: u64| DirEntry { ino, kind: FileType::Directory, name: name.as_bytes().to_vec() };
        if ino == CONTROL_DIR {
            let entries = vec![
                dot(".", ino),
                dot("..", ROOT),
                DirEntry { ino: STATS_FILE, kind: FileType::RegularFile, name: b"stats".to_vec() },
                DirEntry { ino: SQL_FILE, kind: FileType::RegularFile, name: b"sql".to_vec() },
            ];
            return Ok(self.new_handle(Handle::Dir(entries)));
        }
        let mut entries = vec![dot(".", ino), dot("..", self.volume.parent_of(ino)?)];
        if ino == ROOT {
            entries.push(dot(CONTROL_NAME, CONTROL_DIR));
        }
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.volume.readdir(ino, after.as_deref(), 1024)?;
            let Some(last) = page.last() else { break };
            after = Some(last.name.clone());
            entries.extend(page.into_iter().map(|e| DirEntry { ino: e.ino, kind: file_type(e.kind), name: e.name }));
        }
        Ok(self.new_handle(Handle::Dir(entries)))
    }
}

/// A reply that can carry an errno (every fuser reply type).
trait ErrorReply {
    fn fail(self, e: Errno);
}

macro_rules! error_reply {
    ($($t:ty),*) => {$(impl ErrorReply for $t { fn fail(self, e: Errno) { self.error(e) } })*};
}
error_reply!(ReplyEntry, ReplyAttr, ReplyData, ReplyEmpty, ReplyOpen, ReplyWrite, ReplyStatfs, ReplyXattr, ReplyCreate, ReplyDirectory);

/// Sends the result of an operation: `ok` on success; on failure the
/// error's errno, after logging it at its level.
fn finish<T, R: ErrorReply>(op: &str, result: FsResult<T>, reply: R, ok: impl FnOnce(R, T)) {
    match result {
        Ok(v) => ok(reply, v),
        Err(e) => {
            e.log(op);
            reply.fail(e.errno());
        }
    }
}

/// Answers one request: runs `compute` (panics caught, see [`caught`]),
/// then replies once with its result.
fn answer<T, R: ErrorReply>(op: &str, reply: R, compute: impl FnOnce() -> FsResult<T>, ok: impl FnOnce(R, T)) {
    finish(op, caught(op, compute), reply, ok);
}

/// Runs a request's computation. A panic in it (a bug, or an object no
/// check foresaw) becomes an error answered with EIO and logged, instead of
/// unwinding through fuser's request loop, which would end the whole mount.
/// The reply is not inside: it is sent once, after this returns.
fn caught<T>(op: &str, compute: impl FnOnce() -> FsResult<T>) -> FsResult<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(compute)).unwrap_or_else(|payload| {
        let what = payload.downcast_ref::<&str>().copied().or_else(|| payload.downcast_ref::<String>().map(String::as_str)).unwrap_or("unknown panic");
        Err(FsError::Panicked(format!("{op}: {what}")))
    })
}

/// Replies with `value`, or only its size when `size` is 0 (the size-probe
/// protocol), or ERANGE when it does not fit.
fn reply_sized(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

fn rename_mode(flags: u32) -> FsResult<RenameMode> {
    match flags {
        0 => Ok(RenameMode::Replace),
        f if f == libc::RENAME_NOREPLACE => Ok(RenameMode::NoReplace),
        f if f == libc::RENAME_EXCHANGE => Ok(RenameMode::Exchange),
        _ => Err(errno(libc::EINVAL)),
    }
}

impl Filesystem for At1Fs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // O_TRUNC arrives with open (so a truncating open starts an empty
        // staging file instead of committing an empty object first).
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.volume.close() {
            log::error!("closing the volume: {e}");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        answer("lookup", reply, || self.lookup_child(parent.0, name), |r, a| r.entry(&TTL, &a, Generation(0)));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        answer("getattr", reply, || self.attr(ino.0), |r, a| r.attr(&TTL, &a));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = SetAttr { perm: mode, uid, gid, size, atime: atime.map(time_set), mtime: mtime.map(time_set) };
        answer("setattr", reply, || self.set_attr(ino.0, change), |r, a| r.attr(&TTL, &a));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        answer("readlink", reply, || self.volume.readlink(ino.0).map_err(FsError::from), |r, t| r.data(&t));
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let kind = if mode & libc::S_IFMT == 0 { Some(Kind::File) } else { Kind::from_mode(mode) };
        let compute = || match kind {
            Some(kind) => self.make(parent.0, name, |v, n| v.mknod(parent.0, n, kind, mode & !umask, rdev, owner(req))),
            None => Err(errno(libc::EINVAL)),
        };
        answer("mknod", reply, compute, |r, a| r.entry(&TTL, &a, Generation(0)));
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let compute = || self.make(parent.0, name, |v, n| v.mkdir(parent.0, n, mode & !umask, owner(req)));
        answer("mkdir", reply, compute, |r, a| r.entry(&TTL, &a, Generation(0)));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let compute = || self.refuse_control_name(parent.0, name).and_then(|()| Ok(self.volume.unlink(parent.0, name.as_bytes())?));
        answer("unlink", reply, compute, |r, ()| r.ok());
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let compute = || self.refuse_control_name(parent.0, name).and_then(|()| Ok(self.volume.rmdir(parent.0, name.as_bytes())?));
        answer("rmdir", reply, compute, |r, ()| r.ok());
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let compute = || self.make(parent.0, link_name, |v, n| v.symlink(parent.0, n, target.as_os_str().as_bytes(), owner(req)));
        answer("symlink", reply, compute, |r, a| r.entry(&TTL, &a, Generation(0)));
    }

    fn rename(&self, _req: &Request, parent: INodeNo, name: &OsStr, newparent: INodeNo, newname: &OsStr, flags: RenameFlags, reply: ReplyEmpty) {
        let compute = || {
            self.refuse_control_name(parent.0, name).and_then(|()| self.refuse_control_name(newparent.0, newname)).and_then(|()| {
                let mode = rename_mode(flags.bits())?;
                Ok(self.volume.rename(parent.0, name.as_bytes(), newparent.0, newname.as_bytes(), mode)?)
            })
        };
        answer("rename", reply, compute, |r, ()| r.ok());
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let compute = || if is_control(ino.0) { Err(errno(libc::EPERM)) } else { self.make(newparent.0, newname, |v, n| v.link(ino.0, newparent.0, n)) };
        answer("link", reply, compute, |r, a| r.entry(&TTL, &a, Generation(0)));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        answer("open", reply, || self.open_file(ino.0, flags.0, req), |r, (fh, f)| r.opened(FileHandle(fh), f));
    }

    fn read(&self, req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, size: u32, _flags: OpenFlags, _lock: Option<LockOwner>, reply: ReplyData) {
        if let Some(h) = self.sql_handle(fh.0) {
            return self.sql.read(sql::Requester::of(req), h, offset, size, reply);
        }
        answer("read", reply, || self.read_file(fh.0, offset, size), |r, d| r.data(&d));
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if let Some(h) = self.sql_handle(fh.0) {
            return self.sql.write(sql::Requester::of(req), h, offset, data, reply);
        }
        let compute = || self.file(fh.0).and_then(|f| Ok(self.volume.write(&f, offset, data)?));
        answer("write", reply, compute, |r, n| r.written(n));
    }

    fn flush(&self, req: &Request, _ino: INodeNo, fh: FileHandle, _lock: LockOwner, reply: ReplyEmpty) {
        if let Some(h) = self.sql_handle(fh.0) {
            return self.sql.flush(sql::Requester::of(req), h, reply);
        }
        let compute = || match self.handle(fh.0).map(|h| match &*h {
            Handle::File(f) => Some(f.clone()),
            _ => None,
        }) {
            Ok(Some(f)) => {
                let result = self.volume.flush(&f).map_err(FsError::from);
                // The close returns once the kernel holds no page of the
                // old (or the rejected) content.
                if f.write {
                    self.invalidations.wait(f.ino, invalidate::CLOSE_WAIT);
                }
                result
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        answer("flush", reply, compute, |r, ()| r.ok());
    }

    fn release(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, _lock: Option<LockOwner>, _flush: bool, reply: ReplyEmpty) {
        let compute = || match self.take_handle(fh.0).as_deref() {
            Some(Handle::File(f)) => self.volume.release(f).map_err(FsError::from),
            _ => Ok(()),
        };
        answer("release", reply, compute, |r, ()| r.ok());
    }

    fn fsync(&self, req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        if let Some(h) = self.sql_handle(fh.0) {
            return self.sql.flush(sql::Requester::of(req), h, reply);
        }
        let compute = || self.file(fh.0).and_then(|f| Ok(self.volume.fsync(&f)?));
        answer("fsync", reply, compute, |r, ()| r.ok());
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        answer("opendir", reply, || self.open_dir(ino.0), |r, fh| r.opened(FileHandle(fh), FopenFlags::empty()));
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        match self.handle(fh.0) {
            Ok(h) => {
                if let Handle::Dir(entries) = &*h {
                    for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                        if reply.add(INodeNo(e.ino), (i + 1) as u64, e.kind, OsStr::from_bytes(&e.name)) {
                            break;
                        }
                    }
                    reply.ok();
                } else {
                    reply.error(Errno::ENOTDIR);
                }
            }
            Err(e) => reply.error(e.errno()),
        }
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.take_handle(fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        answer("fsyncdir", reply, || self.volume.sync().map_err(FsError::from), |r, ()| r.ok());
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        answer(
            "statfs",
            reply,
            || self.volume.statfs().map_err(FsError::from),
            |r, s| r.statfs(s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize),
        );
    }

    fn setxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, value: &[u8], flags: i32, _position: u32, reply: ReplyEmpty) {
        let compute = || {
            if is_control(ino.0) {
                Err(FsError::refused(libc::EPERM, ".at1 has no attributes to set"))
            } else {
                self.volume.setxattr(ino.0, name.as_bytes(), value, flags).map_err(FsError::from)
            }
        };
        answer("setxattr", reply, compute, |r, ()| r.ok());
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let compute = || if is_control(ino.0) { Err(errno(libc::ENODATA)) } else { self.volume.getxattr(ino.0, name.as_bytes()).map_err(FsError::from) };
        answer("getxattr", reply, compute, |r, v| reply_sized(r, &v, size));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let compute = || {
            if is_control(ino.0) {
                Ok(Vec::new())
            } else {
                self.volume
                    .listxattr(ino.0)
                    .map(|names| {
                        names
                            .into_iter()
                            .flat_map(|mut n| {
                                n.push(0);
                                n
                            })
                            .collect::<Vec<u8>>()
                    })
                    .map_err(FsError::from)
            }
        };
        answer("listxattr", reply, compute, |r, v| reply_sized(r, &v, size));
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let compute = || {
            if is_control(ino.0) {
                Err(FsError::refused(libc::EPERM, ".at1 has no attributes to remove"))
            } else {
                self.volume.removexattr(ino.0, name.as_bytes()).map_err(FsError::from)
            }
        };
        answer("removexattr", reply, compute, |r, ()| r.ok());
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // default_permissions makes the kernel check; reaching here means
        // the node exists.
        answer("access", reply, || self.attr(ino.0).map(|_| ()), |r, ()| r.ok());
    }

    fn create(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, flags: i32, reply: ReplyCreate) {
        let compute = || {
            self.refuse_control_name(parent.0, name).and_then(|()| {
                let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
                let (attr, handle) = self.volume.create(
                    parent.0,
                    name.as_bytes(),
                    mode & !umask,
                    owner(req),
                    VolumeOpenFlags { write, truncate: flags & libc::O_TRUNC != 0 },
                )?;
                Ok((file_attr(&attr), self.new_handle(Handle::File(handle))))
            })
        };
        answer("create", reply, compute, |r, (a, fh)| r.created(&TTL, &a, Generation(0), FileHandle(fh), FopenFlags::empty()));
    }

    fn fallocate(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, length: u64, mode: i32, reply: ReplyEmpty) {
        let compute = || self.file(fh.0).and_then(|f| Ok(self.volume.fallocate(&f, offset, length, mode)?));
        answer("fallocate", reply, compute, |r, ()| r.ok());
    }
}

/// Test-only fault injection (feature `fault-injection`): looking up
/// [`fault_injection::PANIC_NAME`] panics inside the request, so tests can
/// see a panicking request answered with EIO while the mount keeps
/// serving. Without the feature it does nothing.
pub mod fault_injection {
    /// The name whose lookup panics when the feature is on.
    pub const PANIC_NAME: &str = "at1-fault-injection-panic";

    #[allow(clippy::panic)]
    pub fn maybe_panic(name: &std::ffi::OsStr) {
        if cfg!(feature = "fault-injection") && name == PANIC_NAME {
            panic!("fault injection: lookup of {PANIC_NAME}");
        }
    }
}
