//! Write fast, compress hard later.
//!
//! Encoding at zstd's strongest levels costs far more than everything else
//! a write does (level 19 runs at a few MB/s): paid at every `close`, it
//! would make a tree copy ten times slower than the disk. So a close
//! commits through the gate at zstd's fast level (verified like any
//! commit), and queues the content; this worker re-encodes queued content
//! at the volume's own levels when the volume is quiet, through the gate
//! again, and swaps it in only if the file still holds the content it
//! started from. The bytes never change — only how they are stored — so
//! nothing a reader sees moves, and the journal records each swap.
//!
//! The worker runs at the lowest CPU priority, waits while commits are
//! arriving, and stops between files when the volume closes (a close does
//! not wait for an encode in progress: nothing is swapped in after it
//! began, and the encode is abandoned); the queue is
//! in the metadata engine, so work left at unmount resumes at the next
//! mount.

use std::io::{self, Read, Seek};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use at1_core::reader::Reader;
use at1_store::{Content, Ino, ObjectId};
use serde_json::json;

use crate::error::{VResult, VolumeError};
use crate::journal;
use crate::stats::Stats;
use crate::volume::{content_json, lock, now, path_in, Volume};

/// How long the volume must have been without commits before the worker
/// takes the next file.
const QUIET: Duration = Duration::from_millis(500);
/// Queue entries fetched at a time.
const BATCH: usize = 16;

/// A reader that fails once the volume is closing, so a long encode stops.
/// Its error is not `Interrupted`: readers retry that kind (EINTR), and
/// the gate's chunker would spin on it for ever.
struct Cancellable<'a, R> {
    inner: R,
    volume: &'a Volume,
}

impl<R: Read> Read for Cancellable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.volume.stopping() {
            return Err(io::Error::other("the volume is closing"));
        }
        self.inner.read(buf)
    }
}

/// Lowers the calling thread's CPU priority to the least.
fn lowest_priority() {
    // SAFETY: gettid and setpriority on this thread only.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

impl Volume {
    /// Starts the worker (when commits are made at a fast level).
    pub(crate) fn start_recompressor(self: &Arc<Self>) {
        if self.write_gate.is_none() {
            return;
        }
        let weak = Arc::downgrade(self);
        let work = Arc::clone(&self.work);
        let thread = std::thread::Builder::new().name("at1-recompress".into()).spawn(move || {
            lowest_priority();
            loop {
                let worked = {
                    let Some(volume) = weak.upgrade() else { return };
                    if volume.stopping() {
                        return;
                    }
                    volume.recompress_some().unwrap_or_else(|e| {
                        log::warn!("background re-encoding: {e}");
                        false
                    })
                };
                // Waits holding no reference to the volume: one dropped
                // without `close` goes at once (its drop wakes this wait).
                if !worked {
                    work.wait(Duration::from_secs(2));
                }
            }
        });
        match thread {
            Ok(t) => *lock(&self.recompressor) = Some(t),
            Err(e) => log::error!("cannot start the re-encoding worker ({e}): contents stay at the fast level"),
        }
    }

    /// Re-encodes the oldest queued contents while the volume is quiet.
    /// Whether anything was done.
    fn recompress_some(&self) -> VResult<bool> {
        let queue = self.meta.read()?.recompress_queue(BATCH)?;
        if queue.is_empty() {
            return Ok(false);
        }
        let mut worked = false;
        for (object, ino) in queue {
            if self.stopping() {
                break;
            }
            while now() - self.last_commit.load(Ordering::Relaxed) < QUIET.as_nanos() as i64 {
                if self.stopping() {
                    return Ok(worked);
                }
                std::thread::sleep(QUIET / 4);
            }
            match self.recompress_one(&object, ino) {
                Ok(did) => worked |= did,
                Err(VolumeError::Damaged { path, what }) => {
                    // Reads of it fail anyway; nothing to re-encode.
                    log::error!("{path}: not re-encoded, its content cannot be read: {what}");
                    self.dequeue(&object)?;
                }
                Err(e) if self.stopping() => return Err(e),
                Err(e) => {
                    log::warn!("re-encoding {}: {e}; will retry", self.path_of(ino));
                    return Ok(worked);
                }
            }
        }
        Ok(worked)
    }

    fn dequeue(&self, object: &ObjectId) -> VResult<()> {
        let mut txn = self.meta.write()?;
        txn.dequeue_recompress(object)?;
        txn.commit()?;
        Ok(())
    }

    /// Re-encodes the extent of file `ino` that is `object`, if it still
    /// is and no one is writing the file. Whether it was swapped.
    fn recompress_one(&self, object: &ObjectId, ino: Ino) -> VResult<bool> {
        let current = self.meta.read()?.inode(ino)?.map(|i| i.extents).unwrap_or_default();
        let Some(content) = current.into_iter().map(|e| e.content).find(|c| c.object == *object) else {
            self.dequeue(object)?;
            return Ok(false);
        };
        if self.has_writers(ino) {
            return Ok(false); // its commit queues the new content
        }
        let source = self.object_of(ino, &content)?;
        let len = source.original_len();
        let mut text = tempfile::tempfile_in(&*self.staging_dir)?;
        {
            let mut out = io::BufWriter::with_capacity(1 << 20, &mut text);
            Reader::new(source, None).extract(&mut out, |_| {}).map_err(|e| self.damaged(ino, e))?;
            io::Write::flush(&mut out)?;
        }
        text.rewind()?;
        let input = Cancellable { inner: io::BufReader::with_capacity(1 << 20, text), volume: self };
        let Some(new) = self.encode_reader(ino, input, len, &self.gate)? else { return Ok(false) };
        self.swap_recompressed(ino, &content, new)
    }

    /// Swaps `old` for `new` as the object of an extent of file `ino`, if
    /// it still holds `old`.
    fn swap_recompressed(&self, ino: Ino, old: &Content, new: Content) -> VResult<bool> {
        let swapped = self.change(|txn, t| {
            if self.stopping() {
                // The close's last sync may be done: leave the queue as it is.
                return Ok(false);
            }
            txn.dequeue_recompress(&old.object)?;
            let Some(mut inode) = txn.inode(ino)? else { return Ok(false) };
            let Some(extent) = inode.extents.iter_mut().find(|e| e.content == *old) else { return Ok(false) };
            extent.content = new.clone();
            let start = extent.start;
            txn.update_inode(&inode)?;
            let detail = json!({"ino": ino, "path": path_in(txn, ino), "start": start, "content": content_json(&new), "old": content_json(old)});
            let seq = journal::append(txn, t, "recompress", &detail)?;
            txn.add_garbage(&old.object, seq)?;
            Ok(true)
        });
        match swapped {
            Ok(true) => {
                if let Some(state) = lock(&self.files).get(&ino) {
                    state.recompressed(old, &new);
                }
                Stats::add(&self.stats.recompressed, 1);
                Stats::add(&self.stats.recompress_saved_bytes, old.stored_len.saturating_sub(new.stored_len));
                Ok(true)
            }
            other => {
                let _ = self.objects.delete(&new.object);
                other
            }
        }
    }
}
