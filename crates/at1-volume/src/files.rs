//! Open files: writes go to a staging file, a commit sends it through the
//! gate into a new object and swaps the file's content in one
//! transaction; reads decode only the blocks they touch.
//!
//! - The writers of a file share one staging file (an unnamed file in the
//!   store's `staging/`), made from the current content (empty with
//!   `O_TRUNC`) at the first open for writing, gone at the last close.
//! - Every flush (each `close`) and `fsync` of a writer commits the staging
//!   file if it changed: the gate encodes, decodes back and compares, the
//!   object is put, and one transaction points the inode at it (the journal
//!   records the change; the old object is released). A rejection fails
//!   that `close`/`fsync` with EIO and the previous content stays.
//! - A reader reads the content committed *now* (not at its open), so a
//!   handle opened before a rewrite reads the new content afterwards, as
//!   on a local disk; the kernel's cached pages of the old one are dropped
//!   at each commit.

use std::io::{self, Read};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use at1_core::gate;
use at1_core::reader::{AccessCost, Object, Reader};
use at1_store::{Content, Ino, Inode, Kind, Nanos, ObjectId};
use serde_json::json;

use crate::error::{errno, VResult, VolumeError};
use crate::journal;
use crate::staging::StagingBytes;
use crate::stats::Stats;
use crate::volume::{content_json, hex, lock, now, path_in, Attr, Owner, Volume};

const NOT_STAGED: u64 = u64::MAX;

/// What a file holds once committed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Committed {
    content: Option<Content>,
    size: u64,
}

/// The bytes of a file being written.
#[derive(Debug)]
struct Staging {
    bytes: StagingBytes,
    /// Changed since the last commit.
    modified: bool,
    /// Time of the last change, given to the file at commit.
    mtime: Nanos,
}

#[derive(Debug, Default)]
struct Writers {
    staging: Option<Staging>,
    count: usize,
}

/// Write state of a regular file with open handles, shared by all of
/// them.
#[derive(Debug)]
pub struct FileState {
    writers: Mutex<Writers>,
    /// Open handles (changed under the volume's open-files lock, so an
    /// unlink sees every open).
    handles: AtomicUsize,
    committed: Mutex<Committed>,
    /// Length of the staging file, or `NOT_STAGED`: read without a lock so
    /// `stat` never waits for a commit in progress.
    staged_len: AtomicU64,
    /// Time of the last uncommitted change (0: none).
    staged_mtime: AtomicI64,
}

impl FileState {
    fn new(inode: &Inode) -> FileState {
        FileState {
            writers: Mutex::default(),
            handles: AtomicUsize::new(0),
            committed: Mutex::new(Committed { content: inode.content.clone(), size: inode.size }),
            staged_len: AtomicU64::new(NOT_STAGED),
            staged_mtime: AtomicI64::new(0),
        }
    }

    pub(crate) fn handles(&self) -> usize {
        self.handles.load(Ordering::Acquire)
    }

    /// Shows uncommitted writes in `stat`.
    pub(crate) fn overlay(&self, attr: &mut Attr) {
        let len = self.staged_len.load(Ordering::Acquire);
        if len != NOT_STAGED {
            attr.size = len;
        }
        let t = self.staged_mtime.load(Ordering::Acquire);
        if t != 0 {
            attr.mtime = t;
            attr.ctime = attr.ctime.max(t);
        }
    }

    /// A time set explicitly (`touch -d`, `cp -p`) while the file is being
    /// written: its commit keeps it.
    pub(crate) fn keep_mtime(&self, t: Nanos) {
        let mut w = lock(&self.writers);
        if let Some(s) = w.staging.as_mut() {
            s.mtime = t;
            self.staged_mtime.store(t, Ordering::Release);
        }
    }

    fn set_staged(&self, staging: Option<&Staging>) -> io::Result<()> {
        match staging {
            Some(s) => {
                self.staged_len.store(s.bytes.len()?, Ordering::Release);
                self.staged_mtime.store(if s.modified { s.mtime } else { 0 }, Ordering::Release);
            }
            None => {
                self.staged_len.store(NOT_STAGED, Ordering::Release);
                self.staged_mtime.store(0, Ordering::Release);
            }
        }
        Ok(())
    }

    fn committed(&self) -> Committed {
        lock(&self.committed).clone()
    }

    /// The content was re-encoded (same bytes): readers move to the new
    /// object.
    pub(crate) fn recompressed(&self, old: &Content, new: &Content) {
        let mut c = lock(&self.committed);
        if c.content.as_ref() == Some(old) {
            c.content = Some(new.clone());
        }
    }
}

/// How a file is opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenFlags {
    pub write: bool,
    pub truncate: bool,
}

/// An open handle of a regular file.
#[derive(Debug)]
pub struct OpenFile {
    pub ino: Ino,
    pub write: bool,
    state: Arc<FileState>,
    /// End of the previous read, to spot sequential reading.
    pub last_end: AtomicU64,
}

impl Volume {
    /// The state of file `inode`, made (and counted as one more handle)
    /// under the open-files lock.
    fn attach(&self, inode: &Inode) -> Arc<FileState> {
        let mut files = lock(&self.files);
        let state = files.entry(inode.ino).or_insert_with(|| Arc::new(FileState::new(inode))).clone();
        state.handles.fetch_add(1, Ordering::AcqRel);
        state
    }

    /// Inode `ino`, if it is a regular file (EISDIR, EINVAL otherwise).
    fn regular_file(&self, ino: Ino) -> VResult<Inode> {
        let inode = {
            let r = self.meta.read()?;
            Self::inode_in(&*r, ino)?
        };
        match inode.kind {
            Kind::File => Ok(inode),
            Kind::Dir => Err(errno(libc::EISDIR)),
            _ => Err(errno(libc::EINVAL)),
        }
    }

    pub fn open_file(&self, ino: Ino, flags: OpenFlags) -> VResult<Arc<OpenFile>> {
        let inode = self.regular_file(ino)?;
        if flags.write || flags.truncate {
            self.writable()?;
        }
        let state = self.attach(&inode);
        if flags.write {
            if let Err(e) = self.add_writer(ino, &state, flags.truncate) {
                self.detach(ino, &state);
                return Err(e);
            }
        }
        Ok(Arc::new(OpenFile { ino, write: flags.write, state, last_end: AtomicU64::new(u64::MAX) }))
    }

    fn add_writer(&self, ino: Ino, state: &FileState, truncate: bool) -> VResult<()> {
        let mut w = lock(&state.writers);
        match w.staging.as_mut() {
            Some(s) if truncate => {
                s.bytes.set_len(0)?;
                s.modified = true;
                s.mtime = now();
            }
            Some(_) => {}
            None => w.staging = Some(self.new_staging(ino, &state.committed(), truncate)?),
        }
        state.set_staged(w.staging.as_ref())?;
        w.count += 1;
        Ok(())
    }

    /// A new staging area holding the committed content (or nothing).
    fn new_staging(&self, ino: Ino, committed: &Committed, empty: bool) -> VResult<Staging> {
        let mut bytes = StagingBytes::new(self.staging_dir.clone(), self.staging_memory.clone());
        if !empty {
            if let Some(content) = &committed.content {
                let object = self.object_of(ino, content)?;
                let mut out = io::BufWriter::with_capacity(1 << 20, &mut bytes);
                Reader::new(object, Some(self.cache.clone())).extract(&mut out, |_| {}).map_err(|e| self.damaged(ino, e))?;
                io::Write::flush(&mut out)?;
            }
        }
        Ok(Staging { bytes, modified: empty && committed.size > 0, mtime: now() })
    }

    /// Whether file `ino` has writers (its staging file exists).
    pub fn has_writers(&self, ino: Ino) -> bool {
        lock(&self.files).get(&ino).is_some_and(|s| s.staged_len.load(Ordering::Acquire) != NOT_STAGED)
    }

    pub fn create(&self, parent: Ino, name: &[u8], perm: u32, owner: Owner, flags: OpenFlags) -> VResult<(Attr, Arc<OpenFile>)> {
        let attr = self.mknod(parent, name, Kind::File, perm, 0, owner)?;
        let handle = self.open_file(attr.ino, flags)?;
        Ok((self.getattr(attr.ino)?, handle))
    }

    /// The parsed object of a content, or an error that names the file.
    pub(crate) fn object_of(&self, ino: Ino, content: &Content) -> VResult<Arc<Object>> {
        self.contents.get(&content.object).map_err(|e| self.damaged(ino, e))
    }

    /// A read failure of file `ino`, logged with its path: its content is
    /// missing or does not verify.
    pub(crate) fn damaged(&self, ino: Ino, e: at1_core::reader::ReadError) -> VolumeError {
        if let at1_core::reader::ReadError::Io(io) = &e {
            if io.kind() != io::ErrorKind::NotFound {
                return VolumeError::Io(io::Error::new(io.kind(), io.to_string()));
            }
        }
        let path = self.path_of(ino);
        log::error!("{path}: its content cannot be read: {e}");
        VolumeError::Damaged { path, what: e.to_string() }
    }

    /// A reader of the content `h` reads, for reading ahead (`None` for a
    /// writer or an empty file).
    pub fn reader_for(&self, h: &OpenFile) -> VResult<Option<Reader>> {
        if h.write {
            return Ok(None);
        }
        match h.state.committed().content {
            Some(c) => Ok(Some(Reader::new(self.object_of(h.ino, &c)?, Some(self.cache.clone())))),
            None => Ok(None),
        }
    }

    pub fn read(&self, h: &OpenFile, offset: u64, size: u32) -> VResult<Vec<u8>> {
        let data = if h.write {
            let w = lock(&h.state.writers);
            let staging = w.staging.as_ref().ok_or_else(|| errno(libc::EBADF))?;
            staging.bytes.read_at(offset, size)?
        } else {
            let committed = h.state.committed();
            match &committed.content {
                None => Vec::new(),
                Some(c) => {
                    let reader = Reader::new(self.object_of(h.ino, c)?, Some(self.cache.clone()));
                    let mut cost = AccessCost::default();
                    let data = reader.read_at(offset, size as usize, &mut cost).map_err(|e| self.damaged(h.ino, e))?;
                    Stats::add(&self.stats.bytes_decoded, cost.bytes_decoded);
                    data
                }
            }
        };
        h.last_end.store(offset + data.len() as u64, Ordering::Relaxed);
        Stats::add(&self.stats.reads, 1);
        Stats::add(&self.stats.bytes_served, data.len() as u64);
        Ok(data)
    }

    pub fn write(&self, h: &OpenFile, offset: u64, data: &[u8]) -> VResult<u32> {
        if !h.write {
            return Err(errno(libc::EBADF));
        }
        let mut w = lock(&h.state.writers);
        let staging = w.staging.as_mut().ok_or_else(|| errno(libc::EBADF))?;
        if data.is_empty() {
            // Writes nothing and extends nothing (POSIX): the staged
            // length below must not move past the staging file's end.
            return Ok(0);
        }
        staging.bytes.write_at(data, offset)?;
        staging.modified = true;
        staging.mtime = now();
        h.state.staged_mtime.store(staging.mtime, Ordering::Release);
        let end = offset + data.len() as u64;
        let _ = h.state.staged_len.fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| (l == NOT_STAGED || l < end).then_some(end));
        Ok(data.len() as u32)
    }

    pub fn fallocate(&self, h: &OpenFile, offset: u64, length: u64, mode: i32) -> VResult<()> {
        if !h.write {
            return Err(errno(libc::EBADF));
        }
        let mut w = lock(&h.state.writers);
        let staging = w.staging.as_mut().ok_or_else(|| errno(libc::EBADF))?;
        staging.bytes.fallocate(mode, offset, length)?;
        staging.modified = true;
        staging.mtime = now();
        h.state.set_staged(Some(staging))?;
        Ok(())
    }

    /// `close`: commits a writer's changes.
    pub fn flush(&self, h: &OpenFile) -> VResult<()> {
        if !h.write {
            return Ok(());
        }
        let mut w = lock(&h.state.writers);
        self.commit_locked(h.ino, &h.state, &mut w)
    }

    /// `fsync`: commits, then makes every committed change durable.
    pub fn fsync(&self, h: &OpenFile) -> VResult<()> {
        self.flush(h)?;
        self.sync()
    }

    /// The last close of a handle.
    pub fn release(&self, h: &OpenFile) -> VResult<()> {
        let mut result = Ok(());
        if h.write {
            let mut w = lock(&h.state.writers);
            w.count = w.count.saturating_sub(1);
            if w.count == 0 {
                // Writes that came after the last flush (a shared mapping
                // written back at munmap) are committed here; release
                // cannot report an error, so a rejection is logged.
                result = self.commit_locked(h.ino, &h.state, &mut w);
                w.staging = None;
                h.state.set_staged(None)?;
            }
        }
        self.detach(h.ino, &h.state);
        result
    }

    /// One handle fewer; the last one of an unlinked file takes it away.
    fn detach(&self, ino: Ino, state: &Arc<FileState>) {
        let mut files = lock(&self.files);
        if state.handles.fetch_sub(1, Ordering::AcqRel) > 1 {
            return;
        }
        if files.get(&ino).is_some_and(|s| Arc::ptr_eq(s, state)) {
            files.remove(&ino);
        }
        if let Err(e) = self.collect_orphan(ino) {
            log::error!("removing unlinked inode {ino}: {e}");
        }
    }

    /// Removes inode `ino` if it has no name left (an orphan kept while
    /// open).
    pub(crate) fn collect_orphan(&self, ino: Ino) -> VResult<()> {
        if self.read_only {
            return Ok(());
        }
        let orphan = self.meta.read()?.inode(ino)?.is_some_and(|i| i.nlink == 0);
        if !orphan {
            return Ok(());
        }
        self.change(|txn, t| {
            let Some(inode) = txn.inode(ino)? else { return Ok(()) };
            if inode.nlink > 0 {
                return Ok(());
            }
            let seq = journal::append(txn, t, "release", &json!({"ino": ino, "content": content_json(&inode.content)}))?;
            if let Some(c) = &inode.content {
                txn.add_garbage(&c.object, seq)?;
            }
            txn.delete_inode(ino)?;
            Ok(())
        })
    }

    /// Commits the staging file of `ino` if it changed, by the holder of
    /// its writers' lock (so no writer changes it meanwhile, and a commit
    /// is never made on behalf of a writer that opened after it began).
    fn commit_locked(&self, ino: Ino, state: &FileState, w: &mut Writers) -> VResult<()> {
        let Some(staging) = w.staging.as_mut() else { return Ok(()) };
        if !staging.modified {
            return Ok(());
        }
        let len = staging.bytes.len()?;
        let gate = self.write_gate.as_ref().unwrap_or(&self.gate);
        let content = match self.encode_reader(ino, staging.bytes.reader()?, len, gate) {
            Ok(c) => c,
            Err(e) => {
                // The rejected bytes are not retried (the verdict would be
                // the same): the file stays at its previous version, and the
                // kernel's pages of the rejected bytes go.
                staging.modified = false;
                Stats::add(&self.stats.writes_rejected, 1);
                self.invalidate(ino);
                log::error!("commit of {} ({len} bytes) rejected, previous version kept: {e}", self.path_of(ino));
                return Err(e);
            }
        };
        self.swap_content(ino, content, len, staging.mtime, "write", self.write_gate.is_some())?;
        staging.modified = false;
        *lock(&state.committed) = Committed { content: self.meta.read()?.inode(ino)?.and_then(|i| i.content), size: len };
        state.set_staged(Some(staging))?;
        Ok(())
    }

    /// Sends the `len` bytes `input` reads through the gate (configured by
    /// `cfg`) into a new object. Empty content needs no object.
    pub(crate) fn encode_reader(&self, ino: Ino, input: impl Read + Send, len: u64, cfg: &gate::GateConfig) -> VResult<Option<Content>> {
        if len == 0 {
            return Ok(None);
        }
        let mut temp = self.objects.create_temp()?;
        let report = gate::compress_to_file(input, &mut temp.file, cfg, &|_| {})?;
        let id = ObjectId::random()?;
        self.objects.put(&id, temp)?;
        log::debug!("{}: {len} bytes committed as object {id}", self.path_of(ino));
        Ok(Some(Content { object: id, stored_len: report.stored_len, sha256: report.sha256 }))
    }

    /// Points inode `ino` at new content in one transaction (the journal
    /// records it, the old object is released); drops the kernel's pages.
    /// With `queue`, the new content was encoded at the fast level and waits
    /// to be re-encoded (`recompress.rs`).
    fn swap_content(&self, ino: Ino, content: Option<Content>, size: u64, mtime: Nanos, op: &str, queue: bool) -> VResult<()> {
        let result = self.change(|txn, t| {
            let mut inode = Self::inode_in(txn, ino)?;
            let old = std::mem::replace(&mut inode.content, content.clone());
            let old_size = std::mem::replace(&mut inode.size, size);
            inode.mtime = mtime;
            inode.ctime = t;
            txn.update_inode(&inode)?;
            let sha = content.as_ref().map_or(crate::xattr::EMPTY_SHA256_HEX.to_string(), |c| hex(&c.sha256));
            let detail = json!({"ino": ino, "path": path_in(txn, ino), "size": size, "sha256": sha, "content": content_json(&content), "old": content_json(&old), "old_size": old_size});
            let seq = journal::append(txn, t, op, &detail)?;
            if let Some(old) = old {
                txn.add_garbage(&old.object, seq)?;
                txn.dequeue_recompress(&old.object)?;
            }
            if let (true, Some(c)) = (queue, &content) {
                txn.queue_recompress(&c.object, ino, t)?;
            }
            Ok(())
        });
        if result.is_err() {
            if let Some(c) = &content {
                let _ = self.objects.delete(&c.object);
            }
            return result;
        }
        Stats::add(&self.stats.writes_committed, 1);
        Stats::add(&self.stats.bytes_written, size);
        self.last_commit.store(now(), Ordering::Relaxed);
        if queue {
            self.work_queued();
        }
        self.invalidate(ino);
        Ok(())
    }

    /// `truncate`: on a file being written, applied to its staging file
    /// (committed at close); otherwise committed at once.
    pub(crate) fn truncate(&self, ino: Ino, size: u64) -> VResult<()> {
        self.writable()?;
        let inode = self.regular_file(ino)?;
        let state = lock(&self.files).get(&ino).cloned();
        if let Some(state) = &state {
            let mut w = lock(&state.writers);
            if let Some(staging) = w.staging.as_mut() {
                staging.bytes.set_len(size)?;
                staging.modified = true;
                staging.mtime = now();
                state.set_staged(Some(staging))?;
                return Ok(());
            }
        }
        let t = now();
        if size == 0 {
            self.swap_content(ino, None, 0, t, "truncate", false)?;
        } else {
            let committed = Committed { content: inode.content.clone(), size: inode.size };
            let mut staging = self.new_staging(ino, &committed, false)?;
            staging.bytes.set_len(size)?;
            let gate = self.write_gate.as_ref().unwrap_or(&self.gate);
            let content = self.encode_reader(ino, staging.bytes.reader()?, size, gate)?;
            self.swap_content(ino, content, size, t, "truncate", self.write_gate.is_some())?;
        }
        if let Some(state) = state {
            *lock(&state.committed) = Committed { content: self.meta.read()?.inode(ino)?.and_then(|i| i.content), size };
        }
        Ok(())
    }
}
