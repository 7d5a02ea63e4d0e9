//! Open files: reads through the reader and its cache, writes into a
//! staging file, and the commit of the staging file through the gate.
//!
//! - A handle opened for writing shares its file's one staging file with
//!   every other writer of that file. The staging file starts as the decoded
//!   current content (empty with `O_TRUNC`), lives in the store's staging
//!   directory without a name, and goes when the last writer closes.
//! - Every `flush` (each `close`) and `fsync` of a writer commits the
//!   staging file if it changed: the gate encodes it, checks the decode, and
//!   replaces the file's object atomically. A rejection fails that `close`
//!   or `fsync` with EIO and leaves the previous object in place.
//! - A handle opened read-only reads the object that was committed when it
//!   opened (close-to-open consistency); if a write is in progress at that
//!   moment, it bypasses the page cache (direct I/O) so it cannot see the
//!   writer's uncommitted pages either.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{FileType, FopenFlags, TimeOrNow};

use super::error::{errno, FsError, FsResult};
use super::inode::{FileInner, FileState, NodeKind, Staging, CONTROL_DIR, SQL_FILE, STATS_FILE};
use super::readahead::ReadAhead;
use super::At1Fs;
use crate::gate;
use crate::reader::{AccessCost, Object, Reader};
use crate::stats::Stats;
use crate::store::{Anchored, InodeId, RegularKind};

/// An entry of a directory listing, taken at `opendir`.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: FileType,
    pub name: OsString,
}

/// What an open file handle reads from.
pub enum Source {
    /// The committed object (snapshot at open).
    Object(Reader),
    /// A plain file of the tree (not an object).
    Plain(File),
    /// No content (a managed file that was never written).
    Empty,
    /// The file's staging file (writer handles).
    Staged,
}

pub struct OpenFile {
    pub write: bool,
    pub source: Source,
    pub state: Arc<FileState>,
    /// End of the previous read, to spot sequential reading.
    last_end: AtomicU64,
}

pub enum Handle {
    Dir(Vec<DirEntry>),
    /// A control file's bytes, fixed at open.
    Control(Vec<u8>),
    Sql(Arc<super::sql::SqlHandle>),
    File(OpenFile),
}

/// Reads a staging file from its start with positioned reads (the writers'
/// file offset is not touched).
struct StagingReader<'a> {
    file: &'a File,
    pos: u64,
    len: u64,
}

impl Read for StagingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min((self.len - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn read_fully_at(file: &File, offset: u64, size: u32) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; size as usize];
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

fn lock(state: &FileState) -> std::sync::MutexGuard<'_, FileInner> {
    state.inner.lock().unwrap_or_else(|e| e.into_inner())
}

/// Forgets the staging file once no writer is left.
fn drop_staging(state: &FileState, inner: &mut FileInner) {
    inner.staging = None;
    state.set_staged_len(None);
    state.set_staged_mtime(None);
}

impl At1Fs {
    /// The committed content of a regular file, for reading.
    fn current_source(&self, kind: &RegularKind, ino: u64) -> FsResult<Source> {
        let path = match kind {
            RegularKind::Managed(id) => Anchored::new(self.store.object_path(id))?,
            _ => self.tree_path(ino)?,
        };
        match kind {
            RegularKind::Plain => Ok(Source::Plain(File::open(&path)?)),
            _ => match Object::open(&path) {
                Ok(o) => Ok(Source::Object(Reader::new(Arc::new(o), Some(self.cache.clone())))),
                Err(crate::reader::ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound && matches!(kind, RegularKind::Managed(_)) => Ok(Source::Empty),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// A new staging file holding the current content (or nothing).
    fn new_staging(&self, kind: &RegularKind, ino: u64, empty: bool) -> FsResult<Staging> {
        let mut file = self.store.new_staging_file()?;
        if !empty {
            match self.current_source(kind, ino)? {
                Source::Object(reader) => {
                    let mut out = io::BufWriter::with_capacity(1 << 20, &mut file);
                    reader.extract(&mut out, |_| {})?;
                    io::Write::flush(&mut out)?;
                }
                Source::Plain(mut f) => {
                    io::copy(&mut f, &mut file)?;
                }
                Source::Empty | Source::Staged => {}
            }
        }
        Ok(Staging { file, modified: empty, mtime: SystemTime::now() })
    }

    fn regular(&self, ino: u64) -> FsResult<(RegularKind, Arc<FileState>)> {
        let table = self.table();
        let node = table.get(ino).ok_or_else(|| errno(libc::ENOENT))?;
        match &node.kind {
            NodeKind::Regular(k) => Ok((k.clone(), node.file.clone())),
            NodeKind::Directory => Err(errno(libc::EISDIR)),
            _ => Err(errno(libc::EINVAL)),
        }
    }

    pub(super) fn open_file(&self, ino: u64, flags: i32, req: &fuser::Request) -> FsResult<(u64, FopenFlags)> {
        if ino == SQL_FILE {
            let handle = self.sql.open(super::sql::SessionKey::of(req.pid(), req.uid()));
            return Ok((self.new_handle(Handle::Sql(Arc::new(handle))), FopenFlags::FOPEN_DIRECT_IO));
        }
        if ino == STATS_FILE {
            if flags & libc::O_ACCMODE != libc::O_RDONLY {
                return Err(FsError::refused(libc::EPERM, ".at1/stats is read-only"));
            }
            let bytes = self.stats_json().into_bytes();
            return Ok((self.new_handle(Handle::Control(bytes)), FopenFlags::FOPEN_DIRECT_IO));
        }
        let (_, state) = self.regular(ino)?;
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let truncate = flags & libc::O_TRUNC != 0 && write;
        if write || flags & libc::O_TRUNC != 0 {
            self.check_writable()?;
        }
        // What the file holds is read under its lock: a commit in progress
        // (which may adopt the file, changing its kind) finishes first.
        let mut inner = lock(&state);
        let (kind, _) = self.regular(ino)?;
        if write {
            match inner.staging.as_mut() {
                Some(s) if truncate => {
                    s.file.set_len(0)?;
                    s.modified = true;
                    s.mtime = SystemTime::now();
                    state.set_staged_mtime(Some(s.mtime));
                }
                Some(_) => {}
                None => inner.staging = Some(self.new_staging(&kind, ino, truncate)?),
            }
            let len = inner.staging.as_ref().map(|s| s.file.metadata().map(|m| m.len())).transpose()?;
            state.set_staged_len(len);
            inner.writers += 1;
            inner.handles += 1;
            drop(inner);
            let fh = self.new_handle(Handle::File(OpenFile { write: true, source: Source::Staged, state, last_end: AtomicU64::new(0) }));
            return Ok((fh, FopenFlags::empty()));
        }
        let source = self.current_source(&kind, ino)?;
        inner.handles += 1;
        // A write is in progress: read the committed version without the
        // page cache, which already holds the writer's pages.
        let flags = if inner.staging.is_some() { FopenFlags::FOPEN_DIRECT_IO } else { FopenFlags::empty() };
        drop(inner);
        let fh = self.new_handle(Handle::File(OpenFile { write: false, source, state, last_end: AtomicU64::new(u64::MAX) }));
        Ok((fh, flags))
    }

    pub(super) fn read_file(&self, _ino: u64, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let handle = self.handle(fh)?;
        let data = match &*handle {
            Handle::Control(bytes) => {
                let start = (offset as usize).min(bytes.len());
                let end = start.saturating_add(size as usize).min(bytes.len());
                return Ok(bytes[start..end].to_vec());
            }
            Handle::Dir(_) => return Err(errno(libc::EISDIR)),
            Handle::Sql(_) => return Err(errno(libc::EBADF)), // answered by the SQL service
            Handle::File(f) => match &f.source {
                Source::Staged => {
                    let inner = lock(&f.state);
                    let staging = inner.staging.as_ref().ok_or_else(|| errno(libc::EBADF))?;
                    read_fully_at(&staging.file, offset, size)?
                }
                Source::Plain(file) => read_fully_at(file, offset, size)?,
                Source::Empty => Vec::new(),
                Source::Object(reader) => {
                    if ReadAhead::is_sequential(offset, f.last_end.load(Ordering::Relaxed)) {
                        self.read_ahead.after(reader, offset);
                    }
                    let mut cost = AccessCost::default();
                    let data = reader.read_at(offset, size as usize, &mut cost)?;
                    Stats::add(&self.stats.bytes_decoded, cost.bytes_decoded);
                    f.last_end.store(offset + data.len() as u64, Ordering::Relaxed);
                    data
                }
            },
        };
        Stats::add(&self.stats.reads, 1);
        Stats::add(&self.stats.bytes_served, data.len() as u64);
        Ok(data)
    }

    fn writer(&self, fh: u64) -> FsResult<Arc<Handle>> {
        let handle = self.handle(fh)?;
        match &*handle {
            Handle::File(f) if f.write => Ok(handle),
            _ => Err(errno(libc::EBADF)),
        }
    }

    pub(super) fn write_file(&self, _ino: u64, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let handle = self.writer(fh)?;
        let Handle::File(f) = &*handle else { return Err(errno(libc::EBADF)) };
        let mut inner = lock(&f.state);
        let staging = inner.staging.as_mut().ok_or_else(|| errno(libc::EBADF))?;
        staging.file.write_all_at(data, offset)?;
        staging.modified = true;
        staging.mtime = SystemTime::now();
        f.state.set_staged_mtime(Some(staging.mtime));
        let end = offset + data.len() as u64;
        if f.state.staged_len().is_none_or(|l| l < end) {
            f.state.set_staged_len(Some(end));
        }
        Ok(data.len() as u32)
    }

    /// Commits the staging file of `ino` if it changed since the last commit.
    pub(super) fn commit(&self, ino: u64) -> FsResult<()> {
        let (_, state) = self.regular(ino)?;
        let mut inner = lock(&state);
        self.commit_locked(ino, &state, &mut inner)
    }

    /// The commit, by the holder of the file's lock. Whoever decides that a
    /// commit is due (a flush, the last writer's release, a truncate) keeps
    /// the lock until it is done, so a writer opening meanwhile waits and
    /// its changes are never committed on someone else's behalf. The kind
    /// is read under the lock too, so two commits of a new file adopt it
    /// once.
    fn commit_locked(&self, ino: u64, state: &FileState, inner: &mut FileInner) -> FsResult<()> {
        let Some(staging) = inner.staging.as_mut() else { return Ok(()) };
        if !staging.modified {
            return Ok(());
        }
        let (kind, _) = self.regular(ino)?;
        let len = staging.file.metadata()?.len();
        let (id, adopt) = match &kind {
            RegularKind::Managed(id) => (id.clone(), false),
            _ => (InodeId::new()?, true),
        };
        let input = StagingReader { file: &staging.file, pos: 0, len };
        if let Err(e) = gate::compress_to_path(input, &self.store.object_path(&id), &self.cfg.gate, &|_| {}) {
            // The rejected bytes are not retried (the verdict would be the
            // same): the file stays at its previous version, and the
            // kernel's cached pages and size of the rejected bytes go.
            staging.modified = false;
            Stats::add(&self.stats.writes_rejected, 1);
            self.invalidate_kernel_cache(ino);
            let e = FsError::from(e);
            log::error!("commit of inode {ino} ({len} bytes) rejected, previous version kept: {e}");
            return Err(e);
        }
        if adopt {
            let tree = self.tree_path(ino)?;
            self.store.adopt(&tree, &id)?;
            let meta = std::fs::symlink_metadata(&tree)?;
            self.table_mut().rekey(ino, (meta.dev(), meta.ino()), NodeKind::Regular(RegularKind::Managed(id.clone())));
        }
        super::attr::set_path_times(&self.store.inode_path(&id), None, Some(TimeOrNow::SpecificTime(staging.mtime)))?;
        staging.modified = false;
        state.set_staged_mtime(None);
        Stats::add(&self.stats.writes_committed, 1);
        Stats::add(&self.stats.bytes_written, len);
        Ok(())
    }

    /// Drops the kernel's cached pages and attributes of `ino`. Sent from
    /// another thread: a notification must not wait on a request in flight.
    fn invalidate_kernel_cache(&self, ino: u64) {
        if let Some(n) = self.notifier.get().cloned() {
            std::thread::spawn(move || {
                let _ = n.inval_inode(fuser::INodeNo(ino), 0, 0);
            });
        }
    }

    pub(super) fn flush_file(&self, ino: u64, fh: u64) -> FsResult<()> {
        match &*self.handle(fh)? {
            Handle::File(f) if f.write => self.commit(ino),
            _ => Ok(()),
        }
    }

    pub(super) fn fsync_file(&self, ino: u64, fh: u64) -> FsResult<()> {
        self.flush_file(ino, fh)
    }

    pub(super) fn release_file(&self, ino: u64, fh: u64) -> FsResult<()> {
        let Some(handle) = self.take_handle(fh) else { return Ok(()) };
        let Handle::File(f) = &*handle else { return Ok(()) };
        let mut result = Ok(());
        let mut inner = lock(&f.state);
        inner.handles -= 1;
        if f.write {
            inner.writers -= 1;
            if inner.writers == 0 {
                // Writes that reached us after the last flush (a shared
                // mapping written back at munmap) are committed here;
                // release cannot report an error, so a rejection is logged
                // and counted.
                result = self.commit_locked(ino, &f.state, &mut inner);
                drop_staging(&f.state, &mut inner);
            }
        }
        let no_handles = inner.handles == 0;
        drop(inner);
        if no_handles {
            self.collect_if_unlinked(ino)?;
        }
        result
    }

    /// Drops the object of a file whose last name and last handle are gone.
    pub(super) fn collect_if_unlinked(&self, ino: u64) -> FsResult<()> {
        if let Ok(NodeKind::Regular(RegularKind::Managed(id))) = self.kind(ino) {
            self.store.collect_if_unlinked(&id)?;
        }
        Ok(())
    }

    /// Sets the size of a file: in its staging file if it is being written
    /// (committed at close), else staged, truncated and committed now.
    pub(super) fn truncate(&self, ino: u64, size: u64, _fh: Option<u64>) -> FsResult<()> {
        let (_, state) = self.regular(ino)?;
        let mut inner = lock(&state);
        if let Some(s) = inner.staging.as_mut() {
            s.file.set_len(size)?;
            s.modified = true;
            s.mtime = SystemTime::now();
            state.set_staged_len(Some(size));
            state.set_staged_mtime(Some(s.mtime));
            return Ok(());
        }
        // No writer (a writer always has a staging file), and none can open
        // while we hold the lock: this staging file is ours alone.
        let (kind, _) = self.regular(ino)?;
        let mut staging = self.new_staging(&kind, ino, size == 0)?;
        staging.file.set_len(size)?;
        staging.modified = true;
        inner.staging = Some(staging);
        state.set_staged_len(Some(size));
        let result = self.commit_locked(ino, &state, &mut inner);
        drop_staging(&state, &mut inner);
        result
    }

    /// `utimens` on a file being written: the commit gives the file this
    /// mtime rather than the time of its last write (`cp -p` sets times
    /// before it closes).
    pub(super) fn note_explicit_mtime(&self, ino: u64, mtime: TimeOrNow) {
        let Ok((_, state)) = self.regular(ino) else { return };
        let mut inner = lock(&state);
        if let Some(s) = inner.staging.as_mut() {
            s.mtime = match mtime {
                TimeOrNow::Now => SystemTime::now(),
                TimeOrNow::SpecificTime(t) => t,
            };
            // The stub already carries these times; stat reads them there.
            state.set_staged_mtime(None);
        }
    }

    pub(super) fn allocate(&self, _ino: u64, fh: u64, offset: u64, length: u64, mode: i32) -> FsResult<()> {
        use std::os::fd::AsRawFd;
        let handle = self.writer(fh)?;
        let Handle::File(f) = &*handle else { return Err(errno(libc::EBADF)) };
        let mut inner = lock(&f.state);
        let staging = inner.staging.as_mut().ok_or_else(|| errno(libc::EBADF))?;
        // SAFETY: a valid fd of a file we own.
        if unsafe { libc::fallocate(staging.file.as_raw_fd(), mode, offset as i64, length as i64) } < 0 {
            return Err(io::Error::last_os_error().into());
        }
        staging.modified = true;
        staging.mtime = SystemTime::now();
        f.state.set_staged_mtime(Some(staging.mtime));
        f.state.set_staged_len(Some(staging.file.metadata()?.len()));
        Ok(())
    }

    pub(super) fn open_dir(&self, ino: u64) -> FsResult<u64> {
        let mut entries = vec![DirEntry { ino, kind: FileType::Directory, name: ".".into() }, DirEntry { ino, kind: FileType::Directory, name: "..".into() }];
        if ino == CONTROL_DIR {
            entries.push(DirEntry { ino: STATS_FILE, kind: FileType::RegularFile, name: "stats".into() });
            entries.push(DirEntry { ino: SQL_FILE, kind: FileType::RegularFile, name: "sql".into() });
            return Ok(self.new_handle(Handle::Dir(entries)));
        }
        if !matches!(self.kind(ino)?, NodeKind::Directory) {
            return Err(errno(libc::ENOTDIR));
        }
        let dir = self.tree_path(ino)?;
        if ino == super::inode::ROOT {
            entries.push(DirEntry { ino: CONTROL_DIR, kind: FileType::Directory, name: crate::store::WORK_DIR.into() });
        }
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if self.store.is_work_dir(&dir, &name) {
                continue;
            }
            let ft = entry.file_type()?;
            let kind = super::attr::file_type_of(&ft);
            let name = if ft.is_file() { crate::store::logical_name(&dir, &name) } else { name };
            let backing = std::os::unix::fs::DirEntryExt::ino(&entry);
            let ino = self.table().child(ino, &entry.file_name()).unwrap_or(backing);
            entries.push(DirEntry { ino, kind, name });
        }
        Ok(self.new_handle(Handle::Dir(entries)))
    }
}
