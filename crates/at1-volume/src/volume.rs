//! The volume: a namespace of inodes in the metadata engine, and the
//! contents of regular files as objects in the object store. Every
//! operation is one metadata transaction that also appends its event to
//! the journal, so it happens whole or not at all (a rename, a link, an
//! unlink are atomic by construction).
//!
//! Permission checks for kernel requests are the kernel's
//! (`default_permissions`); what the volume checks itself is what no
//! kernel sees — a query's path (`resolve`), with [`crate::access`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use at1_core::gate::GateConfig;
use at1_core::reader::BlockCache;
use at1_store::{Content, DirEntry, Extent, Ino, Inode, Kind, LocalObjects, MetaError, MetaRead, MetaStore, MetaTxn, Nanos, ObjectStore, SqliteMeta, ROOT_INO};
use serde_json::json;

use crate::contents::Contents;
use crate::durability::GroupCommit;
use crate::error::{errno, VResult, VolumeError};
use crate::files::FileState;
use crate::journal;
use crate::layout::{self, StoreDir};
use crate::stats::Stats;

/// The name at the root that the mount shows as its control directory:
/// no entry of the volume may take it.
pub const CONTROL_NAME: &[u8] = b".at1";
/// Longest name of an entry.
pub const NAME_MAX: usize = 255;
/// Longest symlink target.
pub const TARGET_MAX: usize = 4095;
/// Most links of one inode.
pub const LINK_MAX: u32 = 65_000;

/// Settings of an open volume.
#[derive(Debug, Clone)]
pub struct VolumeConfig {
    pub gate: GateConfig,
    /// Commit at zstd's fast level at `close` and re-encode at `gate`'s
    /// levels in the background (`recompress.rs`), instead of paying
    /// `gate`'s levels in every `close`.
    pub fast_writes: bool,
    /// Bytes of decoded blocks kept in memory.
    pub cache_size: u64,
    /// Refuse every change (EROFS).
    pub read_only: bool,
    /// How long a commit may wait to become durable (group commit).
    pub commit_interval: Duration,
    /// Where staging files go (default: the store's `staging/`).
    pub staging: Option<std::path::PathBuf>,
    /// Largest extent (object) a commit makes of a file's bytes
    /// (`extents.rs`).
    pub segment_size: u64,
}

impl Default for VolumeConfig {
    fn default() -> Self {
        VolumeConfig {
            gate: GateConfig::default(),
            fast_writes: true,
            cache_size: 256 << 20,
            read_only: false,
            commit_interval: Duration::from_secs(5),
            staging: None,
            segment_size: crate::extents::DEFAULT_EXTENT_SIZE,
        }
    }
}

/// What `stat` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// 512-byte blocks the content costs at rest (its object's size).
    pub blocks: u64,
    pub atime: Nanos,
    pub mtime: Nanos,
    pub ctime: Nanos,
    pub nlink: u32,
    pub rdev: u32,
}

/// Who makes a new entry (the caller's fsuid and fsgid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// A time `setattr` sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSet {
    Now,
    At(Nanos),
}

/// A `setattr` request.
#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    pub perm: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
}

/// How `rename` treats an existing target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenameMode {
    Replace,
    NoReplace,
    Exchange,
}

/// `statfs` figures.
#[derive(Debug, Clone, Copy)]
pub struct FsStats {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

pub fn now() -> Nanos {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as Nanos)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wakes the re-encoding worker: work was queued, or the volume is going.
#[derive(Default)]
pub(crate) struct WorkSignal {
    woken: Mutex<bool>,
    cv: Condvar,
}

impl WorkSignal {
    pub(crate) fn wake(&self) {
        *lock(&self.woken) = true;
        self.cv.notify_all();
    }

    /// Waits until woken or `timeout` passes.
    pub(crate) fn wait(&self, timeout: Duration) {
        let woken = lock(&self.woken);
        let (mut woken, _) = self.cv.wait_timeout_while(woken, timeout, |w| !*w).unwrap_or_else(|e| e.into_inner());
        *woken = false;
    }
}

/// Stops the background threads; once stopped, stays so.
#[derive(Default)]
pub(crate) struct StopSignal {
    stopped: Mutex<bool>,
    cv: Condvar,
}

impl StopSignal {
    pub(crate) fn stop(&self) {
        *lock(&self.stopped) = true;
        self.cv.notify_all();
    }

    pub(crate) fn stopped(&self) -> bool {
        *lock(&self.stopped)
    }

    /// Waits until stopped or `timeout` passes; whether stopped. (The flag
    /// is looked at before the wait: a stop that came before it must not
    /// cost a whole interval.)
    pub(crate) fn wait(&self, timeout: Duration) -> bool {
        let stopped = lock(&self.stopped);
        let (stopped, _) = self.cv.wait_timeout_while(stopped, timeout, |s| !*s).unwrap_or_else(|e| e.into_inner());
        *stopped
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        // A volume dropped without `close`: its threads wait on these.
        self.stop.stop();
        self.work.wake();
    }
}

/// A mounted (or otherwise opened) store.
pub struct Volume {
    pub(crate) dir: StoreDir,
    pub(crate) meta: Box<dyn MetaStore>,
    pub(crate) objects: Arc<dyn ObjectStore>,
    pub(crate) contents: Contents,
    pub(crate) cache: Arc<BlockCache>,
    /// The volume's own encoding.
    pub(crate) gate: GateConfig,
    /// What a `close` commits with, when faster than `gate`.
    pub(crate) write_gate: Option<GateConfig>,
    /// Largest extent a commit makes.
    pub(crate) segment_size: u64,
    pub(crate) read_only: bool,
    /// Where staging bytes go once they are too many for memory.
    pub(crate) staging_dir: Arc<std::path::PathBuf>,
    pub(crate) staging_memory: Arc<crate::staging::StagingMemory>,
    /// Write state of each regular file with open handles.
    pub(crate) files: Mutex<HashMap<Ino, Arc<FileState>>>,
    pub(crate) group: GroupCommit,
    pub(crate) stats: Arc<Stats>,
    /// Told the inode whose content changed, to drop the kernel's cached
    /// pages of it.
    invalidator: RwLock<Option<Invalidator>>,
    /// Stops the background threads.
    stop: Arc<StopSignal>,
    /// Wakes the re-encoding worker.
    pub(crate) work: Arc<WorkSignal>,
    /// When the last content was committed (ns): background work waits
    /// for quiet.
    pub(crate) last_commit: std::sync::atomic::AtomicI64,
    /// The commit thread.
    pub(crate) threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// The re-encoding worker: not waited for at close beyond a moment (an
    /// encode at the strongest levels can take minutes; its work resumes
    /// at the next open).
    pub(crate) recompressor: Mutex<Option<std::thread::JoinHandle<()>>>,
    started: Instant,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume").field("root", &self.dir.root).finish()
    }
}

fn root_inode(t: Nanos) -> Inode {
    // SAFETY: getuid and getgid have no failure mode.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    Inode { ino: ROOT_INO, kind: Kind::Dir, perm: 0o755, uid, gid, size: 0, atime: t, mtime: t, ctime: t, nlink: 2, rdev: 0, parent: 0, extents: Vec::new() }
}

impl Volume {
    /// Opens the store at `root` for a daemon: takes its lock, lays it out
    /// if new, recovers what a crash left, and starts the commit thread.
    pub fn open(root: &Path, cfg: VolumeConfig) -> VResult<Arc<Volume>> {
        Self::open_dir(layout::open(root, true)?, cfg)
    }

    /// [`Volume::open`] of a store directory already opened (and locked)
    /// by [`layout::open`] — by a daemon that checks the store before it
    /// forks and serves it after.
    pub fn open_dir(dir: StoreDir, cfg: VolumeConfig) -> VResult<Arc<Volume>> {
        let volume = Arc::new(Self::assemble(dir, &cfg)?);
        if !cfg.read_only {
            crate::recovery::recover(&volume)?;
            volume.start_commit_thread(cfg.commit_interval);
            volume.start_recompressor();
        }
        Ok(volume)
    }

    /// Opens the store at `root` to read it (`at1 sql`, `at1 log`, `at1
    /// verify`), beside a daemon that may be serving it: no lock, no
    /// recovery, every change refused.
    pub fn open_read_only(root: &Path) -> VResult<Arc<Volume>> {
        let dir = layout::open(root, false)?;
        let cfg = VolumeConfig { read_only: true, cache_size: 64 << 20, ..VolumeConfig::default() };
        Ok(Arc::new(Self::assemble(dir, &cfg)?))
    }

    /// Opens the store at `root` for `at1 fsck`: with `lock` (to repair),
    /// the store's lock is taken (refused while a daemon serves it); without,
    /// it is read beside a daemon. Neither recovers nor starts any thread:
    /// fsck must see the store as it is.
    pub fn open_for_check(root: &Path, lock: bool) -> VResult<Arc<Volume>> {
        let dir = layout::open(root, lock)?;
        let cfg = VolumeConfig { read_only: true, cache_size: 64 << 20, ..VolumeConfig::default() };
        Ok(Arc::new(Self::assemble(dir, &cfg)?))
    }

    /// Journal events from sequence number `from`, at most `limit`, in
    /// order (`at1 log`).
    pub fn events(&self, from: u64, limit: usize) -> VResult<Vec<at1_store::Event>> {
        Ok(self.meta.read()?.events(from, limit)?)
    }

    fn assemble(dir: StoreDir, cfg: &VolumeConfig) -> VResult<Volume> {
        let (meta, objects): (SqliteMeta, Arc<dyn ObjectStore>) = if cfg.read_only && !dir.is_locked() {
            // Beside a daemon that may be changing it: touch nothing.
            (SqliteMeta::open_read_only(&dir.meta_db())?, Arc::new(LocalObjects::open_read_only(&dir.root)))
        } else {
            (SqliteMeta::open(&dir.meta_db(), &root_inode(now()))?, Arc::new(LocalObjects::open(&dir.root)?))
        };
        let staging = cfg.staging.clone().unwrap_or_else(|| dir.staging());
        if !cfg.read_only {
            std::fs::create_dir_all(&staging)?;
        }
        Ok(Volume {
            contents: Contents::new(objects.clone()),
            meta: Box::new(meta),
            objects,
            cache: Arc::new(BlockCache::new(cfg.cache_size)),
            gate: cfg.gate.clone(),
            write_gate: if cfg.fast_writes { cfg.gate.fast_variant() } else { None },
            // The CLI holds mounts to `MIN_EXTENT_SIZE`; tests go below it
            // to make many extents of small files.
            segment_size: cfg.segment_size.max(4096),
            read_only: cfg.read_only,
            staging_dir: Arc::new(staging),
            staging_memory: Arc::default(),
            files: Mutex::new(HashMap::new()),
            group: GroupCommit::default(),
            stats: Arc::new(Stats::default()),
            invalidator: RwLock::new(None),
            stop: Arc::default(),
            work: Arc::default(),
            last_commit: std::sync::atomic::AtomicI64::new(0),
            threads: Mutex::new(Vec::new()),
            recompressor: Mutex::new(None),
            started: Instant::now(),
            dir,
        })
    }

    pub fn root(&self) -> &Path {
        &self.dir.root
    }

    pub fn store_dir(&self) -> &StoreDir {
        &self.dir
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    pub fn cache(&self) -> Arc<BlockCache> {
        self.cache.clone()
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Sets who is told of content changes (the FUSE adapter drops the
    /// kernel's cached pages).
    pub fn set_invalidator(&self, f: Invalidator) {
        *self.invalidator.write().unwrap_or_else(|e| e.into_inner()) = Some(f);
    }

    pub(crate) fn invalidate(&self, ino: Ino) {
        let f = self.invalidator.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(f) = f {
            f(ino);
        }
    }

    pub(crate) fn writable(&self) -> VResult<()> {
        if self.read_only {
            return Err(errno(libc::EROFS));
        }
        Ok(())
    }

    /// Runs `f` as one transaction: committed whole if it returns `Ok`.
    pub(crate) fn change<T>(&self, f: impl FnOnce(&mut dyn MetaTxn, Nanos) -> VResult<T>) -> VResult<T> {
        self.writable()?;
        let mut txn = self.meta.write()?;
        let out = f(&mut *txn, now())?;
        txn.commit()?;
        self.group.committed();
        Ok(out)
    }

    // ------------------------------------------------------------ reads

    /// The inode `ino`, or ENOENT.
    pub(crate) fn inode_in(r: &dyn MetaRead, ino: Ino) -> VResult<Inode> {
        r.inode(ino)?.ok_or_else(|| errno(libc::ENOENT))
    }

    pub(crate) fn dir_in(r: &dyn MetaRead, ino: Ino) -> VResult<Inode> {
        let dir = Self::inode_in(r, ino)?;
        if dir.kind != Kind::Dir {
            return Err(errno(libc::ENOTDIR));
        }
        Ok(dir)
    }

    /// What `stat` shows of an inode: a file being written shows the
    /// size and time of its uncommitted writes.
    pub(crate) fn attr_of(&self, inode: &Inode) -> Attr {
        let mut attr = Attr {
            ino: inode.ino,
            kind: inode.kind,
            perm: inode.perm,
            uid: inode.uid,
            gid: inode.gid,
            size: inode.size,
            blocks: inode.stored_len().div_ceil(512),
            atime: inode.atime,
            mtime: inode.mtime,
            ctime: inode.ctime,
            nlink: inode.nlink,
            rdev: inode.rdev,
        };
        if inode.kind == Kind::File {
            if let Some(state) = lock(&self.files).get(&inode.ino).cloned() {
                state.overlay(&mut attr);
            }
        }
        attr
    }

    pub fn getattr(&self, ino: Ino) -> VResult<Attr> {
        // The reader is given back before `attr_of` takes the open-files
        // lock: that lock is held while readers are taken (`detach`).
        let inode = Self::inode_in(&*self.meta.read()?, ino)?;
        Ok(self.attr_of(&inode))
    }

    pub fn lookup(&self, parent: Ino, name: &[u8]) -> VResult<Attr> {
        if name.len() > NAME_MAX {
            return Err(errno(libc::ENAMETOOLONG));
        }
        let inode = {
            let r = self.meta.read()?;
            Self::dir_in(&*r, parent)?;
            let ino = r.lookup(parent, name)?.ok_or_else(|| errno(libc::ENOENT))?;
            Self::inode_in(&*r, ino)?
        };
        Ok(self.attr_of(&inode))
    }

    /// Entries of directory `dir` in name order after `after`, at most
    /// `limit`.
    pub fn readdir(&self, dir: Ino, after: Option<&[u8]>, limit: usize) -> VResult<Vec<DirEntry>> {
        let r = self.meta.read()?;
        Self::dir_in(&*r, dir)?;
        Ok(r.entries(dir, after, limit)?)
    }

    /// The `..` of a directory.
    pub fn parent_of(&self, dir: Ino) -> VResult<Ino> {
        let r = self.meta.read()?;
        let d = Self::dir_in(&*r, dir)?;
        Ok(if dir == ROOT_INO { ROOT_INO } else { d.parent })
    }

    pub fn readlink(&self, ino: Ino) -> VResult<Vec<u8>> {
        let r = self.meta.read()?;
        if Self::inode_in(&*r, ino)?.kind != Kind::Symlink {
            return Err(errno(libc::EINVAL));
        }
        r.symlink_target(ino)?.ok_or_else(|| VolumeError::Meta(MetaError::Corrupt(format!("symlink {ino} has no target"))))
    }

    /// The path of `ino` (one of its names), for messages and the journal.
    pub fn path_of(&self, ino: Ino) -> String {
        match self.meta.read() {
            Ok(r) => path_in(&*r, ino),
            Err(_) => format!("<inode {ino}>"),
        }
    }

    /// Counts over the whole store (for `.at1/stats`).
    pub fn totals(&self) -> VResult<at1_store::Totals> {
        Ok(self.meta.read()?.totals()?)
    }

    pub fn statfs(&self) -> VResult<FsStats> {
        let c = std::ffi::CString::new(self.dir.root.as_os_str().as_encoded_bytes()).map_err(|_| errno(libc::EINVAL))?;
        // SAFETY: a zeroed statvfs is a valid out-buffer.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C path and out pointer.
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let inodes = self.meta.read()?.totals()?.inodes;
        let free_files = u64::from(u32::MAX);
        Ok(FsStats {
            blocks: s.f_blocks,
            bfree: s.f_bfree,
            bavail: s.f_bavail,
            files: inodes + free_files,
            ffree: free_files,
            bsize: s.f_bsize as u32,
            namelen: NAME_MAX as u32,
            frsize: s.f_frsize as u32,
        })
    }

    // ------------------------------------------------------------ names

    /// Makes a new inode named `name` in `parent` (regular files, special
    /// files, directories, symlinks).
    // mknod's own arguments, each needed: bundling them would only rename them.
    #[allow(clippy::too_many_arguments)]
    fn make(&self, parent: Ino, name: &[u8], kind: Kind, perm: u32, rdev: u32, owner: Owner, target: Option<&[u8]>) -> VResult<Attr> {
        check_new_name(parent, name)?;
        if let Some(t) = target {
            if t.is_empty() {
                return Err(errno(libc::ENOENT));
            }
            if t.len() > TARGET_MAX {
                return Err(errno(libc::ENAMETOOLONG));
            }
        }
        let inode = self.change(|txn, t| {
            let mut dir = Self::dir_in(txn, parent)?;
            if txn.lookup(parent, name)?.is_some() {
                return Err(errno(libc::EEXIST));
            }
            // BSD group semantics under a set-group-ID directory, as Linux.
            let setgid_dir = dir.perm & libc::S_ISGID != 0;
            let gid = if setgid_dir { dir.gid } else { owner.gid };
            let mut perm = perm & 0o7777;
            if kind == Kind::Dir && setgid_dir {
                perm |= libc::S_ISGID;
            }
            let mut inode = Inode {
                ino: 0,
                kind,
                perm,
                uid: owner.uid,
                gid,
                size: target.map_or(0, |t| t.len() as u64),
                atime: t,
                mtime: t,
                ctime: t,
                nlink: if kind == Kind::Dir { 2 } else { 1 },
                rdev: if matches!(kind, Kind::CharDevice | Kind::BlockDevice) { rdev } else { 0 },
                parent: if kind == Kind::Dir { parent } else { 0 },
                extents: Vec::new(),
            };
            inode.ino = txn.create_inode(&inode)?;
            txn.insert_entry(parent, name, inode.ino)?;
            if let Some(target) = target {
                txn.set_symlink_target(inode.ino, target)?;
            }
            if kind == Kind::Dir {
                dir.nlink += 1;
            }
            dir.mtime = t;
            dir.ctime = t;
            txn.update_inode(&dir)?;
            let op = match kind {
                Kind::File => "create",
                Kind::Dir => "mkdir",
                Kind::Symlink => "symlink",
                _ => "mknod",
            };
            let mut detail = json!({"ino": inode.ino, "path": entry_path(txn, parent, name), "mode": format!("{:o}", perm), "uid": inode.uid, "gid": gid});
            if let Some(target) = target {
                detail["target"] = json!(String::from_utf8_lossy(target));
            }
            journal::append(txn, t, op, &detail)?;
            Ok(inode)
        })?;
        Ok(self.attr_of(&inode))
    }

    pub fn mknod(&self, parent: Ino, name: &[u8], kind: Kind, perm: u32, rdev: u32, owner: Owner) -> VResult<Attr> {
        if kind == Kind::Dir || kind == Kind::Symlink {
            return Err(errno(libc::EINVAL));
        }
        self.make(parent, name, kind, perm, rdev, owner, None)
    }

    pub fn mkdir(&self, parent: Ino, name: &[u8], perm: u32, owner: Owner) -> VResult<Attr> {
        self.make(parent, name, Kind::Dir, perm, 0, owner, None)
    }

    pub fn symlink(&self, parent: Ino, name: &[u8], target: &[u8], owner: Owner) -> VResult<Attr> {
        self.make(parent, name, Kind::Symlink, 0o777, 0, owner, Some(target))
    }

    pub fn link(&self, ino: Ino, new_parent: Ino, new_name: &[u8]) -> VResult<Attr> {
        check_new_name(new_parent, new_name)?;
        let inode = self.change(|txn, t| {
            let mut inode = Self::inode_in(txn, ino)?;
            if inode.kind == Kind::Dir {
                return Err(errno(libc::EPERM));
            }
            if inode.nlink == 0 {
                return Err(errno(libc::ENOENT)); // no linking an unlinked file back
            }
            if inode.nlink >= LINK_MAX {
                return Err(errno(libc::EMLINK));
            }
            let mut dir = Self::dir_in(txn, new_parent)?;
            if txn.lookup(new_parent, new_name)?.is_some() {
                return Err(errno(libc::EEXIST));
            }
            txn.insert_entry(new_parent, new_name, ino)?;
            inode.nlink += 1;
            inode.ctime = t;
            txn.update_inode(&inode)?;
            (dir.mtime, dir.ctime) = (t, t);
            txn.update_inode(&dir)?;
            let detail = json!({"ino": ino, "path": entry_path(txn, new_parent, new_name)});
            journal::append(txn, t, "link", &detail)?;
            Ok(inode)
        })?;
        Ok(self.attr_of(&inode))
    }

    /// Drops one link of `inode` (its entry is gone already): at no links
    /// left, the inode goes — or waits as an orphan while it is `open`.
    /// Its content is released at journal position `seq`.
    fn drop_link(&self, txn: &mut dyn MetaTxn, mut inode: Inode, t: Nanos, seq: u64, open: bool) -> VResult<()> {
        inode.nlink = inode.nlink.saturating_sub(1);
        inode.ctime = t;
        if inode.nlink > 0 {
            txn.update_inode(&inode)?;
            return Ok(());
        }
        if open {
            txn.update_inode(&inode)?;
            txn.add_orphan(inode.ino)?;
            return Ok(());
        }
        for e in &inode.extents {
            txn.add_garbage(&e.content.object, seq)?;
        }
        txn.delete_inode(inode.ino)?;
        Ok(())
    }

    pub fn unlink(&self, parent: Ino, name: &[u8]) -> VResult<()> {
        self.writable()?;
        // Held through the transaction: no handle opens or closes the file
        // between the test of whether it is open and its removal.
        let files = lock(&self.files);
        self.change(|txn, t| {
            let mut dir = Self::dir_in(txn, parent)?;
            let ino = txn.lookup(parent, name)?.ok_or_else(|| errno(libc::ENOENT))?;
            let inode = Self::inode_in(txn, ino)?;
            if inode.kind == Kind::Dir {
                return Err(errno(libc::EISDIR));
            }
            let path = entry_path(txn, parent, name);
            txn.delete_entry(parent, name)?;
            (dir.mtime, dir.ctime) = (t, t);
            txn.update_inode(&dir)?;
            let seq = journal::append(txn, t, "unlink", &json!({"ino": ino, "path": path}))?;
            let open = files.get(&ino).is_some_and(|s| s.handles() > 0);
            self.drop_link(txn, inode, t, seq, open)
        })
    }

    pub fn rmdir(&self, parent: Ino, name: &[u8]) -> VResult<()> {
        if name == b"." {
            return Err(errno(libc::EINVAL));
        }
        self.change(|txn, t| {
            let mut dir = Self::dir_in(txn, parent)?;
            let ino = txn.lookup(parent, name)?.ok_or_else(|| errno(libc::ENOENT))?;
            let victim = Self::dir_in(txn, ino)?;
            if txn.has_entries(ino)? {
                return Err(errno(libc::ENOTEMPTY));
            }
            let path = entry_path(txn, parent, name);
            txn.delete_entry(parent, name)?;
            txn.delete_inode(victim.ino)?;
            dir.nlink = dir.nlink.saturating_sub(1);
            (dir.mtime, dir.ctime) = (t, t);
            txn.update_inode(&dir)?;
            journal::append(txn, t, "rmdir", &json!({"ino": ino, "path": path}))?;
            Ok(())
        })
    }

    pub fn rename(&self, parent: Ino, name: &[u8], new_parent: Ino, new_name: &[u8], mode: RenameMode) -> VResult<()> {
        check_new_name(new_parent, new_name)?;
        if parent == ROOT_INO && name == CONTROL_NAME {
            return Err(errno(libc::EPERM));
        }
        self.writable()?;
        let files = lock(&self.files);
        let open = |ino: Ino| files.get(&ino).is_some_and(|s| s.handles() > 0);
        self.change(|txn, t| self.rename_in(txn, t, (parent, name), (new_parent, new_name), mode, &open))
    }

    fn rename_in(&self, txn: &mut dyn MetaTxn, t: Nanos, from: (Ino, &[u8]), to: (Ino, &[u8]), mode: RenameMode, open: &dyn Fn(Ino) -> bool) -> VResult<()> {
        let ((parent, name), (new_parent, new_name)) = (from, to);
        Self::dir_in(txn, parent)?;
        Self::dir_in(txn, new_parent)?;
        let ino = txn.lookup(parent, name)?.ok_or_else(|| errno(libc::ENOENT))?;
        let mut moved = Self::inode_in(txn, ino)?;
        let target = txn.lookup(new_parent, new_name)?;
        if target == Some(ino) {
            return Ok(()); // two names of one inode: rename does nothing
        }
        if moved.kind == Kind::Dir && is_ancestor(txn, ino, new_parent)? {
            return Err(errno(libc::EINVAL)); // into its own subtree
        }
        let (from_path, to_path) = (entry_path(txn, parent, name), entry_path(txn, new_parent, new_name));
        match (mode, target) {
            (RenameMode::NoReplace, Some(_)) => return Err(errno(libc::EEXIST)),
            (RenameMode::Exchange, None) => return Err(errno(libc::ENOENT)),
            (RenameMode::Exchange, Some(other)) => {
                let mut other = Self::inode_in(txn, other)?;
                if other.kind == Kind::Dir && is_ancestor(txn, other.ino, parent)? {
                    return Err(errno(libc::EINVAL));
                }
                txn.delete_entry(parent, name)?;
                txn.delete_entry(new_parent, new_name)?;
                txn.insert_entry(new_parent, new_name, ino)?;
                txn.insert_entry(parent, name, other.ino)?;
                self.reparent(txn, &mut moved, parent, new_parent, t)?;
                self.reparent(txn, &mut other, new_parent, parent, t)?;
                touch_dirs(txn, &[parent, new_parent], t)?;
                journal::append(txn, t, "exchange", &json!({"ino": ino, "path": from_path, "other": other.ino, "other_path": to_path}))?;
                return Ok(());
            }
            _ => {}
        }
        let mut seq = None;
        if let Some(victim) = target {
            let victim = Self::inode_in(txn, victim)?;
            match (moved.kind == Kind::Dir, victim.kind == Kind::Dir) {
                (true, false) => return Err(errno(libc::ENOTDIR)),
                (false, true) => return Err(errno(libc::EISDIR)),
                (true, true) if txn.has_entries(victim.ino)? => return Err(errno(libc::ENOTEMPTY)),
                _ => {}
            }
            txn.delete_entry(new_parent, new_name)?;
            let s = journal::append(txn, t, "rename", &json!({"ino": ino, "path": from_path, "to": to_path, "replaced": victim.ino}))?;
            seq = Some(s);
            if victim.kind == Kind::Dir {
                txn.delete_inode(victim.ino)?;
                let mut np = Self::dir_in(txn, new_parent)?;
                np.nlink = np.nlink.saturating_sub(1);
                txn.update_inode(&np)?;
            } else {
                let victim_open = open(victim.ino);
                self.drop_link(txn, victim, t, s, victim_open)?;
            }
        }
        txn.delete_entry(parent, name)?;
        txn.insert_entry(new_parent, new_name, ino)?;
        self.reparent(txn, &mut moved, parent, new_parent, t)?;
        touch_dirs(txn, &[parent, new_parent], t)?;
        if seq.is_none() {
            journal::append(txn, t, "rename", &json!({"ino": ino, "path": from_path, "to": to_path}))?;
        }
        Ok(())
    }

    /// A moved inode's ctime, and a directory's `..` and its parents' link
    /// counts.
    fn reparent(&self, txn: &mut dyn MetaTxn, inode: &mut Inode, from: Ino, to: Ino, t: Nanos) -> VResult<()> {
        *inode = Self::inode_in(txn, inode.ino)?;
        inode.ctime = t;
        if inode.kind == Kind::Dir && from != to {
            inode.parent = to;
            let mut old = Self::dir_in(txn, from)?;
            old.nlink = old.nlink.saturating_sub(1);
            txn.update_inode(&old)?;
            let mut new = Self::dir_in(txn, to)?;
            new.nlink += 1;
            txn.update_inode(&new)?;
        }
        txn.update_inode(inode)?;
        Ok(())
    }

    // ------------------------------------------------------------ attributes

    pub fn setattr(&self, ino: Ino, change: &SetAttr) -> VResult<Attr> {
        if let Some(size) = change.size {
            self.truncate(ino, size)?;
        }
        let only_size = change.perm.is_none() && change.uid.is_none() && change.gid.is_none() && change.atime.is_none() && change.mtime.is_none();
        if only_size {
            return self.getattr(ino);
        }
        let inode = self.change(|txn, t| {
            let mut inode = Self::inode_in(txn, ino)?;
            let mut what = serde_json::Map::new();
            if let Some(perm) = change.perm {
                inode.perm = perm & 0o7777;
                what.insert("mode".into(), json!(format!("{:o}", inode.perm)));
            }
            let owner_changes = change.uid.is_some_and(|u| u != inode.uid) || change.gid.is_some_and(|g| g != inode.gid);
            if let Some(uid) = change.uid {
                inode.uid = uid;
                what.insert("uid".into(), json!(uid));
            }
            if let Some(gid) = change.gid {
                inode.gid = gid;
                what.insert("gid".into(), json!(gid));
            }
            if (change.uid.is_some() || change.gid.is_some()) && inode.kind != Kind::Dir && (owner_changes || change.perm.is_none()) {
                // chown clears set-user-ID, and set-group-ID where it means
                // "execute as the group" (with group execute), as Linux.
                inode.perm &= !libc::S_ISUID;
                if inode.perm & libc::S_IXGRP != 0 {
                    inode.perm &= !libc::S_ISGID;
                }
            }
            let at = |s: TimeSet| match s {
                TimeSet::Now => t,
                TimeSet::At(v) => v,
            };
            if let Some(a) = change.atime {
                inode.atime = at(a);
                what.insert("atime".into(), json!(inode.atime));
            }
            if let Some(m) = change.mtime {
                inode.mtime = at(m);
                what.insert("mtime".into(), json!(inode.mtime));
            }
            inode.ctime = t;
            txn.update_inode(&inode)?;
            what.insert("ino".into(), json!(ino));
            what.insert("path".into(), json!(path_in(txn, ino)));
            journal::append(txn, t, "setattr", &serde_json::Value::Object(what))?;
            Ok(inode)
        })?;
        if let Some(m) = change.mtime {
            if let Some(state) = lock(&self.files).get(&ino) {
                state.keep_mtime(match m {
                    TimeSet::Now => now(),
                    TimeSet::At(v) => v,
                });
            }
        }
        Ok(self.attr_of(&inode))
    }

    // ------------------------------------------------------------ xattrs

    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> VResult<Vec<u8>> {
        if let Some(v) = crate::xattr::virtual_name(name) {
            return self.virtual_xattr(ino, v);
        }
        let r = self.meta.read()?;
        Self::inode_in(&*r, ino)?;
        r.xattr(ino, name)?.ok_or_else(|| errno(libc::ENODATA))
    }

    pub fn listxattr(&self, ino: Ino) -> VResult<Vec<Vec<u8>>> {
        let r = self.meta.read()?;
        let inode = Self::inode_in(&*r, ino)?;
        let mut names = r.xattr_names(ino)?;
        if inode.kind == Kind::File {
            names.extend(crate::xattr::VIRTUAL_NAMES.iter().map(|n| [crate::xattr::VIRTUAL_PREFIX, n.as_bytes()].concat()));
        }
        Ok(names)
    }

    pub fn setxattr(&self, ino: Ino, name: &[u8], value: &[u8], flags: i32) -> VResult<()> {
        crate::xattr::check_settable(name, value)?;
        self.change(|txn, t| {
            let mut inode = Self::inode_in(txn, ino)?;
            let exists = txn.xattr(ino, name)?.is_some();
            if flags & libc::XATTR_CREATE != 0 && exists {
                return Err(errno(libc::EEXIST));
            }
            if flags & libc::XATTR_REPLACE != 0 && !exists {
                return Err(errno(libc::ENODATA));
            }
            txn.set_xattr(ino, name, value)?;
            inode.ctime = t;
            txn.update_inode(&inode)?;
            let detail = json!({"ino": ino, "path": path_in(txn, ino), "name": String::from_utf8_lossy(name)});
            journal::append(txn, t, "setxattr", &detail)?;
            Ok(())
        })
    }

    pub fn removexattr(&self, ino: Ino, name: &[u8]) -> VResult<()> {
        if crate::xattr::virtual_name(name).is_some() {
            return Err(errno(libc::EPERM));
        }
        self.change(|txn, t| {
            let mut inode = Self::inode_in(txn, ino)?;
            if !txn.remove_xattr(ino, name)? {
                return Err(errno(libc::ENODATA));
            }
            inode.ctime = t;
            txn.update_inode(&inode)?;
            let detail = json!({"ino": ino, "path": path_in(txn, ino), "name": String::from_utf8_lossy(name)});
            journal::append(txn, t, "removexattr", &detail)?;
            Ok(())
        })
    }

    // ------------------------------------------------------------ background

    /// Whether the volume is closing (background work stops).
    pub(crate) fn stopping(&self) -> bool {
        self.stop.stopped()
    }

    /// Wakes the re-encoding worker (new content is queued).
    pub(crate) fn work_queued(&self) {
        self.work.wake();
    }

    // ------------------------------------------------------------ durability

    /// Makes every change committed so far durable (one round shared by
    /// concurrent callers).
    pub fn sync(&self) -> VResult<()> {
        if self.read_only {
            return Ok(());
        }
        self.group.sync(|| self.sync_round())
    }

    /// One round: objects first, then the metadata that names them, with
    /// the journal position now durable; then the objects whose release
    /// that made durable can go.
    fn sync_round(&self) -> VResult<()> {
        // The position first: every change up to it was committed after
        // its object was put, so the objects' sync below covers them all.
        // (Read after, a change committed meanwhile would be marked
        // durable with its object still unsynced.)
        let upto = self.meta.read()?.last_event()?.map_or(0, |e| e.seq);
        self.objects.sync()?;
        {
            let mut txn = self.meta.write()?;
            txn.set_setting("synced_seq", &upto.to_string())?;
            txn.commit()?;
        }
        self.meta.sync()?;
        self.collect_garbage(upto)
    }

    /// Deletes the objects released by changes up to journal position
    /// `durable` (those changes cannot come back) that no inode names: an
    /// object still named (a garbage row that should not be there) is
    /// kept and only its row goes, with an error line — a wrong row never
    /// costs a file its content.
    fn collect_garbage(&self, durable: u64) -> VResult<()> {
        let garbage = self.meta.read()?.garbage()?;
        let done: Vec<_> = garbage.into_iter().filter(|(_, at)| *at <= durable).map(|(id, _)| id).collect();
        if done.is_empty() {
            return Ok(());
        }
        for id in &done {
            if let Some(ino) = self.meta.read()?.object_user(id)? {
                log::error!("object {id} is on the garbage list but is the content of {}: kept", self.path_of(ino));
                continue;
            }
            self.contents.forget(id);
            self.objects.delete(id)?;
        }
        let mut txn = self.meta.write()?;
        for id in &done {
            txn.remove_garbage(id)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn start_commit_thread(self: &Arc<Self>, interval: Duration) {
        let weak = Arc::downgrade(self);
        let stop = Arc::clone(&self.stop);
        let thread = std::thread::Builder::new().name("at1-commit".into()).spawn(move || loop {
            // Waits holding no reference to the volume: one dropped without
            // `close` goes at once (its drop stops this wait).
            if stop.wait(interval) {
                return;
            }
            let Some(volume) = weak.upgrade() else { return };
            if volume.group.dirty() {
                if let Err(e) = volume.sync() {
                    log::error!("group commit: {e}");
                }
            }
        });
        match thread {
            Ok(t) => lock(&self.threads).push(t),
            Err(e) => log::error!("cannot start the commit thread ({e}): changes become durable at fsync and unmount only"),
        }
    }

    /// Waits a moment for the re-encoding worker to stop between files;
    /// one in the middle of an encode is left to finish on its own: it
    /// swaps nothing in once the volume is closing, and the process's exit
    /// ends it (its temp object goes at the next open).
    fn let_recompressor_go(&self) {
        let Some(worker) = lock(&self.recompressor).take() else { return };
        let deadline = Instant::now() + Duration::from_secs(2);
        while !worker.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if worker.is_finished() {
            let _ = worker.join();
        }
    }

    /// Ends the volume's work: commits of open files, a last sync, and the
    /// mark of a clean shutdown (so the next open has nothing to check).
    pub fn close(&self) -> VResult<()> {
        self.stop.stop();
        self.work.wake();
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            let _ = t.join();
        }
        self.let_recompressor_go();
        if self.read_only {
            return Ok(());
        }
        self.sync()?;
        let mut txn = self.meta.write()?;
        txn.set_setting("clean", "1")?;
        txn.commit()?;
        self.meta.sync()?;
        Ok(())
    }
}

/// `parent/name` as a path.
pub(crate) fn entry_path(r: &dyn MetaRead, parent: Ino, name: &[u8]) -> String {
    let base = path_in(r, parent);
    let name = String::from_utf8_lossy(name);
    if base == "/" {
        format!("/{name}")
    } else {
        format!("{base}/{name}")
    }
}

/// The path of `ino` through one of its names (`/` for the root).
pub(crate) fn path_in(r: &dyn MetaRead, ino: Ino) -> String {
    let mut parts = Vec::new();
    let mut cur = ino;
    // Bounded: a loop in the names would be corruption, not a hang.
    for _ in 0..4096 {
        if cur == ROOT_INO {
            parts.reverse();
            return format!("/{}", parts.join("/"));
        }
        match r.a_name_of(cur) {
            Ok(Some((parent, name))) => {
                parts.push(String::from_utf8_lossy(&name).into_owned());
                cur = parent;
            }
            _ => break,
        }
    }
    format!("<inode {ino}>")
}

/// Whether `ancestor` is `dir` or one of its parents.
fn is_ancestor(r: &dyn MetaRead, ancestor: Ino, mut dir: Ino) -> VResult<bool> {
    for _ in 0..65_536 {
        if dir == ancestor {
            return Ok(true);
        }
        if dir == ROOT_INO || dir == 0 {
            return Ok(false);
        }
        dir = Volume::inode_in(r, dir)?.parent;
    }
    Err(VolumeError::Meta(MetaError::Corrupt("a directory loop".into())))
}

fn touch_dirs(txn: &mut dyn MetaTxn, dirs: &[Ino], t: Nanos) -> VResult<()> {
    let mut seen = Vec::new();
    for &d in dirs {
        if seen.contains(&d) {
            continue;
        }
        seen.push(d);
        let mut dir = Volume::dir_in(txn, d)?;
        (dir.mtime, dir.ctime) = (t, t);
        txn.update_inode(&dir)?;
    }
    Ok(())
}

/// A name a new entry may have.
pub(crate) fn check_new_name(parent: Ino, name: &[u8]) -> VResult<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
        return Err(errno(libc::EINVAL));
    }
    if name.len() > NAME_MAX {
        return Err(errno(libc::ENAMETOOLONG));
    }
    if parent == ROOT_INO && name == CONTROL_NAME {
        return Err(errno(libc::EPERM));
    }
    Ok(())
}

/// A content reference's fields for the journal.
pub(crate) fn content_json(c: &Content) -> serde_json::Value {
    json!({"object": c.object.hex(), "sha256": hex(&c.sha256), "stored": c.stored_len})
}

/// An extent's fields for the journal.
pub(crate) fn extent_json(e: &Extent) -> serde_json::Value {
    json!({"start": e.start, "len": e.len, "object": e.content.object.hex(), "sha256": hex(&e.content.sha256), "stored": e.content.stored_len})
}

pub(crate) fn extents_json(extents: &[Extent]) -> serde_json::Value {
    serde_json::Value::Array(extents.iter().map(extent_json).collect())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Told the inode whose content changed (to drop the kernel's cached pages
/// of it).
pub type Invalidator = Arc<dyn Fn(Ino) + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_a_volume_right_after_opening_it_does_not_wait_a_commit_interval() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = VolumeConfig { commit_interval: Duration::from_secs(60), ..VolumeConfig::default() };
        for _ in 0..3 {
            let volume = Volume::open(dir.path(), cfg.clone()).unwrap();
            let start = Instant::now();
            volume.close().unwrap();
            assert!(start.elapsed() < Duration::from_secs(20), "close took {:?}", start.elapsed());
        }
    }

    /// The bug: the re-encoding worker held the volume while it waited for
    /// work, so a volume dropped without `close` (an in-process user that
    /// panicked, say) kept its store locked for seconds and its threads
    /// piled up.
    #[test]
    fn a_volume_dropped_without_close_frees_its_store_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = VolumeConfig::default();
        assert!(cfg.fast_writes, "the worker runs");
        for _ in 0..5 {
            let volume = Volume::open(dir.path(), cfg.clone()).unwrap();
            std::thread::sleep(Duration::from_millis(50)); // the worker is waiting
            drop(volume);
            let start = Instant::now();
            let again = loop {
                match Volume::open(dir.path(), cfg.clone()) {
                    Ok(v) => break v,
                    Err(e) if start.elapsed() < Duration::from_secs(1) => {
                        let _ = e;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => panic!("the store is still held a second after the drop: {e}"),
                }
            };
            drop(again);
        }
    }
}
