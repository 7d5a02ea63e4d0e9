//! The bytes of a file being written, until its commit: in memory while
//! small — most files a tree copy or an editor writes are — and in an
//! unnamed file of the store's `staging/` beyond that. A file made and
//! deleted for every small write costs the host filesystem an inode each
//! time (and ext4 slows down finding free inodes among many recently
//! deleted ones); memory costs nothing of the kind. Memory held this way is
//! bounded per file and for the whole volume: past either bound the bytes
//! move to disk.

use std::fs::File;
use std::io::{self, Cursor, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes one file may stage in memory.
const FILE_IN_MEMORY: u64 = 1 << 20;
/// Bytes all files together may stage in memory.
pub const VOLUME_IN_MEMORY: u64 = 64 << 20;

/// Memory staged by a volume's open files.
#[derive(Debug, Default)]
pub struct StagingMemory {
    used: AtomicU64,
}

impl StagingMemory {
    /// Takes `n` more bytes if that stays within the volume's bound.
    fn take(&self, n: u64) -> bool {
        self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_add(n).filter(|&t| t <= VOLUME_IN_MEMORY)).is_ok()
    }

    fn give(&self, n: u64) {
        let _ = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| Some(u.saturating_sub(n)));
    }
}

#[derive(Debug)]
enum Data {
    /// The bytes, and how many of the volume's memory bytes they hold.
    Memory {
        bytes: Vec<u8>,
        held: u64,
    },
    Disk(File),
}

/// A staging area: random-access bytes that start empty.
#[derive(Debug)]
pub struct StagingBytes {
    data: Data,
    dir: Arc<PathBuf>,
    memory: Arc<StagingMemory>,
}

impl Drop for StagingBytes {
    fn drop(&mut self) {
        if let Data::Memory { held, .. } = self.data {
            self.memory.give(held);
        }
    }
}

fn end_of(offset: u64, len: usize) -> io::Result<u64> {
    offset.checked_add(len as u64).ok_or_else(|| io::Error::from_raw_os_error(libc::EFBIG))
}

impl StagingBytes {
    /// Empty bytes, spilling to files in `dir`.
    pub fn new(dir: Arc<PathBuf>, memory: Arc<StagingMemory>) -> StagingBytes {
        StagingBytes { data: Data::Memory { bytes: Vec::new(), held: 0 }, dir, memory }
    }

    pub fn len(&self) -> io::Result<u64> {
        match &self.data {
            Data::Memory { bytes, .. } => Ok(bytes.len() as u64),
            Data::Disk(f) => Ok(f.metadata()?.len()),
        }
    }

    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Makes room for `len` bytes in memory, or moves the bytes to disk.
    /// Whether they are (still) in memory.
    fn room_for(&mut self, len: u64) -> io::Result<bool> {
        let Data::Memory { bytes, held } = &mut self.data else { return Ok(false) };
        if len <= *held {
            return Ok(true);
        }
        if len <= FILE_IN_MEMORY {
            // Grow by doubling (within the file's bound) so a run of small
            // writes does not take from the budget each time.
            let want = len.max(*held * 2).clamp(64 << 10, FILE_IN_MEMORY);
            if self.memory.take(want - *held) {
                *held = want;
                return Ok(true);
            }
        }
        let mut file = tempfile::tempfile_in(&*self.dir)?;
        io::Write::write_all(&mut file, bytes)?;
        let held = *held;
        self.data = Data::Disk(file);
        self.memory.give(held);
        Ok(false)
    }

    pub fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        let end = end_of(offset, data.len())?;
        if self.room_for(end.max(self.len()?))? {
            if let Data::Memory { bytes, .. } = &mut self.data {
                let (start, end) = (offset as usize, end as usize);
                if bytes.len() < end {
                    bytes.resize(end, 0);
                }
                if let Some(dst) = bytes.get_mut(start..end) {
                    dst.copy_from_slice(data);
                }
                return Ok(());
            }
        }
        match &self.data {
            Data::Disk(f) => f.write_all_at(data, offset),
            Data::Memory { .. } => Err(io::Error::other("staging bytes lost their place")),
        }
    }

    /// Up to `size` bytes from `offset` (fewer at the end).
    pub fn read_at(&self, offset: u64, size: u32) -> io::Result<Vec<u8>> {
        match &self.data {
            Data::Memory { bytes, .. } => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
                let end = start.saturating_add(size as usize).min(bytes.len());
                Ok(bytes.get(start..end).unwrap_or_default().to_vec())
            }
            Data::Disk(f) => {
                let mut buf = vec![0u8; size as usize];
                let mut done = 0;
                while done < buf.len() {
                    match f.read_at(buf.get_mut(done..).unwrap_or_default(), offset + done as u64) {
                        Ok(0) => break,
                        Ok(n) => done += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                buf.truncate(done);
                Ok(buf)
            }
        }
    }

    pub fn set_len(&mut self, len: u64) -> io::Result<()> {
        if self.room_for(len)? {
            if let Data::Memory { bytes, .. } = &mut self.data {
                bytes.resize(len as usize, 0);
                return Ok(());
            }
        }
        match &self.data {
            Data::Disk(f) => f.set_len(len),
            Data::Memory { .. } => Err(io::Error::other("staging bytes lost their place")),
        }
    }

    /// `fallocate(2)` with `mode`: on disk (the modes are the host
    /// filesystem's).
    pub fn fallocate(&mut self, mode: i32, offset: u64, length: u64) -> io::Result<()> {
        if let Data::Memory { bytes, held } = &self.data {
            let mut file = tempfile::tempfile_in(&*self.dir)?;
            io::Write::write_all(&mut file, bytes)?;
            let held = *held;
            self.data = Data::Disk(file);
            self.memory.give(held);
        }
        let Data::Disk(f) = &self.data else { return Err(io::Error::other("staging bytes lost their place")) };
        // SAFETY: a valid descriptor of a file we own.
        if unsafe { libc::fallocate(f.as_raw_fd(), mode, offset as i64, length as i64) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads the bytes from their start (for the gate).
    pub fn reader(&self) -> io::Result<Box<dyn Read + Send + '_>> {
        Ok(match &self.data {
            Data::Memory { bytes, .. } => Box::new(Cursor::new(bytes.as_slice())),
            Data::Disk(f) => Box::new(FileFromStart { file: f, pos: 0, len: f.metadata()?.len() }),
        })
    }
}

/// Positioned reads of a file from its start (writers' offsets untouched).
struct FileFromStart<'a> {
    file: &'a File,
    pos: u64,
    len: u64,
}

impl Read for FileFromStart<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min((self.len - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(buf.get_mut(..want).unwrap_or_default(), self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Write for StagingBytes {
    /// Appends (filling a new staging area from a decoded content).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let at = self.len()?;
        self.write_at(buf, at)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staging(dir: &tempfile::TempDir, memory: &Arc<StagingMemory>) -> StagingBytes {
        StagingBytes::new(Arc::new(dir.path().to_path_buf()), memory.clone())
    }

    fn disk_files(dir: &tempfile::TempDir) -> usize {
        // Unnamed files leave no name; count open descriptors instead by
        // checking the kind of data.
        std::fs::read_dir(dir.path()).unwrap().count()
    }

    #[test]
    fn small_files_stay_in_memory_and_big_ones_move_to_disk_whole() {
        let dir = tempfile::tempdir().unwrap();
        let memory = Arc::new(StagingMemory::default());
        let mut s = staging(&dir, &memory);
        s.write_at(b"hello", 0).unwrap();
        s.write_at(b"!", 10).unwrap();
        assert_eq!(s.read_at(0, 100).unwrap(), b"hello\0\0\0\0\0!");
        assert!(matches!(s.data, Data::Memory { .. }));
        let big = vec![7u8; (FILE_IN_MEMORY + 10) as usize];
        s.write_at(&big, 20).unwrap();
        assert!(matches!(s.data, Data::Disk(_)), "past the file's bound: on disk");
        assert_eq!(memory.used.load(Ordering::Acquire), 0, "its memory given back");
        assert_eq!(&s.read_at(0, 11).unwrap(), b"hello\0\0\0\0\0!");
        assert_eq!(s.len().unwrap(), 20 + big.len() as u64);
        let mut all = Vec::new();
        s.reader().unwrap().read_to_end(&mut all).unwrap();
        assert_eq!(all.len() as u64, s.len().unwrap());
        assert_eq!(disk_files(&dir), 0, "unnamed");
    }

    #[test]
    fn the_volume_bound_holds_across_files_and_comes_back_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let memory = Arc::new(StagingMemory::default());
        let mut files: Vec<StagingBytes> = (0..(VOLUME_IN_MEMORY / FILE_IN_MEMORY + 8)).map(|_| staging(&dir, &memory)).collect();
        for f in &mut files {
            f.set_len(FILE_IN_MEMORY).unwrap();
        }
        assert!(memory.used.load(Ordering::Acquire) <= VOLUME_IN_MEMORY);
        assert!(files.iter().any(|f| matches!(f.data, Data::Disk(_))), "the last ones went to disk");
        drop(files);
        assert_eq!(memory.used.load(Ordering::Acquire), 0);
    }
}
