//! The object store's interface: immutable `.at1` objects addressed by id.
//!
//! The contract is what an S3-compatible bucket gives (the `object_store`
//! crate's semantics): a new object is written whole and appears at once
//! (put-if-absent: an id is never reused or overwritten), is read by byte
//! ranges, and is deleted; nothing relies on mmap, hard links (`put_link`
//! is a shortcut a store may refuse), rename-over or appending. Durability
//! of puts may lag until [`ObjectStore::sync`].

use std::fmt;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use at1_core::source::RangeRead;

/// An object's id: 128 random bits, shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; 16]);

impl ObjectId {
    /// A new random id.
    pub fn random() -> io::Result<ObjectId> {
        let mut bytes = [0u8; 16];
        let mut filled = 0;
        while filled < bytes.len() {
            let rest = &mut bytes[filled..];
            // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`.
            let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            filled += n as usize;
        }
        Ok(ObjectId(bytes))
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 32 lowercase hex digits.
    pub fn parse_hex(text: &str) -> Option<ObjectId> {
        let b = text.as_bytes();
        if b.len() != 32 || !b.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)) {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let digit = |c: u8| if c.is_ascii_digit() { c - b'0' } else { c - b'a' + 10 };
            if let (Some(slot), [hi, lo]) = (out.get_mut(i), pair) {
                *slot = digit(*hi) << 4 | digit(*lo);
            }
        }
        Some(ObjectId(out))
    }

    pub fn from_slice(bytes: &[u8]) -> Option<ObjectId> {
        Some(ObjectId(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.hex())
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// A new object being written: a local file that [`ObjectStore::put`]
/// publishes. Dropped unpublished, it is removed.
#[derive(Debug)]
pub struct TempObject {
    pub file: File,
    pub(crate) path: PathBuf,
    pub(crate) published: bool,
}

impl Drop for TempObject {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// An object store.
pub trait ObjectStore: Send + Sync {
    /// A local file to write a new object into.
    fn create_temp(&self) -> io::Result<TempObject>;
    /// Publishes `temp` as object `id`: readable at once, durable after
    /// the next [`ObjectStore::sync`]. Fails with `AlreadyExists` if `id`
    /// exists.
    fn put(&self, id: &ObjectId, temp: TempObject) -> io::Result<()>;
    /// Publishes the existing, finished object file `source` as object
    /// `id` without copying it (a hard link), where the store can: the
    /// caller guarantees nothing will change the file in place. Fails with
    /// `Unsupported` (or the link's error, as `CrossesDevices`) where it
    /// cannot, and the caller copies instead; `AlreadyExists` as `put`.
    fn put_link(&self, id: &ObjectId, source: &std::path::Path) -> io::Result<()> {
        let _ = (id, source);
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Opens object `id` for ranged reads (`NotFound` if there is none).
    fn open(&self, id: &ObjectId) -> io::Result<Arc<dyn RangeRead>>;
    /// The stored length of object `id`.
    fn len(&self, id: &ObjectId) -> io::Result<u64>;
    /// Removes object `id` (no error if it is already gone).
    fn delete(&self, id: &ObjectId) -> io::Result<()>;
    /// Every object's id.
    fn list(&self) -> io::Result<Vec<ObjectId>>;
    /// Moves object `id` aside (kept, but no longer an object); returns
    /// where it went.
    fn quarantine(&self, id: &ObjectId) -> io::Result<String>;
    /// Makes every object put so far durable.
    fn sync(&self) -> io::Result<()>;
}
