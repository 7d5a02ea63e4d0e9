//! Where an object's bytes come from: anything that reads a byte range —
//! a local file (positioned reads, no mmap), a buffer in memory, or later
//! an object store's ranged GET. The reader asks for the header, the
//! trailer, the footer, then only the blocks a read touches; nothing holds
//! the whole object, so memory does not grow with the object's size.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Ranged reads of an immutable object.
pub trait RangeRead: Send + Sync {
    /// The object's length in bytes.
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` from `offset`; an object shorter than that is an error
    /// (`UnexpectedEof`).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// `len` bytes from `offset`.
    fn read_range(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

/// A local file, read with `pread`.
#[derive(Debug)]
pub struct FileRange {
    file: File,
    len: u64,
}

impl FileRange {
    pub fn new(file: File) -> io::Result<FileRange> {
        let len = file.metadata()?.len();
        Ok(FileRange { file, len })
    }
}

impl RangeRead for FileRange {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
}

impl RangeRead for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let src = start.checked_add(buf.len()).and_then(|end| self.get(start..end)).ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_and_files_read_ranges_and_refuse_past_the_end() {
        let v = b"0123456789".to_vec();
        assert_eq!(v.read_range(3, 4).unwrap(), b"3456");
        assert_eq!(v.read_range(8, 4).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, b"abcdef").unwrap();
        let r = FileRange::new(f).unwrap();
        assert_eq!(r.len(), 6);
        assert_eq!(r.read_range(2, 3).unwrap(), b"cde");
        assert!(r.read_range(5, 2).is_err());
    }
}
