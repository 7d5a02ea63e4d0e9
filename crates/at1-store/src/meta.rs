//! The metadata engine's interface. Every change happens inside a
//! [`MetaTxn`], committed whole or not at all; the volume makes each
//! filesystem operation one transaction. Reads outside a transaction see
//! what is committed.

use thiserror::Error;

use crate::objects::ObjectId;

/// An inode number. The root directory is [`ROOT_INO`].
pub type Ino = u64;
pub const ROOT_INO: Ino = 1;

/// Nanoseconds since 1970-01-01T00:00:00Z.
pub type Nanos = i64;

/// What an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl Kind {
    /// The code stored for the kind.
    pub fn code(self) -> i64 {
        match self {
            Kind::File => 1,
            Kind::Dir => 2,
            Kind::Symlink => 3,
            Kind::Fifo => 4,
            Kind::Socket => 5,
            Kind::CharDevice => 6,
            Kind::BlockDevice => 7,
        }
    }

    pub fn from_code(code: i64) -> Option<Kind> {
        Some(match code {
            1 => Kind::File,
            2 => Kind::Dir,
            3 => Kind::Symlink,
            4 => Kind::Fifo,
            5 => Kind::Socket,
            6 => Kind::CharDevice,
            7 => Kind::BlockDevice,
            _ => return None,
        })
    }

    /// The kind a `st_mode` names (its `S_IFMT` bits).
    pub fn from_mode(mode: u32) -> Option<Kind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::CharDevice,
            libc::S_IFBLK => Kind::BlockDevice,
            _ => return None,
        })
    }

    /// The `S_IFMT` bits of the kind.
    pub fn mode_type(self) -> u32 {
        match self {
            Kind::File => libc::S_IFREG,
            Kind::Dir => libc::S_IFDIR,
            Kind::Symlink => libc::S_IFLNK,
            Kind::Fifo => libc::S_IFIFO,
            Kind::Socket => libc::S_IFSOCK,
            Kind::CharDevice => libc::S_IFCHR,
            Kind::BlockDevice => libc::S_IFBLK,
        }
    }
}

/// A regular file's committed content: an object, and what the object must
/// decode to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub object: ObjectId,
    /// Bytes of the object as stored.
    pub stored_len: u64,
    /// SHA-256 of the original bytes.
    pub sha256: [u8; 32],
}

/// One extent of a regular file's content: bytes `[start, start + len)`
/// of the file are the original bytes of one whole object (`content`).
/// A file's extents are in order, adjacent, and cover `[0, size)`; each
/// object is immutable and verified on its own, so a write re-encodes only
/// the extents it touches. (Not to be confused with the *segments* inside
/// one `.at1` object, docs/FORMAT.md: an extent's object has its own.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    pub start: u64,
    pub len: u64,
    pub content: Content,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// One inode's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub ino: Ino,
    pub kind: Kind,
    /// Permission, set-id and sticky bits (no file type bits).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    /// Bytes of the original content (regular files), of the target
    /// (symlinks); 0 otherwise.
    pub size: u64,
    pub atime: Nanos,
    pub mtime: Nanos,
    pub ctime: Nanos,
    pub nlink: u32,
    pub rdev: u32,
    /// The directory a directory is in (its `..`); 0 for other kinds and
    /// for the root.
    pub parent: Ino,
    /// A regular file's committed content, in order (empty when the file
    /// is).
    pub extents: Vec<Extent>,
}

impl Inode {
    /// Bytes its objects take as stored.
    pub fn stored_len(&self) -> u64 {
        self.extents.iter().map(|e| e.content.stored_len).sum()
    }
}

/// A directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: Ino,
    pub kind: Kind,
}

/// One event of the journal: a committed change, chained to the one before
/// by its hash (the chain's rule belongs to the volume).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    pub time: Nanos,
    pub op: String,
    /// JSON: the inode, the path(s), the new content's SHA-256...
    pub detail: String,
    pub hash: [u8; 32],
}

/// Counts over the whole namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub inodes: u64,
    pub files_with_content: u64,
    /// Sum of regular files' original sizes.
    pub original_bytes: u64,
    /// Sum of their objects' stored sizes.
    pub stored_bytes: u64,
    /// Contents waiting to be re-encoded at the volume's own levels.
    pub recompress_pending: u64,
}

#[derive(Debug, Error)]
pub enum MetaError {
    /// A name that must be new is taken (the caller maps it to EEXIST).
    #[error("the name exists")]
    Exists,
    /// The engine failed (I/O, a locked or damaged database).
    #[error("metadata engine: {0}")]
    Engine(String),
    /// Stored metadata breaks a rule (an unknown kind code, a bad id).
    #[error("metadata is inconsistent: {0}")]
    Corrupt(String),
}

/// Reads of the metadata.
pub trait MetaRead {
    fn inode(&self, ino: Ino) -> Result<Option<Inode>, MetaError>;
    /// The inode that `name` in directory `parent` names.
    fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Option<Ino>, MetaError>;
    /// Entries of `dir` in name order (bytewise), after `after`, at most
    /// `limit`.
    fn entries(&self, dir: Ino, after: Option<&[u8]>, limit: usize) -> Result<Vec<DirEntry>, MetaError>;
    fn has_entries(&self, dir: Ino) -> Result<bool, MetaError>;
    /// One name of `ino`, as (parent, name), if it has any.
    fn a_name_of(&self, ino: Ino) -> Result<Option<(Ino, Vec<u8>)>, MetaError>;
    fn symlink_target(&self, ino: Ino) -> Result<Option<Vec<u8>>, MetaError>;
    fn xattr(&self, ino: Ino, name: &[u8]) -> Result<Option<Vec<u8>>, MetaError>;
    fn xattr_names(&self, ino: Ino) -> Result<Vec<Vec<u8>>, MetaError>;
    /// Inodes without a name that were still open (collected at mount).
    fn orphans(&self) -> Result<Vec<Ino>, MetaError>;
    /// Objects no inode refers to any more, with the journal sequence
    /// number of the change that released each.
    fn garbage(&self) -> Result<Vec<(ObjectId, u64)>, MetaError>;
    /// Journal events from sequence number `from`, at most `limit`.
    fn events(&self, from: u64, limit: usize) -> Result<Vec<Event>, MetaError>;
    fn last_event(&self) -> Result<Option<Event>, MetaError>;
    /// Regular files with content and their extents, by inode number after
    /// `after`, at most `limit` files.
    fn contents(&self, after: Ino, limit: usize) -> Result<Vec<(Ino, Vec<Extent>)>, MetaError>;
    fn totals(&self) -> Result<Totals, MetaError>;
    /// Contents committed at a fast level, waiting to be re-encoded at the
    /// volume's own: (object, inode), oldest first, at most `limit`.
    fn recompress_queue(&self, limit: usize) -> Result<Vec<(ObjectId, Ino)>, MetaError>;
    fn setting(&self, key: &str) -> Result<Option<String>, MetaError>;
    /// Every inode, by number after `after`, at most `limit` (a check
    /// walks the whole namespace).
    fn inodes(&self, after: Ino, limit: usize) -> Result<Vec<Inode>, MetaError>;
    /// How many entries name `ino`.
    fn names_count(&self, ino: Ino) -> Result<u64, MetaError>;
    /// How many entries of `dir` name directories.
    fn subdir_count(&self, dir: Ino) -> Result<u64, MetaError>;
    /// Every entry as (parent, name, ino) — whether or not its inode
    /// exists — in (parent, name) order after `after`, at most `limit`.
    fn all_entries(&self, after: Option<(Ino, &[u8])>, limit: usize) -> Result<Vec<(Ino, Vec<u8>, Ino)>, MetaError>;
    /// An inode whose content includes object `id`, if any.
    fn object_user(&self, id: &ObjectId) -> Result<Option<Ino>, MetaError>;
}

/// A read-write transaction. Dropped without [`MetaTxn::commit`], it is
/// rolled back.
pub trait MetaTxn: MetaRead {
    /// Adds an inode (its `ino` is ignored) and returns its number.
    fn create_inode(&mut self, inode: &Inode) -> Result<Ino, MetaError>;
    /// Updates an inode's attributes and, if they changed, its extents.
    fn update_inode(&mut self, inode: &Inode) -> Result<(), MetaError>;
    /// Removes an inode with its extents, symlink target and xattrs.
    fn delete_inode(&mut self, ino: Ino) -> Result<(), MetaError>;
    /// Adds `name` in `parent`; [`MetaError::Exists`] if it is taken.
    fn insert_entry(&mut self, parent: Ino, name: &[u8], ino: Ino) -> Result<(), MetaError>;
    fn delete_entry(&mut self, parent: Ino, name: &[u8]) -> Result<(), MetaError>;
    fn set_symlink_target(&mut self, ino: Ino, target: &[u8]) -> Result<(), MetaError>;
    fn set_xattr(&mut self, ino: Ino, name: &[u8], value: &[u8]) -> Result<(), MetaError>;
    /// Whether there was one to remove.
    fn remove_xattr(&mut self, ino: Ino, name: &[u8]) -> Result<bool, MetaError>;
    fn add_orphan(&mut self, ino: Ino) -> Result<(), MetaError>;
    fn remove_orphan(&mut self, ino: Ino) -> Result<(), MetaError>;
    fn add_garbage(&mut self, object: &ObjectId, released_at: u64) -> Result<(), MetaError>;
    fn remove_garbage(&mut self, object: &ObjectId) -> Result<(), MetaError>;
    fn queue_recompress(&mut self, object: &ObjectId, ino: Ino, at: Nanos) -> Result<(), MetaError>;
    fn dequeue_recompress(&mut self, object: &ObjectId) -> Result<(), MetaError>;
    fn append_event(&mut self, event: &Event) -> Result<(), MetaError>;
    fn set_setting(&mut self, key: &str, value: &str) -> Result<(), MetaError>;
    fn commit(self: Box<Self>) -> Result<(), MetaError>;
}

/// A metadata engine.
pub trait MetaStore: Send + Sync {
    /// Reads of what is committed.
    fn read(&self) -> Result<Box<dyn MetaRead + '_>, MetaError>;
    /// A read-write transaction (one at a time).
    fn write(&self) -> Result<Box<dyn MetaTxn + '_>, MetaError>;
    /// Makes every committed transaction durable.
    fn sync(&self) -> Result<(), MetaError>;
}
