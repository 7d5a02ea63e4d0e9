//! The FUSE adapter: translates kernel requests into store, gate and reader
//! calls. Promises and refusals are in docs/SEMANTICS.md.
//!
//! - [`inode`]: node ids, names, per-file write state;
//! - [`names`]: lookup, create, mkdir, mknod, symlink, link, unlink, rmdir,
//!   rename, readdir;
//! - [`file`]: open, read, write, flush, fsync, release, truncate — the
//!   staging file and the commit through the gate;
//! - [`attr`]: attributes and setattr;
//! - [`xattr`]: user xattrs and the read-only `user.at1.*` ones;
//! - [`control`]: the virtual `.at1/` directory (`stats`, `sql`);
//! - [`error`]: every errno, in one place.

mod attr;
pub mod control;
pub mod error;
mod file;
pub mod inode;
mod names;
mod readahead;
pub mod sql;
mod xattr;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::gate::GateConfig;
use crate::reader::BlockCache;
use crate::stats::Stats;
use crate::store::{Anchored, Store};
use error::{FsError, FsResult};
use file::Handle;
use inode::{InodeTable, NodeKind};

/// How long the kernel may cache attributes and names. Short: the daemon is
/// the only writer of the store, but a commit changes a file's size and
/// blocks after the writes that the kernel saw.
const TTL: Duration = Duration::from_secs(1);

/// Settings of a mount.
#[derive(Debug, Clone)]
pub struct MountConfig {
    pub gate: GateConfig,
    /// Bytes of decoded blocks kept in memory.
    pub cache_size: u64,
    /// Refuse every change (EROFS). Enforced here, not by a read-only
    /// kernel mount, which would refuse writes to `.at1/sql` too.
    pub read_only: bool,
    pub sql: sql::SqlConfig,
}

/// The mounted filesystem.
pub struct At1Fs {
    store: Store,
    cfg: MountConfig,
    table: RwLock<InodeTable>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_handle: AtomicU64,
    cache: Arc<BlockCache>,
    stats: Arc<Stats>,
    started: Instant,
    /// Decodes ahead of files read front to back.
    read_ahead: readahead::ReadAhead,
    /// Original sizes by object file identity.
    sizes: Mutex<HashMap<attr::ObjectFileKey, u64>>,
    /// `.at1/sql`: the query pool and each session's latest result.
    sql: Arc<sql::SqlService>,
    /// Set once the session exists, to invalidate kernel caches.
    notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
}

impl At1Fs {
    pub fn new(store: Store, cfg: MountConfig) -> std::io::Result<Self> {
        let meta = std::fs::metadata(store.root())?;
        let table = InodeTable::new(store.root().to_path_buf(), (meta.dev(), meta.ino()));
        let cache = Arc::new(BlockCache::new(cfg.cache_size));
        let stats = Arc::new(Stats::default());
        // Decoding ahead is only worth it where the result can be kept.
        let read_ahead = readahead::ReadAhead::start(cfg.cache_size > 0, stats.clone());
        let sql = Arc::new(sql::SqlService::new(store.root().to_path_buf(), store.staging_dir().to_path_buf(), cache.clone(), stats.clone(), &cfg.sql));
        Ok(Self {
            store,
            cfg,
            table: RwLock::new(table),
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            read_ahead,
            cache,
            stats,
            started: Instant::now(),
            sizes: Mutex::new(HashMap::new()),
            notifier: Arc::new(std::sync::OnceLock::new()),
            sql,
        })
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Where the session's notifier goes once the session is created.
    pub fn notifier_slot(&self) -> Arc<std::sync::OnceLock<fuser::Notifier>> {
        self.notifier.clone()
    }

    fn table(&self) -> std::sync::RwLockReadGuard<'_, InodeTable> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    fn table_mut(&self) -> std::sync::RwLockWriteGuard<'_, InodeTable> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Kind of a node.
    fn kind(&self, ino: u64) -> FsResult<NodeKind> {
        self.table().get(ino).map(|n| n.kind.clone()).ok_or_else(|| error::errno(libc::ENOENT))
    }

    /// The tree path of a node, short enough for system calls however deep
    /// the node is.
    fn tree_path(&self, ino: u64) -> FsResult<Anchored> {
        let path = self.table().tree_path(ino).ok_or_else(|| error::errno(libc::ENOENT))?;
        Ok(Anchored::new(path)?)
    }

    /// The path that carries a node's metadata: the hidden inode link of a
    /// managed file (valid whichever name is used, even after the last name
    /// went), the tree entry otherwise.
    fn meta_path(&self, ino: u64) -> FsResult<Anchored> {
        match self.kind(ino)? {
            NodeKind::Regular(crate::store::RegularKind::Managed(id)) => Ok(Anchored::new(self.store.inode_path(&id))?),
            _ => self.tree_path(ino),
        }
    }

    fn new_handle(&self, h: Handle) -> u64 {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().unwrap_or_else(|e| e.into_inner()).insert(fh, Arc::new(h));
        fh
    }

    fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner()).get(&fh).cloned().ok_or_else(|| error::errno(libc::EBADF))
    }

    /// The `.at1/sql` handle `fh`, if it is one: its requests are answered
    /// by the query pool, not through [`finish`].
    fn sql_handle(&self, fh: u64) -> Option<Arc<sql::SqlHandle>> {
        match &*self.handle(fh).ok()? {
            Handle::Sql(h) => Some(h.clone()),
            _ => None,
        }
    }

    fn take_handle(&self, fh: u64) -> Option<Arc<Handle>> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner()).remove(&fh)
    }

    fn check_writable(&self) -> FsResult<()> {
        if self.cfg.read_only {
            return Err(error::errno(libc::EROFS));
        }
        Ok(())
    }

    /// `name` in the root is the control directory, which no operation may
    /// create, replace or remove.
    fn refuse_control_name(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        if parent == inode::ROOT && name == crate::store::WORK_DIR {
            return Err(FsError::refused(libc::EPERM, ".at1 is the control directory"));
        }
        if parent == inode::CONTROL_DIR {
            return Err(FsError::refused(libc::EPERM, ".at1 is read-only"));
        }
        Ok(())
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

/// Answers one request: runs `compute` (panics caught, see [`caught`]),
/// then replies exactly once, outside the computation: `ok` with its value,
/// or the error's errno.
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

impl Filesystem for At1Fs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // O_TRUNC arrives with open (so a truncating open starts an empty
        // staging file instead of committing an empty object first).
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let lookup = || {
            fault_injection::maybe_panic(name);
            self.lookup_child(parent.0, name)
        };
        answer("lookup", reply, lookup, |r, a| r.entry(&TTL, &a, Generation(0)));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let _ = caught("forget", || {
            self.table_mut().forget(ino.0, nlookup);
            Ok(())
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        answer("getattr", reply, || self.attr(ino.0), |r, a| r.attr(&TTL, &a));
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = attr::AttrChange { mode, uid, gid, size, atime, mtime, fh: fh.map(|f| f.0) };
        answer("setattr", reply, || self.set_attr(req, ino.0, change), |r, a| r.attr(&TTL, &a));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        use std::os::unix::ffi::OsStrExt;
        answer("readlink", reply, || self.tree_path(ino.0).and_then(|p| Ok(std::fs::read_link(&p)?)), |r, t| r.data(t.as_os_str().as_bytes()));
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        answer("mknod", reply, || self.make_node(req, parent.0, name, mode & !umask, rdev), |r, a| r.entry(&TTL, &a, Generation(0)));
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        answer("mkdir", reply, || self.make_dir(req, parent.0, name, mode & !umask), |r, a| r.entry(&TTL, &a, Generation(0)));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer("unlink", reply, || self.remove(parent.0, name, false), |r, ()| r.ok());
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer("rmdir", reply, || self.remove(parent.0, name, true), |r, ()| r.ok());
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        answer("symlink", reply, || self.make_symlink(req, parent.0, link_name, target), |r, a| r.entry(&TTL, &a, Generation(0)));
    }

    fn rename(&self, _req: &Request, parent: INodeNo, name: &OsStr, newparent: INodeNo, newname: &OsStr, flags: RenameFlags, reply: ReplyEmpty) {
        answer("rename", reply, || self.rename_entry(parent.0, name, newparent.0, newname, flags.bits()), |r, ()| r.ok());
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        answer("link", reply, || self.make_link(ino.0, newparent.0, newname), |r, a| r.entry(&TTL, &a, Generation(0)));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        answer("open", reply, || self.open_file(ino.0, flags.0, req), |r, (fh, f)| r.opened(FileHandle(fh), f));
    }

    fn read(&self, req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, size: u32, _flags: OpenFlags, _lock: Option<LockOwner>, reply: ReplyData) {
        if let Some(h) = self.sql_handle(fh.0) {
            return self.sql.read(sql::Requester::of(req), h, offset, size, reply);
        }
        answer("read", reply, || self.read_file(ino.0, fh.0, offset, size), |r, d| r.data(&d));
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
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
        answer("write", reply, || self.write_file(ino.0, fh.0, offset, data), |r, n| r.written(n));
    }

    fn flush(&self, req: &Request, ino: INodeNo, fh: FileHandle, _lock: LockOwner, reply: ReplyEmpty) {
        if let Some(h) = self.sql_handle(fh.0) {
            return self.sql.flush(sql::Requester::of(req), h, reply);
        }
        answer("flush", reply, || self.flush_file(ino.0, fh.0), |r, ()| r.ok());
    }

    fn release(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _flags: OpenFlags, _lock: Option<LockOwner>, _flush: bool, reply: ReplyEmpty) {
        answer("release", reply, || self.release_file(ino.0, fh.0), |r, ()| r.ok());
    }

    fn fsync(&self, req: &Request, ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        if let Some(h) = self.sql_handle(fh.0) {
            return self.sql.flush(sql::Requester::of(req), h, reply);
        }
        answer("fsync", reply, || self.fsync_file(ino.0, fh.0), |r, ()| r.ok());
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        answer("opendir", reply, || self.open_dir(ino.0), |r, fh| r.opened(FileHandle(fh), FopenFlags::empty()));
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        match caught("readdir", || self.handle(fh.0)) {
            Ok(h) => {
                if let Handle::Dir(entries) = &*h {
                    for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                        if reply.add(INodeNo(e.ino), (i + 1) as u64, e.kind, &e.name) {
                            break;
                        }
                    }
                    reply.ok();
                } else {
                    reply.error(Errno::ENOTDIR);
                }
            }
            Err(e) => {
                e.log("readdir");
                reply.error(e.errno());
            }
        }
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        answer("releasedir", reply, || Ok(self.take_handle(fh.0)), |r, _| r.ok());
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        answer("fsyncdir", reply, || self.tree_path(ino.0).and_then(|p| Ok(std::fs::File::open(p)?.sync_all()?)), |r, ()| r.ok());
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        answer(
            "statfs",
            reply,
            || self.statfs_store(),
            |r, s| r.statfs(s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree, s.f_bsize as u32, s.f_namemax as u32, s.f_frsize as u32),
        );
    }

    fn setxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, value: &[u8], flags: i32, _position: u32, reply: ReplyEmpty) {
        answer("setxattr", reply, || self.set_xattr(ino.0, name, value, flags), |r, ()| r.ok());
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        answer("getxattr", reply, || self.get_xattr(ino.0, name), |r, v| xattr::reply_sized(r, &v, size));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        answer("listxattr", reply, || self.list_xattr(ino.0), |r, v| xattr::reply_sized(r, &v, size));
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer("removexattr", reply, || self.remove_xattr(ino.0, name), |r, ()| r.ok());
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // default_permissions makes the kernel check; reaching here means
        // the node exists.
        answer("access", reply, || self.kind(ino.0).map(|_| ()), |r, ()| r.ok());
    }

    fn create(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, flags: i32, reply: ReplyCreate) {
        answer(
            "create",
            reply,
            || self.create_file(req, parent.0, name, mode & !umask, flags),
            |r, (a, fh, f)| r.created(&TTL, &a, Generation(0), FileHandle(fh), f),
        );
    }

    fn fallocate(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, length: u64, mode: i32, reply: ReplyEmpty) {
        answer("fallocate", reply, || self.allocate(ino.0, fh.0, offset, length, mode), |r, ()| r.ok());
    }
}

/// Test-only fault injection (feature `fault-injection`): looking up
/// [`fault_injection::PANIC_NAME`] panics inside the request, so tests can
/// see a panicking request answered with EIO while the mount keeps
/// serving. Compiled to nothing otherwise.
pub mod fault_injection {
    /// The name whose lookup panics when the feature is on.
    pub const PANIC_NAME: &str = "at1-fault-injection-panic";

    pub fn maybe_panic(name: &std::ffi::OsStr) {
        if cfg!(feature = "fault-injection") && name == PANIC_NAME {
            panic!("fault injection: lookup of {PANIC_NAME}");
        }
    }
}
