//! Open files: writes go to a staging area over the committed extents; a
//! commit sends the extents the writes touched through the gate into new
//! objects and swaps the file's extent map in one transaction; reads
//! decode only the blocks they touch.
//!
//! - The writers of a file share one staging area, made at the first open
//!   for writing: the committed extents (none with `O_TRUNC`) and the bytes
//!   written since, at their offsets (in memory, or an unnamed file in the
//!   store's `staging/`), with the ranges they cover. Nothing is decoded
//!   at open.
//! - Every flush (each `close`) and `fsync` of a writer commits the staging
//!   area if it changed: the extents no write touched are kept, the rest
//!   of the file is encoded anew (`extents::plan`) — the gate encodes,
//!   decodes back and compares, the objects are put — and one transaction
//!   swaps the map (the journal records the extents added and removed; the
//!   removed objects are released). A rejection fails that
//!   `close`/`fsync` with EIO, the writes since the last commit are
//!   dropped and the previous content stays.
//! - A reader reads the content committed *now* (not at its open), so a
//!   handle opened before a rewrite reads the new content afterwards, as
//!   on a local disk; the kernel's cached pages of the old one are dropped
//!   at each commit.

use std::io::{self, Read};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use at1_core::gate;
use at1_core::reader::{AccessCost, Object, Reader};
use at1_store::{Content, Extent, Ino, Inode, Kind, Nanos, ObjectId};
use serde_json::json;

use crate::error::{errno, VResult, VolumeError};
use crate::extents::{self, Piece, Ranges};
use crate::journal;
use crate::staging::StagingBytes;
use crate::stats::Stats;
use crate::volume::{extents_json, hex, lock, now, path_in, Attr, Owner, Volume};

const NOT_STAGED: u64 = u64::MAX;

/// What a file holds once committed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Committed {
    extents: Vec<Extent>,
    size: u64,
}

/// The bytes of a file being written: changes over committed extents.
#[derive(Debug)]
struct Staging {
    /// The extents the changes apply to (those committed at the last
    /// commit, or at the open).
    base: Vec<Extent>,
    /// The base's bytes at and past this offset were cut (a truncate):
    /// unwritten bytes there read as zeros.
    base_len: u64,
    /// Bytes written since the last commit, each at its offset.
    bytes: StagingBytes,
    /// Which offsets of `bytes` were written.
    dirty: Ranges,
    /// The file's length.
    len: u64,
    /// Changed since the last commit.
    modified: bool,
    /// Time of the last change, given to the file at commit.
    mtime: Nanos,
}

impl Staging {
    /// The file cut (or extended with zeros) to `len` bytes.
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        if len < self.len {
            self.dirty.cut(len);
            self.base_len = self.base_len.min(len);
            if self.bytes.len()? > len {
                self.bytes.set_len(len)?;
            }
        }
        self.len = len;
        self.modified = true;
        self.mtime = now();
        Ok(())
    }

    /// Zeros over `[offset, offset + length)` (within the file).
    fn zero(&mut self, offset: u64, length: u64) -> io::Result<()> {
        let end = offset.saturating_add(length).min(self.len);
        if offset >= end {
            return Ok(());
        }
        if self.bytes.len()? < end {
            self.bytes.set_len(end)?;
        }
        self.bytes.fallocate(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, offset, end - offset)?;
        self.dirty.insert(offset, end);
        Ok(())
    }
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
            committed: Mutex::new(Committed { extents: inode.extents.clone(), size: inode.size }),
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
                self.staged_len.store(s.len, Ordering::Release);
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

    /// An extent was re-encoded (same bytes): readers and writers move to
    /// the new object (the old one is released).
    pub(crate) fn recompressed(&self, old: &Content, new: &Content) {
        let swap = |extents: &mut Vec<Extent>| {
            for e in extents.iter_mut().filter(|e| e.content == *old) {
                e.content = new.clone();
            }
        };
        if let Some(s) = lock(&self.writers).staging.as_mut() {
            swap(&mut s.base);
        }
        swap(&mut lock(&self.committed).extents);
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
            Some(s) if truncate => s.set_len(0)?,
            Some(_) => {}
            None => w.staging = Some(self.new_staging(&self.committed_now(ino, state)?, truncate)),
        }
        state.set_staged(w.staging.as_ref())?;
        w.count += 1;
        Ok(())
    }

    /// A new staging area over the committed content (or nothing).
    fn new_staging(&self, committed: &Committed, empty: bool) -> Staging {
        let (base, len) = if empty { (Vec::new(), 0) } else { (committed.extents.clone(), committed.size) };
        Staging {
            base,
            base_len: len,
            bytes: StagingBytes::new(self.staging_dir.clone(), self.staging_memory.clone()),
            dirty: Ranges::default(),
            len,
            modified: empty && committed.size > 0,
            mtime: now(),
        }
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

    /// What file `ino` holds now, read from the metadata (so a staging area
    /// never starts from an object the background re-encoding has just
    /// released).
    fn committed_now(&self, ino: Ino, state: &FileState) -> VResult<Committed> {
        let inode = self.regular_file(ino)?;
        let c = Committed { extents: inode.extents, size: inode.size };
        *lock(&state.committed) = c.clone();
        Ok(c)
    }

    /// The parsed object of a content, or an error that names the file.
    pub(crate) fn object_of(&self, ino: Ino, content: &Content) -> VResult<Arc<Object>> {
        self.contents.get(&content.object).map_err(|e| self.damaged(ino, e))
    }

    /// One object holding the whole content of file `inode` (`None` when it
    /// is empty), for queries: its own when it has one extent; otherwise
    /// its bytes encoded anew through the gate into an unnamed temporary
    /// file (simple and correct; per-extent queries are not done yet).
    pub(crate) fn whole_object(&self, inode: &Inode) -> VResult<Option<Arc<Object>>> {
        match inode.extents.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(self.object_of(inode.ino, &one.content)?)),
            several => {
                let mut file = tempfile::tempfile_in(&*self.staging_dir)?;
                let input = ExtentsReader { volume: self, ino: inode.ino, extents: several, at: 0, end: inode.size };
                let cfg = self.write_gate.as_ref().unwrap_or(&self.gate);
                gate::compress_to_file(io::BufReader::with_capacity(1 << 20, input), &mut file, cfg, &|_| {})?;
                Ok(Some(Arc::new(Object::open_file(file).map_err(|e| self.damaged(inode.ino, e))?)))
            }
        }
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

    /// A reader of the extent holding byte `offset` of what `h` reads, and
    /// the offset in it, for reading ahead (`None` for a writer, past the
    /// end or for an empty file).
    pub fn reader_for(&self, h: &OpenFile, offset: u64) -> VResult<Option<(Reader, u64)>> {
        if h.write {
            return Ok(None);
        }
        let committed = h.state.committed();
        match committed.extents.iter().find(|e| e.start <= offset && offset < e.end()) {
            Some(e) => Ok(Some((Reader::new(self.object_of(h.ino, &e.content)?, Some(self.cache.clone())), offset - e.start))),
            None => Ok(None),
        }
    }

    /// Bytes `[start, stop)` of a file made of `extents`, appended to
    /// `out`: each extent decodes only the blocks the range touches;
    /// bytes no extent holds read as zeros.
    pub(crate) fn read_extents(&self, ino: Ino, extents: &[Extent], start: u64, stop: u64, out: &mut Vec<u8>) -> VResult<()> {
        let mut at = start;
        let first = extents.partition_point(|e| e.end() <= at);
        let mut cost = AccessCost::default();
        for e in extents.get(first..).unwrap_or_default() {
            if at >= stop {
                break;
            }
            if e.start > at {
                let zeros = e.start.min(stop) - at;
                out.resize(out.len() + zeros as usize, 0);
                at += zeros;
            }
            if at >= stop {
                break;
            }
            let want = (e.end().min(stop) - at) as usize;
            let reader = Reader::new(self.object_of(ino, &e.content)?, Some(self.cache.clone()));
            let data = reader.read_at(at - e.start, want, &mut cost).map_err(|err| self.damaged(ino, err))?;
            if data.len() != want {
                let path = self.path_of(ino);
                log::error!("{path}: object {} holds fewer bytes than its extent at {}", e.content.object, e.start);
                return Err(VolumeError::Damaged { path, what: format!("object {} is shorter than its extent", e.content.object) });
            }
            out.extend_from_slice(&data);
            at += want as u64;
        }
        if at < stop {
            out.resize(out.len() + (stop - at) as usize, 0);
        }
        Stats::add(&self.stats.bytes_decoded, cost.bytes_decoded);
        Ok(())
    }

    /// Up to `size` bytes from `offset` of a file being written: written
    /// bytes from the staging area, the rest from the base extents.
    fn read_staged(&self, ino: Ino, s: &Staging, offset: u64, size: u64) -> VResult<Vec<u8>> {
        let end = offset.saturating_add(size).min(s.len);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut at = offset;
        while at < end {
            match s.dirty.at_or_after(at) {
                Some((from, to)) if from <= at => {
                    let stop = to.min(end);
                    let mut data = s.bytes.read_at(at, (stop - at) as u32)?;
                    data.resize((stop - at) as usize, 0);
                    out.extend_from_slice(&data);
                    at = stop;
                }
                next => {
                    let stop = next.map_or(end, |(from, _)| from.min(end));
                    let base_stop = stop.min(s.base_len).max(at);
                    self.read_extents(ino, &s.base, at, base_stop, &mut out)?;
                    out.resize(out.len() + (stop - base_stop) as usize, 0);
                    at = stop;
                }
            }
        }
        Ok(out)
    }

    pub fn read(&self, h: &OpenFile, offset: u64, size: u32) -> VResult<Vec<u8>> {
        let data = if h.write {
            let w = lock(&h.state.writers);
            let staging = w.staging.as_ref().ok_or_else(|| errno(libc::EBADF))?;
            self.read_staged(h.ino, staging, offset, u64::from(size))?
        } else {
            let committed = h.state.committed();
            let stop = offset.saturating_add(u64::from(size)).min(committed.size);
            let mut out = Vec::new();
            if offset < stop {
                self.read_extents(h.ino, &committed.extents, offset, stop, &mut out)?;
            }
            out
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
        let end = offset.checked_add(data.len() as u64).ok_or_else(|| errno(libc::EFBIG))?;
        staging.bytes.write_at(data, offset)?;
        staging.dirty.insert(offset, end);
        staging.len = staging.len.max(end);
        staging.modified = true;
        staging.mtime = now();
        h.state.staged_mtime.store(staging.mtime, Ordering::Release);
        let _ = h.state.staged_len.fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| (l == NOT_STAGED || l < end).then_some(end));
        Ok(data.len() as u32)
    }

    pub fn fallocate(&self, h: &OpenFile, offset: u64, length: u64, mode: i32) -> VResult<()> {
        if !h.write {
            return Err(errno(libc::EBADF));
        }
        let mut w = lock(&h.state.writers);
        let staging = w.staging.as_mut().ok_or_else(|| errno(libc::EBADF))?;
        let end = offset.checked_add(length).ok_or_else(|| errno(libc::EFBIG))?;
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        match mode & !libc::FALLOC_FL_KEEP_SIZE {
            // Space for bytes that read as zeros: nothing to keep but the
            // length.
            0 => {}
            libc::FALLOC_FL_PUNCH_HOLE if keep_size => staging.zero(offset, length)?,
            libc::FALLOC_FL_ZERO_RANGE => {
                if !keep_size && end > staging.len {
                    staging.len = end;
                }
                staging.zero(offset, length)?;
            }
            _ => return Err(errno(libc::EOPNOTSUPP)),
        }
        if !keep_size && end > staging.len {
            staging.len = end;
        }
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
            let seq = journal::append(txn, t, "release", &json!({"ino": ino, "removed": extents_json(&inode.extents)}))?;
            for e in &inode.extents {
                txn.add_garbage(&e.content.object, seq)?;
            }
            txn.delete_inode(ino)?;
            Ok(())
        })
    }

    /// Commits the staging area of `ino` if it changed, by the holder of
    /// its writers' lock (so no writer changes it meanwhile, and a commit
    /// is never made on behalf of a writer that opened after it began).
    fn commit_locked(&self, ino: Ino, state: &FileState, w: &mut Writers) -> VResult<()> {
        let Some(staging) = w.staging.as_mut() else { return Ok(()) };
        if !staging.modified {
            return Ok(());
        }
        let len = staging.len;
        let gate = self.write_gate.as_ref().unwrap_or(&self.gate);
        let extents = match self.encode_changes(ino, staging, gate) {
            Ok(e) => e,
            Err(e) => {
                // The rejected bytes are not retried (the verdict would be
                // the same): the file stays at its previous version, and the
                // kernel's pages of the rejected bytes go.
                Stats::add(&self.stats.writes_rejected, 1);
                let committed = self.committed_now(ino, state)?;
                *staging = self.new_staging(&committed, false);
                state.set_staged(Some(staging))?;
                self.invalidate(ino);
                log::error!("commit of {} ({len} bytes) rejected, previous version kept: {e}", self.path_of(ino));
                return Err(e);
            }
        };
        self.swap_extents(ino, extents, len, staging.mtime, "write", self.write_gate.is_some())?;
        let committed = self.committed_now(ino, state)?;
        let mtime = staging.mtime;
        *staging = self.new_staging(&committed, false);
        staging.mtime = mtime;
        state.set_staged(Some(staging))?;
        Ok(())
    }

    /// The new extent map of a staging area: the pieces `extents::plan`
    /// keeps, and the others encoded through the gate (`cfg`) into new
    /// objects (deleted again if one is rejected).
    fn encode_changes(&self, ino: Ino, staging: &Staging, cfg: &gate::GateConfig) -> VResult<Vec<NewExtent>> {
        let plan = extents::plan(&staging.base, staging.base_len, &staging.dirty, staging.len, self.segment_size);
        let mut out: Vec<NewExtent> = Vec::with_capacity(plan.len());
        for piece in plan {
            let made = match piece {
                Piece::Keep(e) => Ok(NewExtent { extent: e, made: false }),
                Piece::Encode { start, end } => {
                    let input = StagedReader { volume: self, ino, staging, at: start, end };
                    // `plan` never yields an empty piece (the gate makes no
                    // object of no bytes).
                    self.encode_reader(ino, io::BufReader::with_capacity(1 << 20, input), end - start, cfg).and_then(|c| match c {
                        Some(content) => Ok(NewExtent { extent: Extent { start, len: end - start, content }, made: true }),
                        None => Err(VolumeError::Io(io::Error::other(format!("an empty extent was planned at {start}")))),
                    })
                }
            };
            match made {
                Ok(n) => out.push(n),
                Err(e) => {
                    for n in out.iter().filter(|n| n.made) {
                        let _ = self.objects.delete(&n.extent.content.object);
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
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

    /// Swaps inode `ino`'s extent map for `new` in one transaction (the
    /// journal records the extents added and removed; the removed objects
    /// are released); drops the kernel's pages. With `queue`, the new
    /// objects were encoded at the fast level and wait to be re-encoded
    /// (`recompress.rs`). On failure the new objects are deleted.
    fn swap_extents(&self, ino: Ino, new: Vec<NewExtent>, size: u64, mtime: Nanos, op: &str, queue: bool) -> VResult<()> {
        let made: Vec<ObjectId> = new.iter().filter(|n| n.made).map(|n| n.extent.content.object).collect();
        let result = self.change(|txn, t| {
            let mut inode = Self::inode_in(txn, ino)?;
            // A kept extent may have been re-encoded in the background since
            // the staging area began (same bytes, another object).
            let mut extents = Vec::with_capacity(new.len());
            for n in &new {
                if n.made {
                    extents.push(n.extent.clone());
                    continue;
                }
                let e = &n.extent;
                let now = inode.extents.iter().find(|c| c.start == e.start && c.len == e.len && c.content.sha256 == e.content.sha256);
                match now {
                    Some(c) => extents.push(c.clone()),
                    None => return Err(VolumeError::Io(io::Error::other(format!("extent at {} changed under a commit", e.start)))),
                }
            }
            let added: Vec<Extent> = extents.iter().filter(|e| !inode.extents.contains(e)).cloned().collect();
            let removed: Vec<Extent> = inode.extents.iter().filter(|e| !extents.contains(e)).cloned().collect();
            let old_size = std::mem::replace(&mut inode.size, size);
            inode.extents = extents;
            inode.mtime = mtime;
            inode.ctime = t;
            txn.update_inode(&inode)?;
            let mut detail = json!({"ino": ino, "path": path_in(txn, ino), "size": size, "extents": inode.extents.len(),
                "added": extents_json(&added), "removed": extents_json(&removed), "old_size": old_size});
            // The whole file's SHA-256 is known when one object holds it.
            match inode.extents.as_slice() {
                [] => detail["sha256"] = json!(crate::xattr::EMPTY_SHA256_HEX),
                [one] => detail["sha256"] = json!(hex(&one.content.sha256)),
                _ => {}
            }
            let seq = journal::append(txn, t, op, &detail)?;
            for old in &removed {
                txn.add_garbage(&old.content.object, seq)?;
                txn.dequeue_recompress(&old.content.object)?;
            }
            if queue {
                for id in &made {
                    txn.queue_recompress(id, ino, t)?;
                }
            }
            Ok(())
        });
        if result.is_err() {
            for id in &made {
                let _ = self.objects.delete(id);
            }
            return result;
        }
        Stats::add(&self.stats.writes_committed, 1);
        Stats::add(&self.stats.extents_written, made.len() as u64);
        Stats::add(&self.stats.bytes_written, new.iter().filter(|n| n.made).map(|n| n.extent.len).sum());
        self.last_commit.store(now(), Ordering::Relaxed);
        if queue && !made.is_empty() {
            self.work_queued();
        }
        self.invalidate(ino);
        Ok(())
    }

    /// `truncate`: on a file being written, applied to its staging area
    /// (committed at close); otherwise committed at once, re-encoding at
    /// most the extent it cuts.
    pub(crate) fn truncate(&self, ino: Ino, size: u64) -> VResult<()> {
        self.writable()?;
        let inode = self.regular_file(ino)?;
        let state = lock(&self.files).get(&ino).cloned();
        if let Some(state) = &state {
            let mut w = lock(&state.writers);
            if let Some(staging) = w.staging.as_mut() {
                staging.set_len(size)?;
                state.set_staged(Some(staging))?;
                return Ok(());
            }
        }
        let committed = Committed { extents: inode.extents, size: inode.size };
        let mut staging = self.new_staging(&committed, false);
        staging.set_len(size)?;
        let gate = self.write_gate.as_ref().unwrap_or(&self.gate);
        let extents = self.encode_changes(ino, &staging, gate)?;
        self.swap_extents(ino, extents, size, staging.mtime, "truncate", self.write_gate.is_some())?;
        if let Some(state) = state {
            self.committed_now(ino, &state)?;
        }
        Ok(())
    }
}

/// An extent of a commit's new map, and whether its object is new.
struct NewExtent {
    extent: Extent,
    made: bool,
}

/// Reads bytes `[at, end)` of a committed file, in order.
struct ExtentsReader<'a> {
    volume: &'a Volume,
    ino: Ino,
    extents: &'a [Extent],
    at: u64,
    end: u64,
}

impl Read for ExtentsReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (buf.len() as u64).min(self.end - self.at).min(1 << 20) as usize;
        if want == 0 {
            return Ok(0);
        }
        let mut data = Vec::with_capacity(want);
        self.volume.read_extents(self.ino, self.extents, self.at, self.at + want as u64, &mut data).map_err(io::Error::other)?;
        buf.get_mut(..want).unwrap_or_default().copy_from_slice(data.get(..want).unwrap_or_default());
        self.at += want as u64;
        Ok(want)
    }
}

/// Reads bytes `[at, end)` of a file being written, in order (for the
/// gate).
struct StagedReader<'a> {
    volume: &'a Volume,
    ino: Ino,
    staging: &'a Staging,
    at: u64,
    end: u64,
}

impl Read for StagedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (buf.len() as u64).min(self.end - self.at).min(1 << 20);
        if want == 0 {
            return Ok(0);
        }
        let data = self.volume.read_staged(self.ino, self.staging, self.at, want).map_err(io::Error::other)?;
        let n = data.len().min(buf.len());
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the staged file ended early"));
        }
        buf.get_mut(..n).unwrap_or_default().copy_from_slice(data.get(..n).unwrap_or_default());
        self.at += n as u64;
        Ok(n)
    }
}
